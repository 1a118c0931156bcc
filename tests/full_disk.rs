//! A full disk: with the output on a small tmpfs, a `perplex sweep` (its results file) and a
//! `perplex ppl --resume` (its log) that run out of space keep everything finished before, whole
//! and readable, stop with a clear error and exit code 2, and a rerun after space is freed
//! finishes the rest, equal to a run that never met a full disk.
//!
//! Needs root (mount -t tmpfs); skipped, with a notice, where mounting is not permitted.

mod common;

use common::cli::perplex_command;
use common::repo;
use common::small_disk::{assert_whole_lines, SmallDisk};
use common::sweep::{assert_each_unit_once, comparable, four_checkpoints, sweep_command};
use perplex::sweep;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("perplex-full-disk-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeed(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?} failed: {}", stderr(&output));
    output
}

#[test]
fn a_sweep_on_a_full_disk_keeps_its_units_and_a_rerun_finishes() {
    let dir = scratch("sweep");
    let Some(disk) = SmallDisk::mount(&dir.join("disk"), "full-disk sweep") else { return };
    let reference_path = dir.join("reference.jsonl");
    succeed(&mut sweep_command(four_checkpoints(), &reference_path));
    let reference = comparable(&sweep::read_results(&reference_path).unwrap());
    let units = reference.len();
    assert_eq!(units, 8);

    // A page for the lock file and one for the results: some units fit, not all (each line is
    // 500-800 bytes).
    disk.fill_leaving(2);
    let results = disk.dir.join("results.jsonl");
    let output = sweep_command(four_checkpoints(), &results).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("the disk is full") && message.contains("rerun the same command"), "{message}");
    assert_whole_lines(&results);
    let kept = comparable(&sweep::read_results(&results).unwrap());
    assert!(!kept.is_empty() && kept.len() < units, "{} of {units} units kept", kept.len());
    for (unit, record) in &kept {
        assert_eq!(Some(record), reference.get(unit), "{unit:?} kept intact");
    }
    assert!(!disk.dir.join("results.jsonl.partial").exists());

    // Space freed: the rerun measures only what is missing.
    disk.free();
    let output = succeed(&mut sweep_command(four_checkpoints(), &results));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(&format!("{} units measured, {} already", units - kept.len(), kept.len())), "{summary}");
    assert_whole_lines(&results);
    assert_each_unit_once(&results, units);
    assert_eq!(comparable(&sweep::read_results(&results).unwrap()), reference);
    drop(disk);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 40 documents cut from the default model's held-out text, one per JSONL line.
fn documents(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("models/default/heldout.txt")).unwrap();
    let body: String = text.lines().filter(|l| l.len() > 20).take(40).map(|l| serde_json::json!({ "text": l }).to_string() + "\n").collect();
    let path = dir.join("docs.jsonl");
    std::fs::write(&path, body).unwrap();
    path
}

fn ppl(data: &Path, resume: &Path, json: &Path) -> Command {
    let mut command = perplex_command();
    command.args(["ppl", "--model"]).arg(repo().join("models/default")).args(["--ctx", "64", "--batch", "4", "--data"]).arg(data);
    command.arg("--resume").arg(resume).arg("--json").arg(json);
    command
}

/// Each document's nll as bits, and the total.
fn scores(json: &Path) -> (Vec<(String, u64)>, String) {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let docs = v["documents"].as_array().unwrap().iter().map(|d| (d["name"].as_str().unwrap().to_string(), d["nll"].as_f64().unwrap().to_bits())).collect();
    (docs, v["total"]["nll"].to_string())
}

#[test]
fn a_ppl_resume_log_on_a_full_disk_keeps_its_documents_and_a_rerun_finishes() {
    let dir = scratch("ppl");
    let Some(disk) = SmallDisk::mount(&dir.join("disk"), "full-disk ppl --resume") else { return };
    let data = documents(&dir);
    let reference = dir.join("reference.json");
    succeed(&mut ppl(&data, &dir.join("reference.resume"), &reference));
    let log_lines = std::fs::read_to_string(dir.join("reference.resume")).unwrap().lines().count();
    assert_eq!(log_lines, 41, "a header and a line per document");

    // One page for the log: about 20 of the 40 documents (each line about 200 bytes).
    disk.fill_leaving(1);
    let log = disk.dir.join("run.resume");
    let json = dir.join("run.json");
    let output = ppl(&data, &log, &json).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("the disk is full") && message.contains("rerun the same command"), "{message}");
    assert_whole_lines(&log);
    let kept = std::fs::read_to_string(&log).unwrap().lines().count() - 1;
    assert!(kept > 0 && kept < 40, "{kept} of 40 documents kept");
    for line in std::fs::read_to_string(&log).unwrap().lines().skip(1) {
        serde_json::from_str::<serde_json::Value>(line).expect("every kept line whole");
    }

    disk.free();
    succeed(&mut ppl(&data, &log, &json));
    assert_eq!(scores(&json), scores(&reference), "bit-identical to a run that never met a full disk");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), log_lines, "no document twice");
    drop(disk);
    std::fs::remove_dir_all(&dir).unwrap();
}
