//! `perplex compare` on the shipped checkpoint family: against a float64 NumPy computation from
//! both models' full logits (models/scripts/make_compare_reference.py,
//! models/reference/compare-family.json), bit-identical across batch sizes, the base model's
//! log-probabilities equal to `perplex ppl`'s, a model against itself, a pair that takes turns on
//! the device (the same bits as both on it), a killed run resumed from its log (the same bits),
//! and the errors.

mod common;

use common::cli::{assert_bad_input, assert_success, perplex, ppl, Scratch};
use common::repo;
use serde_json::Value;
use std::path::Path;

const DATA: &str = "tests/compare-data/docs.jsonl";

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `perplex compare` of two checkpoints (paths under the repository) with `extra` options,
/// writing its JSON and per-token files into `scratch` under `tag`.
fn compare(scratch: &Scratch, tag: &str, base: &str, model: &str, extra: &[&str]) -> (Value, Vec<Value>, String) {
    let (json, tokens) = (scratch.join(&format!("{tag}.json")), scratch.join(&format!("{tag}.jsonl")));
    let (base, model, data) = (repo().join(base), repo().join(model), repo().join(DATA));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "compare".as_ref(),
        "--base".as_ref(),
        base.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
        "--per-token".as_ref(),
        tokens.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let output = perplex(args);
    assert_success(&output);
    (read_json(&json), read_lines(&tokens), std::fs::read_to_string(&tokens).unwrap())
}

/// `--resume`: a run killed part-way (its log cut after half the windows, the next line half
/// written) continues to the same statistics and per-token results as an uninterrupted run, bit
/// for bit, with each window logged once; also when the rerun takes turns (`--swap` gives the
/// same numbers, so it continues the same log). A log of other settings is refused.
#[test]
fn a_killed_compare_resumes_to_the_same_bits() {
    let scratch = Scratch::new("compare-resume");
    let (base, model) = ("models/family/0.9M/step500", "models/family/0.2M/step250");
    let settings = ["--batch", "1", "--ctx", "48"];
    fn with_log<'a>(settings: &[&'a str], log: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        [settings, &["--resume", log.to_str().unwrap()], extra].concat()
    }
    let (want, _, want_tokens) = compare(&scratch, "plain", base, model, &settings);
    let full = scratch.join("full.resume");
    let (logged, _, logged_tokens) = compare(&scratch, "logged", base, model, &with_log(&settings, &full, &[]));
    assert!(logged_tokens == want_tokens && logged["statistics"] == want["statistics"], "logging changes nothing");
    let lines: Vec<String> = std::fs::read_to_string(&full).unwrap().lines().map(str::to_string).collect();
    let windows = lines.len() - 1;
    assert!(windows >= 20, "a header and one line per window: {windows} windows");

    for (i, extra) in [&[][..], &["--swap"][..]].into_iter().enumerate() {
        let cut = scratch.join(&format!("cut{i}.resume"));
        let kept = 1 + windows / 2;
        std::fs::write(&cut, format!("{}\n{}", lines[..kept].join("\n"), &lines[kept][..lines[kept].len() / 2])).unwrap();
        let (got, _, got_tokens) = compare(&scratch, &format!("resumed{i}"), base, model, &with_log(&settings, &cut, extra));
        assert!(got_tokens == want_tokens, "resumed {extra:?}: per-token results differ");
        for key in ["statistics", "total_base", "total_model", "documents_base", "documents_model", "worst"] {
            assert_eq!(got[key], want[key], "resumed {extra:?}: {key}");
        }
        let resumed = std::fs::read_to_string(&cut).unwrap();
        assert_eq!(resumed.lines().count(), windows + 1, "no duplicate and no partial line");
        assert_eq!(resumed, std::fs::read_to_string(&full).unwrap(), "the same windows logged as the same numbers");
    }
    // A finished log: everything from it.
    let (again, _, again_tokens) = compare(&scratch, "again", base, model, &with_log(&settings, &full, &[]));
    assert!(again_tokens == want_tokens && again["statistics"] == want["statistics"]);

    // Other settings: another window length, other sums, another model.
    let data = repo().join(DATA);
    let run = |model: &str, extra: &[&str]| {
        let (base, model) = (repo().join(base), repo().join(model));
        let mut args: Vec<&std::ffi::OsStr> = ["compare", "--base"].iter().map(std::ffi::OsStr::new).collect();
        args.extend([base.as_os_str(), "--model".as_ref(), model.as_os_str(), "--data".as_ref(), data.as_os_str(), "--resume".as_ref(), full.as_os_str()]);
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        perplex(args)
    };
    assert_bad_input(&run(model, &["--ctx", "40"]), &["other settings"]);
    assert_bad_input(&run(model, &["--ctx", "48", "--sums", "compensated"]), &["other settings"]);
    assert_bad_input(&run("models/family/0.9M/step250", &["--ctx", "48"]), &["other settings"]);
}

fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    (got - want).abs() <= rel * want.abs() + abs
}

#[test]
fn compare_matches_float64_reference_on_the_family() {
    let reference = read_json(&repo().join("models/reference/compare-family.json"));
    let scratch = Scratch::new("compare-reference");
    for (i, pair) in reference["pairs"].as_array().unwrap().iter().enumerate() {
        let (base, model) = (pair["base"].as_str().unwrap(), pair["model"].as_str().unwrap());
        let (json, tokens, _) = compare(&scratch, &format!("pair{i}"), base, model, &[]);
        let stats = &json["statistics"];
        let n = pair["tokens"].as_u64().unwrap();
        assert_eq!(stats["count"].as_u64().unwrap(), n, "{base} vs {model}: scored positions");
        let f = |v: &Value| v.as_f64().unwrap();
        let (kld, want_kld) = (f(&stats["kld_mean"]["value"]), f(&pair["mean_kld"]));
        let (same, want_same) = (f(&stats["same_top"]["value"]), f(&pair["same_top"]));
        let (dp, want_dp) = (f(&stats["delta_p_mean"]["value"]), f(&pair["mean_delta_p"]));
        let (rms, want_rms) = (f(&stats["delta_p_rms"]["value"]), f(&pair["rms_delta_p"]));
        eprintln!(
            "{base} vs {model}: mean KLD {kld:.9} (float64 {want_kld:.9}, rel {:.1e}), same top {same} ({want_same}), \
             mean Δp {dp:.9} ({want_dp:.9}, abs {:.1e}), RMS Δp {rms:.9} ({want_rms:.9})",
            (kld - want_kld).abs() / want_kld,
            (dp - want_dp).abs()
        );
        // The tolerance: 1e-5 relative, 1e-7 absolute near zero.
        assert!(close(kld, want_kld, 1e-5, 1e-7), "{base} vs {model}: mean KLD {kld} want {want_kld}");
        assert!(close(same, want_same, 1e-5, 1e-7), "{base} vs {model}: same-top rate {same} want {want_same}");
        assert!(close(dp, want_dp, 1e-5, 1e-7), "{base} vs {model}: mean Δp {dp} want {want_dp}");
        assert!(close(rms, want_rms, 1e-5, 1e-7), "{base} vs {model}: RMS Δp {rms} want {want_rms}");
        // Position by position (documents in order, as the reference lists them).
        let mut worst = 0.0f64;
        for (j, t) in tokens.iter().enumerate() {
            let want = f(&pair["kld"][j]);
            let got = f(&t["kld"]);
            worst = worst.max((got - want).abs());
            assert!(close(got, want, 1e-4, 1e-6), "{base} vs {model} position {j}: KL {got} want {want}");
            assert!(close(f(&t["logprob_base"]), f(&pair["logprob_base"][j]), 1e-4, 1e-5), "position {j}: log p_base");
            assert!(close(f(&t["logprob_model"]), f(&pair["logprob_model"][j]), 1e-4, 1e-5), "position {j}: log p_model");
        }
        eprintln!("  largest per-position |KL error| {worst:.2e}");
        // The statistics are those of the per-position values written out (f32, printed in
        // their shortest form: read back through f32).
        let mean: f64 = tokens.iter().map(|t| f(&t["kld"]) as f32 as f64).sum::<f64>() / n as f64;
        assert_eq!(mean, kld, "mean KLD of the per-position values");
        // The disagreements listed are the largest KL values, in order.
        let worst_listed: Vec<f32> = json["worst"].as_array().unwrap().iter().map(|w| f(&w["kld"]) as f32).collect();
        let mut sorted: Vec<f32> = tokens.iter().map(|t| f(&t["kld"]) as f32).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(worst_listed, sorted[..10].to_vec());
    }
}

#[test]
fn compare_is_bit_identical_across_batch_sizes() {
    let scratch = Scratch::new("compare-batches");
    let (base, model) = ("models/family/0.9M/step500", "models/family/0.2M/step250");
    let (_, _, auto) = compare(&scratch, "auto", base, model, &["--batch", "auto"]);
    for batch in ["1", "3"] {
        let (_, _, text) = compare(&scratch, batch, base, model, &["--batch", batch]);
        assert!(text == auto, "--batch {batch} gives other per-token results than --batch auto");
    }
}

#[test]
fn compare_base_logprobs_are_ppl_logprobs_and_a_model_against_itself_loses_nothing() {
    let scratch = Scratch::new("compare-self");
    let model = "models/family/0.2M/step500";
    let (json, tokens, _) = compare(&scratch, "self", model, model, &[]);
    assert!(tokens.iter().all(|t| t["kld"].as_f64() == Some(0.0)), "KL of a model against itself must be 0");
    assert!(tokens.iter().all(|t| t["same_top"] == Value::Bool(true) && t["logprob_base"] == t["logprob_model"]));
    assert_eq!(json["statistics"]["ppl_ratio"]["value"].as_f64(), Some(1.0));
    // `ppl` of the same model on the same data: the same log-probability at every position.
    let per_token = scratch.join("ppl.jsonl");
    assert_success(&ppl(repo().join(model), repo().join(DATA), &["--per-token", per_token.to_str().unwrap()]));
    let from_ppl = read_lines(&per_token);
    assert_eq!(from_ppl.len(), tokens.len());
    for (a, b) in from_ppl.iter().zip(&tokens) {
        assert_eq!((&a["pos"], &a["token_id"], &a["logprob"]), (&b["pos"], &b["token_id"], &b["logprob_base"]));
    }
}

#[test]
fn compare_refuses_a_tokenizer_mismatch_and_a_missing_base() {
    let scratch = Scratch::new("compare-errors");
    let base = repo().join("models/family/0.2M/step500");
    // The same checkpoint with two vocabulary entries swapped: the ids mean other tokens.
    let model = scratch.join("swapped");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(&base).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    common::cli::edit_json(&model.join("tokenizer.json"), |json| {
        let vocab = json["model"]["vocab"].as_object_mut().unwrap();
        let name = |id: u64| vocab.iter().find(|(_, v)| v.as_u64() == Some(id)).unwrap().0.clone();
        let (a, b) = (name(700), name(900));
        vocab.insert(a, 900.into());
        vocab.insert(b, 700.into());
    });
    let data = repo().join(DATA);
    let run = |base: &Path, model: &Path| {
        perplex(["compare".as_ref(), "--base".as_ref(), base.as_os_str(), "--model".as_ref(), model.as_os_str(), "--data".as_ref(), data.as_os_str()])
    };
    assert_bad_input(&run(&base, &model), &["do not share a tokenizer", "token 700 is"]);
    // A tokenizer of another size.
    assert_bad_input(&run(&base, &common::cli::tiny_model()), &["do not share a tokenizer", "tokens"]);
    // No base model.
    assert_bad_input(&run(&scratch.join("no-such-model"), &base), &["the base model", "no-such-model"]);
}

/// SmolLM2-135M in f32 against its f16 export (needs PERPLEX_ASSETS), with `--sums compensated`:
/// against the float64 reference from both models' full logits (models/reference/compare-smollm2.json),
/// mean KLD, mean and RMS Δp within 1e-5 relative + 1e-7 absolute, and the same-top rate equal.
/// The models differ by a mean KL of 2.7e-6 nats, within reach of f32 arithmetic: with plain sums
/// (per-token log-probabilities about 1e-5 from float64) mean Δp is off by 2.2e-7 and RMS Δp by
/// 3.2e-7; compensated ones bring the log-probabilities to about 2e-6 and these to 1.2e-8 and 3.7e-8.
#[test]
fn compare_smollm2_f16_against_f32_matches_float64_reference() {
    let Some(assets) = common::assets("compare_smollm2_f16_against_f32_matches_float64_reference") else { return };
    let reference = read_json(&repo().join("models/reference/compare-smollm2.json"));
    let pair = &reference["pairs"][0];
    let scratch = Scratch::new("compare-smollm2");
    let (base, model) = (assets.join(pair["base"].as_str().unwrap()), assets.join(pair["model"].as_str().unwrap()));
    let (json, tokens, _) = compare(&scratch, "smollm2", base.to_str().unwrap(), model.to_str().unwrap(), &["--sums", "compensated"]);
    assert!(json["adapter"].as_str().unwrap().ends_with("compensated sums"), "{}", json["adapter"]);
    let stats = &json["statistics"];
    let f = |v: &Value| v.as_f64().unwrap();
    assert_eq!(tokens.len() as u64, pair["tokens"].as_u64().unwrap());
    for (statistic, reference) in [("kld_mean", "mean_kld"), ("delta_p_mean", "mean_delta_p"), ("delta_p_rms", "rms_delta_p")] {
        let (got, want) = (f(&stats[statistic]["value"]), f(&pair[reference]));
        eprintln!("SmolLM2 f16 vs f32: {statistic} {got:.9e}, float64 {want:.9e}");
        assert!(close(got, want, 1e-5, 1e-7), "{statistic} {got} want {want}");
    }
    assert_eq!(f(&stats["same_top"]["value"]), f(&pair["same_top"]), "same-top rate");
}

/// Models closer than plain f32 sums resolve well (here a model against itself) get a note
/// pointing to `--sums compensated`; with compensated sums there is none, and the statistics of a
/// model against itself are exactly zero either way.
#[test]
fn compare_points_close_pairs_to_compensated_sums() {
    let model = repo().join("models/family/0.2M/step250");
    let data = repo().join(DATA);
    for sums in ["plain", "compensated"] {
        let args: Vec<&std::ffi::OsStr> =
            vec!["compare".as_ref(), "--base".as_ref(), model.as_os_str(), "--model".as_ref(), model.as_os_str(), "--data".as_ref(), data.as_os_str(), "--sums".as_ref(), sums.as_ref()];
        let output = perplex(args);
        assert_success(&output);
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(stdout.lines().any(|l| l.starts_with("Mean    KLD") && l.ends_with(" 0.000000 ± 0.000000")), "{stdout}");
        assert_eq!(stderr.contains("--sums compensated brings"), sums == "plain", "{sums}: {stderr}");
    }
}

#[test]
fn compare_takes_the_window_modes_of_ppl() {
    let scratch = Scratch::new("compare-windows");
    let (base, model) = ("models/family/0.9M/step500", "models/family/0.9M/step250");
    // A sliding window without --stride advances by half the window.
    let (default, _, text) = compare(&scratch, "sliding", base, model, &["--window", "sliding", "--ctx", "64"]);
    let (_, _, half) = compare(&scratch, "half", base, model, &["--window", "sliding", "--ctx", "64", "--stride", "32"]);
    assert!(text == half, "--window sliding --ctx 64 must stride by 32");
    assert_eq!(default["window"], "sliding");
    // Chunks: the same positions as `ppl --window chunks` scores.
    let (_, tokens, _) = compare(&scratch, "chunks", base, model, &["--window", "chunks", "--ctx", "32"]);
    let per_token = scratch.join("ppl-chunks.jsonl");
    assert_success(&ppl(repo().join(base), repo().join(DATA), &["--window", "chunks", "--ctx", "32", "--per-token", per_token.to_str().unwrap()]));
    let from_ppl = read_lines(&per_token);
    assert!(!tokens.is_empty());
    assert_eq!(from_ppl.len(), tokens.len());
    for (a, b) in from_ppl.iter().zip(&tokens) {
        assert_eq!((&a["doc"], &a["pos"], &a["logprob"]), (&b["doc"], &b["pos"], &b["logprob_base"]));
    }
}

/// A pair whose weights do not fit on the device together (PERPLEX_FAIL_WEIGHTS_ABOVE: a device
/// that holds either model's weights, not both) takes turns on it, says so, and gives the same
/// per-token results as both models on the device, bit for bit; `--swap` asks for the same where
/// they fit. A model that does not fit even alone is a clear error.
#[test]
fn compare_swaps_a_pair_that_does_not_fit_together() {
    let scratch = Scratch::new("compare-swap");
    let (base, model) = ("models/family/0.9M/step500", "models/family/0.2M/step250");
    let (together, _, want) = compare(&scratch, "together", base, model, &[]);
    assert_eq!(together["residency"], "both");
    let weights = |side: &str| together["weight_bytes"][side].as_u64().unwrap();
    let (larger, smaller) = (weights("base").max(weights("model")), weights("base").min(weights("model")));
    assert!(larger > smaller && smaller > 0);
    let (swapped, _, text) = compare(&scratch, "swap", base, model, &["--swap"]);
    assert_eq!(swapped["residency"], "swapped");
    assert!(text == want, "--swap gives other per-token results than both models on the device");

    let (json, tokens) = (scratch.join("limited.json"), scratch.join("limited.jsonl"));
    let run = compare_under_weight_limit;
    // Room for the larger model, not for both.
    let output = run(larger + smaller / 2, base, model, &[&json, &tokens]);
    assert_success(&output);
    assert!(common::cli::clean_stderr(&output).contains("take turns on the device"), "the run says the models take turns");
    assert_eq!(read_json(&json)["residency"], "swapped");
    assert!(std::fs::read_to_string(&tokens).unwrap() == want, "the swapped run gives other per-token results");
    // Room for the smaller model only: the base is the larger one, then the model is.
    let limit = smaller + (larger - smaller) / 2;
    assert_bad_input(&run(limit, base, model, &[]), &["the base model", "do not fit in the memory"]);
    assert_bad_input(&run(limit, model, base, &[]), &["does not fit on the device even without the base model", "out of memory"]);
}

/// Both models fit on the device but their paired heads do not fit beside them (the heads count
/// as weights under PERPLEX_FAIL_WEIGHTS_ABOVE): the models take turns, the run says why, and the
/// per-token results are those of both models on the device, bit for bit.
#[test]
fn compare_swaps_when_only_the_paired_heads_do_not_fit() {
    let scratch = Scratch::new("compare-heads");
    let (base, model) = ("models/family/0.9M/step500", "models/family/0.9M/step250");
    let (together, _, want) = compare(&scratch, "together", base, model, &[]);
    assert_eq!(together["residency"], "both");
    let weights = |side: &str| together["weight_bytes"][side].as_u64().unwrap();
    let (json, tokens) = (scratch.join("limited.json"), scratch.join("limited.jsonl"));
    let output = compare_under_weight_limit(weights("base") + weights("model"), base, model, &[&json, &tokens]);
    assert_success(&output);
    let stderr = common::cli::clean_stderr(&output);
    assert!(stderr.contains("both models fit") && stderr.contains("not their heads side by side") && stderr.contains("take turns"), "{stderr}");
    assert_eq!(read_json(&json)["residency"], "swapped");
    assert!(std::fs::read_to_string(&tokens).unwrap() == want, "the swapped run gives other per-token results");
}

/// `perplex compare` on the test documents with PERPLEX_FAIL_WEIGHTS_ABOVE=`limit`, writing
/// `[json, per-token]` where given.
fn compare_under_weight_limit(limit: u64, base: &str, model: &str, extra: &[&Path]) -> std::process::Output {
    let (base, model, data) = (repo().join(base), repo().join(model), repo().join(DATA));
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["compare".as_ref(), "--base".as_ref(), base.as_os_str(), "--model".as_ref(), model.as_os_str(), "--data".as_ref(), data.as_os_str()];
    if let [json, tokens] = extra {
        args.extend(["--json".as_ref(), json.as_os_str(), "--per-token".as_ref(), tokens.as_os_str()]);
    }
    common::cli::perplex_command().env("PERPLEX_FAIL_WEIGHTS_ABOVE", limit.to_string()).args(args).output().unwrap()
}

/// Swapped in rounds of one window each (a tiny `Pair::round_bytes`), the models trade places
/// once per round, each round starting with the model the last one left on the device: the
/// same per-token results as both models on the device, bit for bit.
#[test]
fn compare_in_rounds_matches_both_models_on_the_device() {
    use perplex::compare::{self, CompareOptions, Pair, Residency};
    let gpu = common::gpu();
    let (base, model) = (repo().join("models/family/0.9M/step500"), repo().join("models/family/0.9M/step250"));
    let (base, model) = (base.to_str().unwrap(), model.to_str().unwrap());
    let documents = perplex::data::read_documents(&repo().join(DATA), "text").unwrap();
    let options = CompareOptions {
        mode: perplex::score::WindowMode::Sliding { stride: 24 },
        ctx: Some(48),
        batch: perplex::forward::Batch::Windows(2),
        per_token: true,
        progress: None,
        resume: None,
    };
    let per_token = |pair: &Pair| serde_json::to_string(&compare::compare(pair, &documents, &options).unwrap().tokens).unwrap();
    let together = Pair::open_revision(base, model, None, None, gpu.clone()).unwrap();
    assert_eq!(together.residency, Residency::Together);
    let want = per_token(&together);
    drop(together);
    let mut swapped = Pair::open_revision(base, model, None, Some(Residency::Swapped), gpu).unwrap();
    assert_eq!(swapped.residency, Residency::Swapped);
    swapped.round_bytes = 1;
    assert!(per_token(&swapped) == want, "compared in rounds, the per-token results differ");
    // A second run on the same pair starts with whichever model the first left on the device.
    assert!(per_token(&swapped) == want, "a second run in rounds differs");
}

/// A pass whose compared rows do not fit in one storage binding is compared block by block: on
/// a device with 64 KiB bindings, passes of 80 rows of the tiny Gemma (720 bytes per row of its
/// widest activation) meet compare buffers of 1,024 bytes per row (the stacked pair of rows), 64
/// rows a block. Against itself, every block must find KL 0 and the log-probabilities of a
/// device that takes every pass at once.
#[test]
fn compare_splits_a_pass_into_blocks_that_fit_one_binding() {
    use perplex::compare::{self, CompareOptions, Pair};
    use perplex::gpu::{Gpu, GpuOptions};
    let model = repo().join("models/tiny/gemma-f32");
    let (base, model) = (model.to_str().unwrap(), model.to_str().unwrap());
    let documents = perplex::data::read_documents(&repo().join(DATA), "text").unwrap();
    let options = CompareOptions {
        mode: perplex::score::WindowMode::Rolling,
        ctx: Some(80),
        batch: perplex::forward::Batch::Auto,
        per_token: true,
        progress: None,
        resume: None,
    };
    let per_token = |gpu| {
        let pair = Pair::open(base, model, gpu).unwrap();
        let tokens = compare::compare(&pair, &documents, &options).unwrap().tokens;
        assert!(tokens.iter().all(|t| t.kld == 0.0 && t.logprob_base == t.logprob_model), "a model against itself");
        serde_json::to_string(&tokens).unwrap()
    };
    let want = per_token(common::gpu());
    let limited = Gpu::new(&GpuOptions { max_binding_override: Some(64 << 10), ..Default::default() }).unwrap();
    assert!(per_token(limited) == want, "compared block by block, the per-token results differ");
}
