//! `perplex eval --resume`: a killed, interrupted (Ctrl-C) or full-disk run continues without
//! rescoring or duplicating the requests it logged, and its metrics, results file and samples are
//! bit-identical to an uninterrupted run's. On the committed tiny model, with a multiple-choice
//! task built from the default model's held-out text (big enough that a run takes many passes).

mod common;

use common::cli::{assert_bad_input, assert_success, perplex_command, tiny_model, Scratch};
use common::repo;
use common::small_disk::{assert_whole_lines, SmallDisk};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Documents of the generated task.
const DOCS: usize = 150;

/// A multiple-choice task of `DOCS` documents: the first half of a held-out line, its own second
/// half (gold) against the second halves of the next three lines. Four requests per document.
fn write_task(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("models/default/heldout.txt")).unwrap();
    let mut seen = std::collections::HashSet::new();
    let halves: Vec<(String, String)> = text
        .lines()
        .filter(|l| l.len() > 40)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (context, rest) = words.split_at(words.len() / 2);
            (context.join(" "), rest.iter().take(8).copied().collect::<Vec<_>>().join(" "))
        })
        // Distinct contexts: each document's requests are packed in windows of their own.
        .filter(|(context, _)| seen.insert(context.clone()))
        .collect();
    assert!(halves.len() >= DOCS + 3, "{} usable lines", halves.len());
    let body: String = (0..DOCS)
        .map(|i| {
            let choices: Vec<&str> = (i..i + 4).map(|j| halves[j].1.as_str()).collect();
            serde_json::json!({ "id": i.to_string(), "context": halves[i].0, "choices": choices, "gold": 0 }).to_string() + "\n"
        })
        .collect();
    let path = dir.join("task.jsonl");
    std::fs::write(&path, body).unwrap();
    path
}

/// What a run wrote: its --json and --samples files.
struct Run {
    json: PathBuf,
    samples: PathBuf,
}

impl Run {
    fn new(dir: &Path, name: &str) -> Run {
        Run { json: dir.join(format!("{name}.json")), samples: dir.join(format!("{name}.samples.jsonl")) }
    }

    /// Everything but the timing: the results file without its evaluation time, and the samples
    /// byte for byte (every request's ll as the shortest decimal that round-trips, so equal text
    /// is equal bits).
    fn outcome(&self) -> (serde_json::Value, String) {
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&self.json).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("total_evaluation_time_seconds");
        (json, std::fs::read_to_string(&self.samples).unwrap())
    }
}

/// `perplex eval` of the task on the tiny model with a resume log, one window per pass (many passes).
fn eval(task: &Path, resume: &Path, run: &Run, extra: &[&str]) -> Command {
    eval_on(&tiny_model(), task, resume, run, extra)
}

fn eval_on(model: &Path, task: &Path, resume: &Path, run: &Run, extra: &[&str]) -> Command {
    let mut command = perplex_command();
    command.arg("eval").arg("--model").arg(model).args(["--task", "mc", "--data"]).arg(task);
    command.args(["--batch", "1", "--resume"]).arg(resume).arg("--json").arg(&run.json).arg("--samples").arg(&run.samples);
    command.args(extra);
    command
}

fn output(command: &mut Command) -> Output {
    command.output().expect("run the perplex binary")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|text| text.lines().map(String::from).collect()).unwrap_or_default()
}

/// The reference: an uninterrupted run, and its log (a header and one line per distinct request).
fn reference(scratch: &Scratch, task: &Path) -> (Run, Vec<String>) {
    let run = Run::new(&scratch.path, "reference");
    let log = scratch.join("reference.resume");
    assert_success(&output(&mut eval(task, &log, &run, &[])));
    let log = lines(&log);
    assert_eq!(log.len(), 1 + 4 * DOCS, "a header and a line per request");
    (run, log)
}

/// Starts `command` and sends `signal` once its log has more than `lines` lines.
fn signal_when_logged(mut command: Command, log: &Path, lines: usize, signal: &str) -> Output {
    let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = std::time::Instant::now();
    while self::lines(log).len() <= lines && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
    child.wait_with_output().unwrap()
}

#[test]
fn a_killed_run_resumes_to_identical_results_without_duplicates() {
    let scratch = Scratch::new("eval-resume-kill");
    let task = write_task(&scratch.path);
    let (reference, reference_log) = reference(&scratch, &task);

    // SIGKILL once some requests are logged: nothing is lost but what was in flight.
    let log = scratch.join("killed.resume");
    let run = Run::new(&scratch.path, "killed");
    let killed = signal_when_logged(eval(&task, &log, &run, &[]), &log, 8, "-KILL");
    if killed.status.success() {
        eprintln!("the run finished before SIGKILL arrived; only the rerun is checked");
    } else {
        let kept = lines(&log).len() - 1;
        assert!(kept > 0 && kept < 4 * DOCS, "{kept} requests logged before SIGKILL");
    }
    assert_success(&output(&mut eval(&task, &log, &run, &[])));
    assert_eq!(run.outcome(), reference.outcome(), "bit-identical to an uninterrupted run");
    assert_eq!(lines(&log).len(), reference_log.len(), "no request logged twice");

    // A crash in the middle of writing a line: the cut line is dropped and written again.
    let cut = scratch.join("cut.resume");
    let half = &reference_log[101][..reference_log[101].len() / 2];
    std::fs::write(&cut, format!("{}\n{half}", reference_log[..101].join("\n"))).unwrap();
    let run = Run::new(&scratch.path, "cut");
    assert_success(&output(&mut eval(&task, &cut, &run, &[])));
    assert_eq!(run.outcome(), reference.outcome());
    let mut resumed = lines(&cut);
    assert_eq!(resumed[..101], reference_log[..101], "the whole lines are kept as they were");
    resumed.sort();
    let mut expected = reference_log.clone();
    expected.sort();
    assert_eq!(resumed, expected, "every request once, with the reference's answer");
}

#[test]
fn ctrl_c_stops_after_the_passes_in_flight_and_keeps_them() {
    let scratch = Scratch::new("eval-resume-interrupt");
    let task = write_task(&scratch.path);
    let (reference, reference_log) = reference(&scratch, &task);
    let log = scratch.join("interrupted.resume");
    let run = Run::new(&scratch.path, "interrupted");
    let interrupted = signal_when_logged(eval(&task, &log, &run, &[]), &log, 8, "-INT");
    let stderr = String::from_utf8_lossy(&interrupted.stderr);
    if interrupted.status.success() {
        eprintln!("the run finished before the interrupt arrived; only the rerun is checked");
    } else {
        assert_eq!(interrupted.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("requests answered and kept in") && stderr.contains("rerun the same command"), "{stderr}");
        assert_whole_lines(&log);
        assert!(lines(&log).len() > 8, "the passes in flight are kept");
    }
    assert_success(&output(&mut eval(&task, &log, &run, &[])));
    assert_eq!(run.outcome(), reference.outcome());
    assert_eq!(lines(&log).len(), reference_log.len());
}

#[test]
fn a_log_continued_with_more_documents_scores_only_the_new_ones() {
    let scratch = Scratch::new("eval-resume-limit");
    let task = write_task(&scratch.path);
    let (reference, reference_log) = reference(&scratch, &task);
    let log = scratch.join("grown.resume");
    let first = Run::new(&scratch.path, "first");
    assert_success(&output(&mut eval(&task, &log, &first, &["--limit", "40"])));
    assert_eq!(lines(&log).len(), 1 + 4 * 40);
    // The task settings are no part of the header: every request is keyed by the input that
    // scored it, so the first 40 documents' answers are the full run's.
    let run = Run::new(&scratch.path, "grown");
    assert_success(&output(&mut eval(&task, &log, &run, &[])));
    assert_eq!(run.outcome(), reference.outcome());
    assert_eq!(lines(&log).len(), reference_log.len(), "the first 40 documents are not scored again");
}

#[test]
fn a_log_of_another_model_or_command_is_refused() {
    let scratch = Scratch::new("eval-resume-refused");
    let data = repo().join("tests/eval-data/mc.jsonl");
    let log = scratch.join("log.resume");
    let run = Run::new(&scratch.path, "run");
    assert_success(&output(&mut eval(&data, &log, &run, &[])));
    let before = std::fs::read(&log).unwrap();

    let other = output(&mut eval_on(&repo().join("models/tiny/mistral-f32"), &data, &log, &run, &[]));
    assert_bad_input(&other, &["log.resume", "other settings", "use a new --resume file"]);
    assert_eq!(std::fs::read(&log).unwrap(), before, "a refused log is left as it was");

    // A `perplex ppl` log.
    let ppl_log = scratch.join("ppl.resume");
    let text = scratch.text("doc.txt");
    let ppl = perplex_command().arg("ppl").arg("--model").arg(tiny_model()).arg("--data").arg(&text).arg("--resume").arg(&ppl_log).output().unwrap();
    assert_success(&ppl);
    assert_bad_input(&output(&mut eval(&data, &ppl_log, &run, &[])), &["not a perplex resume file of this command"]);
}

#[test]
fn an_eval_log_on_a_full_disk_keeps_its_requests_and_a_rerun_finishes() {
    let scratch = Scratch::new("eval-resume-full-disk");
    let Some(disk) = SmallDisk::mount(&scratch.join("disk"), "full-disk eval --resume") else { return };
    let task = write_task(&scratch.path);
    let (reference, reference_log) = reference(&scratch, &task);

    // One page for the log: about 60 of the 600 requests (each line about 70 bytes).
    disk.fill_leaving(1);
    let log = disk.dir.join("run.resume");
    let run = Run::new(&scratch.path, "run");
    let full = output(&mut eval(&task, &log, &run, &[]));
    assert_bad_input(&full, &["run.resume", "the disk is full", "requests finished before are kept", "rerun the same command"]);
    assert_whole_lines(&log);
    let kept = lines(&log);
    assert!(kept.len() > 1 && kept.len() < reference_log.len(), "{} of {} requests kept", kept.len() - 1, 4 * DOCS);
    for line in &kept {
        assert!(reference_log.contains(line), "every kept line whole and equal to the reference's: {line}");
    }

    disk.free();
    assert_success(&output(&mut eval(&task, &log, &run, &[])));
    assert_eq!(run.outcome(), reference.outcome(), "bit-identical to a run that never met a full disk");
    assert_eq!(lines(&log).len(), reference_log.len(), "no request twice");
}
