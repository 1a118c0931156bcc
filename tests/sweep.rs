//! `perplex sweep` on the shipped checkpoint family (models/family): a killed sweep resumes to
//! the same results without duplicates, changed files invalidate only their own units, shards
//! merged equal an unsharded sweep, and the emergence threshold is recovered from synthetic data
//! with a known threshold.

mod common;

use common::cli::{assert_success, perplex_command, Scratch};
use common::repo;
use common::sweep::{agreement_task, assert_each_unit_once, comparable, four_checkpoints, line_units, small_text};
use perplex::gpu::Sums;
use perplex::sweep::{self, analysis, report, ResultsFile, Shard, SweepOptions, TaskArg, UnitRecord};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The sweep command over `four_checkpoints()`.
fn sweep_command(out: &Path) -> Command {
    common::sweep::sweep_command(four_checkpoints(), out)
}

fn succeed(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert_success(&output);
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_killed_sweep_resumes_to_identical_results_without_duplicates() {
    let scratch = Scratch::new("sweep-resume");
    let dir = &scratch.path;
    let units = four_checkpoints().len() * 2;
    let full = dir.join("full.jsonl");
    let out = stdout(&succeed(&mut sweep_command(&full)));
    assert!(out.contains(&format!("{units} units measured, 0 already")), "{out}");
    let reference = comparable(&sweep::read_results(&full).unwrap());
    assert_eq!(reference.len(), units);

    // 1. Killed for real (SIGKILL) once two units are on disk, mid-way through the third.
    let killed = dir.join("killed.jsonl");
    let mut child = sweep_command(&killed).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&killed).map_or(0, |t| t.lines().count()) < 2 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = line_units(&killed).len();
    assert!(kept >= 2, "the sweep wrote {kept} units before it was killed");
    // 2. And a line cut short, as a crash in the middle of a write leaves it.
    let mut cut = std::fs::read(&killed).unwrap();
    cut.extend_from_slice(br#"{"checkpoint":"models/family/0.9M/step500","revision":nu"#);
    std::fs::write(&killed, cut).unwrap();
    let out = stdout(&succeed(&mut sweep_command(&killed)));
    assert!(out.contains(&format!("{} units measured, {kept} already", units - kept)), "{out}");
    assert_each_unit_once(&killed, units);
    assert_eq!(comparable(&sweep::read_results(&killed).unwrap()), reference);

    // 3. A results file pre-populated with the first three units of the full run.
    let partial = dir.join("partial.jsonl");
    let text = std::fs::read_to_string(&full).unwrap();
    std::fs::write(&partial, text.lines().take(3).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = stdout(&succeed(&mut sweep_command(&partial)));
    assert!(out.contains(&format!("{} units measured, 3 already", units - 3)), "{out}");
    assert_each_unit_once(&partial, units);
    assert_eq!(comparable(&sweep::read_results(&partial).unwrap()), reference);

    // A finished sweep run again measures nothing.
    let out = stdout(&succeed(&mut sweep_command(&full)));
    assert!(out.contains(&format!("0 units measured, {units} already")), "{out}");
}

#[test]
fn a_sweep_with_compensated_sums_measures_again_what_plain_sums_measured() {
    let scratch = Scratch::new("sweep-sums");
    let out = scratch.path.join("results.jsonl");
    let units = four_checkpoints().len() * 2;
    succeed(&mut sweep_command(&out));
    let plain = sweep::read_results(&out).unwrap();
    let compensated_sweep = || stdout(&succeed(sweep_command(&out).args(["--sums", "compensated"])));
    let first = compensated_sweep();
    assert!(first.contains(&format!("{units} units measured, 0 already")), "results of plain sums are not reused: {first}");
    let again = compensated_sweep();
    assert!(again.contains(&format!("0 units measured, {units} already")), "{again}");
    assert_each_unit_once(&out, units);
    let compensated = sweep::read_results(&out).unwrap();
    // The losses: the same measurement in other rounding. (A task's accuracy could flip on a tie.)
    for p in plain.iter().filter(|p| p.measurement.starts_with("text:")) {
        let c = compensated.iter().find(|c| c.key() == p.key()).unwrap();
        assert_eq!(c.model_hash, p.model_hash);
        assert_ne!(c.measurement_hash, p.measurement_hash, "{:?}", p.key());
        for (name, metric) in &p.metrics {
            let other = c.metrics[name].value;
            assert!((other - metric.value).abs() <= 1e-4 * metric.value.abs().max(1e-3), "{:?} {name}: plain {} compensated {other}", p.key(), metric.value);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn changed_files_invalidate_only_their_own_units() {
    let scratch = Scratch::new("sweep-invalidate");
    let dir = &scratch.path;
    for step in ["step30", "step500"] {
        copy_dir(&repo().join("models/family/0.2M").join(step), &dir.join("run").join(step));
    }
    let data = dir.join("valid.txt");
    std::fs::copy(small_text(), &data).unwrap();
    let options = SweepOptions { ctx: Some(64), batch: 8.into(), field: "text".into(), sums: Sums::Plain };
    let results_path = dir.join("results.jsonl");
    let sweep_once = || {
        let checkpoints = sweep::discover(&[format!("{}/run/step*", dir.display())], &[]).unwrap();
        assert_eq!(checkpoints.iter().map(|c| c.step).collect::<Vec<_>>(), [Some(30), Some(500)]);
        let tasks = [TaskArg::parse(&agreement_task().display().to_string(), Some(0), Some(20), None).unwrap()];
        let measurements = sweep::measurements(std::slice::from_ref(&data), &tasks, None, &options).unwrap();
        let mut results = ResultsFile::open(&results_path).unwrap();
        let summary = sweep::run(&checkpoints, &measurements, &options, Shard::WHOLE, &mut results, &mut || Ok(common::gpu()), &mut |_| {})
            .unwrap();
        results.compact().unwrap();
        assert!(summary.failed.is_empty(), "{:?}", summary.failed);
        (summary.finished, summary.skipped)
    };
    assert_eq!(sweep_once(), (4, 0));
    let first = sweep::read_results(&results_path).unwrap();
    // ModelSpec::parameter_count: embedding 2048 x 64 + 2 layers x (attention 4 x 64 x 64 + MLP 3 x 64 x 192).
    assert!(first.iter().all(|r| r.parameters == 237_568), "size from the model's spec");
    assert_eq!(sweep_once(), (0, 4), "nothing changed");

    // New validation text: the two text units only.
    let mut more = std::fs::read_to_string(&data).unwrap();
    more.push_str("And the LORD spake unto Moses, saying,\n");
    std::fs::write(&data, more).unwrap();
    assert_eq!(sweep_once(), (2, 2));

    // A changed file of one checkpoint: that checkpoint's two units only.
    let config = dir.join("run/step30/tokenizer_config.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    value["model_max_length"] = 64.into();
    std::fs::write(&config, value.to_string()).unwrap();
    assert_eq!(sweep_once(), (2, 2));

    // Each unit once in the file, the changed ones replaced.
    assert_each_unit_once(&results_path, 4);
    let last = sweep::read_results(&results_path).unwrap();
    let hash = |records: &[UnitRecord], checkpoint: &str, measurement: &str| {
        let r = records.iter().find(|r| r.checkpoint.ends_with(checkpoint) && r.measurement.starts_with(measurement)).unwrap();
        (r.model_hash.clone(), r.measurement_hash.clone())
    };
    assert_eq!(hash(&first, "step500", "task:"), hash(&last, "step500", "task:"), "untouched unit kept");
    assert_ne!(hash(&first, "step500", "text:").1, hash(&last, "step500", "text:").1);
    assert_ne!(hash(&first, "step30", "task:").0, hash(&last, "step30", "task:").0);
}

#[test]
fn shards_merged_equal_an_unsharded_sweep_and_report() {
    let scratch = Scratch::new("sweep-shards");
    let dir = &scratch.path;
    let whole = dir.join("whole.jsonl");
    succeed(&mut sweep_command(&whole));
    // Shard 0 by K/N, shard 1 as a Kubernetes Indexed Job would run it.
    let shard0 = dir.join("shard-0.jsonl");
    succeed(sweep_command(&shard0).args(["--shard", "0/2"]));
    let shard1 = dir.join("shard-1.jsonl");
    let out = succeed(sweep_command(&shard1).args(["--shard", "auto"]).env("JOB_COMPLETION_INDEX", "1").env("PERPLEX_SHARD_COUNT", "2"));
    assert!(stdout(&out).contains("4 units measured"), "{}", stdout(&out));
    let (a, b) = (sweep::read_results(&shard0).unwrap(), sweep::read_results(&shard1).unwrap());
    assert_eq!(a.len() + b.len(), four_checkpoints().len() * 2);
    assert!(a.iter().all(|r| b.iter().all(|s| s.checkpoint != r.checkpoint)), "shards share no checkpoint");

    let merged = dir.join("merged.jsonl");
    let out = succeed(perplex_command().args(["sweep", "merge"]).args([&merged, &shard1, &shard0, &shard0]));
    assert!(stdout(&out).contains("8 units from 3 files (4 found in more than one)"), "{}", stdout(&out));
    assert_each_unit_once(&merged, 8);
    assert_eq!(comparable(&sweep::read_results(&merged).unwrap()), comparable(&sweep::read_results(&whole).unwrap()));

    // The report of the merged results: table, JSON and plots.
    let plots = dir.join("plots");
    let json = dir.join("report.json");
    let out = succeed(perplex_command().args(["sweep", "report"]).arg(&merged).arg("--json").arg(&json).arg("--plots").arg(&plots));
    let table = stdout(&out);
    assert!(table.contains("4 checkpoints, 2 sizes (238K, 901K)") && table.contains("agreement") && table.contains("prob_correct"), "{table}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let acc = report["metrics"].as_array().unwrap().iter().find(|m| m["task"] == "agreement" && m["metric"] == "acc").unwrap();
    assert_eq!(acc["points"].as_array().unwrap().len(), 4);
    assert!(acc["chance"].as_f64().unwrap() > 0.25 && acc["chance"].as_f64().unwrap() < 0.5);
    for name in ["loss.svg", "loss.png", "step.svg", "step.png"] {
        let bytes = std::fs::read(plots.join(name)).unwrap();
        assert!(bytes.len() > 5000, "{name}: {} bytes", bytes.len());
        if name.ends_with(".png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        } else {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(svg.contains("agreement: acc") && svg.contains("model size"), "{name}");
        }
    }
}

/// A synthetic sweep: `n` checkpoints with losses spread over [2, 5] and a task whose
/// normalised accuracy is `slope * max(0, threshold - loss)` plus noise.
fn synthetic(n: usize, threshold: f64, slope: f64, noise: f64, seed: u64) -> Vec<UnitRecord> {
    let mut rng = analysis::SplitMix64::new(seed);
    let chance = 0.25;
    let mut records = Vec::new();
    for i in 0..n {
        let loss = 2.0 + 3.0 * rng.unit();
        let normalised = slope * (threshold - loss).max(0.0) + noise * rng.normal();
        let size = [1_000_000u64, 4_000_000, 16_000_000][i % 3];
        let record = |measurement: &str, metrics: BTreeMap<String, sweep::Metric>, text| UnitRecord {
            checkpoint: format!("run{}/step{}", i % 3, i),
            revision: None,
            run: format!("run{}", i % 3),
            step: Some(i as u64 * 100),
            parameters: size,
            measurement: measurement.into(),
            model_hash: "m".into(),
            measurement_hash: "d".into(),
            metrics,
            text,
            seconds: 0.0,
        };
        let tokens = 10_000;
        let counts = sweep::TextCounts { nll: loss * tokens as f64, tokens, bytes: 4 * tokens, words: tokens / 4 };
        records.push(record("text:valid.txt", BTreeMap::new(), Some(counts)));
        let acc = sweep::Metric { value: chance + (1.0 - chance) * normalised, stderr: None, chance: Some(chance), lower_is_better: false };
        records.push(record("task:synthetic", [("acc".to_string(), acc)].into(), None));
    }
    records
}

#[test]
fn the_emergence_threshold_is_recovered_from_synthetic_data() {
    let options = sweep::ReportOptions::default();
    let known = 3.2;
    let report = sweep::analyse(&synthetic(60, known, 0.5, 0.02, 7), &options).unwrap();
    let acc = &report.metrics[0];
    let t = acc.threshold.as_ref().unwrap();
    let (loss, [lo, hi]) = (t.loss.unwrap(), t.ci.unwrap());
    eprintln!("threshold {loss:.3} [{lo:.3}, {hi:.3}], p {}, support {}", t.p_value, t.support);
    assert!((loss - known).abs() < 0.1, "estimate {loss}");
    assert!(lo <= known && known <= hi && hi - lo < 0.5, "interval [{lo}, {hi}]");
    assert!(t.p_value < 0.01 && !t.censored);
    assert!(acc.spearman_loss.unwrap() < -0.7);
    // The same seed gives the same interval.
    let again = sweep::analyse(&synthetic(60, known, 0.5, 0.02, 7), &options).unwrap();
    assert_eq!(again.metrics[0].threshold.as_ref().unwrap().ci, t.ci);

    // Above chance everywhere: the threshold is censored at the highest loss.
    let early = sweep::analyse(&synthetic(60, 6.0, 0.1, 0.01, 8), &options).unwrap();
    let t = early.metrics[0].threshold.as_ref().unwrap();
    assert!(t.censored && t.loss.unwrap() > 4.9, "{t:?}");

    // Noise around chance: no threshold worth the name.
    let flat = sweep::analyse(&synthetic(60, 0.0, 0.0, 0.02, 9), &options).unwrap();
    let t = flat.metrics[0].threshold.as_ref().unwrap();
    assert!(t.p_value > 0.05, "{t:?}");

    // Its plots draw (no GPU needed).
    let scratch = Scratch::new("sweep-synthetic");
    let dir = &scratch.path;
    let files = sweep::plot::write_plots(&report, &["acc".to_string()], dir).unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(report::size_label(237_888), "238K");
}

/// `--base`: every checkpoint is compared with the base model on each text, with exactly the
/// statistics `perplex compare` gives for that pair (rolling windows, same ctx); the base
/// compared with itself has KL 0 and the same top token everywhere; a rerun measures nothing.
#[test]
fn sweep_base_compares_every_checkpoint_as_perplex_compare_does() {
    let scratch = Scratch::new("sweep-base");
    let out = scratch.path.join("results.jsonl");
    let family = repo().join("models/family/0.9M");
    let (base, checkpoints) = (family.join("step500"), [family.join("step30"), family.join("step500")]);
    let sweep = || {
        let mut command = perplex_command();
        command
            .arg("sweep")
            .arg("--models")
            .args(&checkpoints)
            .arg("--data")
            .arg(small_text())
            .args(["--ctx", "64", "--base"])
            .arg(&base)
            .arg("--out")
            .arg(&out);
        succeed(&mut command)
    };
    let first = stdout(&sweep());
    assert!(first.contains("4 units measured, 0 already"), "{first}");
    let records = sweep::read_results(&out).unwrap();
    let compared: Vec<&UnitRecord> = records
        .iter()
        .filter(|r| r.measurement.starts_with("compare:"))
        .collect();
    assert_eq!(compared.len(), 2);
    for record in compared {
        let json = scratch.path.join("compare.json");
        let mut command = perplex_command();
        command
            .arg("compare")
            .arg("--base")
            .arg(&base)
            .arg("--model")
            .arg(&record.checkpoint)
            .arg("--data")
            .arg(small_text())
            .args(["--ctx", "64", "--json"])
            .arg(&json);
        succeed(&mut command);
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let stats = &stats["statistics"];
        for (metric, key) in [
            ("kld", "kld_mean"),
            ("same_top", "same_top"),
            ("delta_p_rms", "delta_p_rms"),
            ("ppl_ratio", "ppl_ratio"),
        ] {
            let got = &record.metrics[metric];
            assert_eq!(Some(got.value), stats[key]["value"].as_f64(), "{} {metric}", record.checkpoint);
            assert_eq!(got.stderr, stats[key]["uncertainty"].as_f64(), "{} {metric}", record.checkpoint);
        }
        if Path::new(&record.checkpoint) == base {
            assert_eq!(record.metrics["kld"].value, 0.0);
            assert_eq!(record.metrics["same_top"].value, 1.0);
        } else {
            assert!(record.metrics["kld"].value > 0.01, "{:?}", record.metrics);
        }
    }
    let again = stdout(&sweep());
    assert!(again.contains("0 units measured, 4 already"), "{again}");

    // No text to compare on: a clear error.
    let mut command = perplex_command();
    command
        .arg("sweep")
        .arg("--models")
        .args(&checkpoints)
        .arg("--task")
        .arg(agreement_task())
        .arg("--base")
        .arg(&base)
        .arg("--out")
        .arg(scratch.path.join("none.jsonl"));
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--base compares"));
}
