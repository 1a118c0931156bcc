//! Killed and interrupted runs: `--resume` continues without rescoring or duplicating finished
//! documents, and the totals equal an uninterrupted run's, bit for bit.

mod common;

use common::cli::{perplex_command, Scratch};
use common::repo;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `perplex ppl` on the default model with windows of `ctx` tokens.
fn ppl_default(ctx: &str) -> Command {
    let mut command = perplex_command();
    command.args(["ppl", "--model", repo().join("models/default").to_str().unwrap(), "--ctx", ctx]);
    command
}

/// Documents cut from the default model's held-out text, one per JSONL line.
fn write_documents(dir: &Path, count: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("models/default/heldout.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.len() > 20).take(count).collect();
    let path = dir.join("docs.jsonl");
    let body: String = lines.iter().map(|l| serde_json::json!({ "text": l }).to_string() + "\n").collect();
    std::fs::write(&path, body).unwrap();
    path
}

fn ppl(data: &Path, resume: &Path, json: &Path) -> std::process::Output {
    ppl_default("64")
        .args(["--batch", "4", "--data"])
        .arg(data)
        .arg("--resume")
        .arg(resume)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap()
}

fn totals(json: &Path) -> (String, Vec<(String, u64)>) {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let docs = v["documents"].as_array().unwrap().iter().map(|d| (d["name"].as_str().unwrap().to_string(), d["nll"].as_f64().unwrap().to_bits())).collect();
    (v["total"]["nll"].to_string(), docs)
}

#[test]
fn a_crashed_run_resumes_without_rescoring_or_duplicates() {
    let scratch = Scratch::new("resume-crash");
    let dir = &scratch.path;
    let data = write_documents(dir, 12);
    let (full_log, full_json) = (dir.join("full.resume"), dir.join("full.json"));
    assert!(ppl(&data, &full_log, &full_json).status.success());
    let log = std::fs::read_to_string(&full_log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 13, "a header and one line per document");

    // A crash after five documents, in the middle of writing the sixth.
    let crashed = dir.join("crashed.resume");
    let partial = format!("{}\n{}", lines[..6].join("\n"), &lines[6][..lines[6].len() / 2]);
    std::fs::write(&crashed, partial).unwrap();
    let resumed_json = dir.join("resumed.json");
    let out = ppl(&data, &crashed, &resumed_json);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&resumed_json), totals(&full_json));
    let resumed = std::fs::read_to_string(&crashed).unwrap();
    assert_eq!(resumed.lines().count(), 13, "no duplicate and no partial line:\n{resumed}");
}

#[test]
fn a_resume_file_from_other_settings_is_refused() {
    let scratch = Scratch::new("resume-settings");
    let dir = &scratch.path;
    let data = write_documents(dir, 2);
    let log = dir.join("log.resume");
    assert!(ppl(&data, &log, &dir.join("a.json")).status.success());
    let out = ppl_default("32")
        .arg("--data")
        .arg(&data)
        .arg("--resume")
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));
    // Nor is a log of plain sums continued with compensated ones.
    let out = ppl_default("64").args(["--batch", "4", "--sums", "compensated", "--data"]).arg(&data).arg("--resume").arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));
}

#[test]
fn ctrl_c_keeps_finished_documents_and_the_rerun_completes() {
    let scratch = Scratch::new("resume-interrupt");
    let dir = &scratch.path;
    let data = write_documents(dir, 200);
    let (log, json) = (dir.join("log.resume"), dir.join("out.json"));
    let child = ppl_default("64")
        .args(["--batch", "2", "--data"])
        .arg(&data)
        .arg("--resume")
        .arg(&log)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once a few documents are logged.
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 4 && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    send_interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("the run finished before the interrupt arrived; nothing to check");
    } else {
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("rerun the same command"), "{stderr}");
    }
    let kept = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(kept >= 4);
    assert!(ppl(&data, &log, &json).status.success());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 201);
}

/// SIGINT via the `kill` command (no libc dependency for one test).
fn send_interrupt(pid: u32) {
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
}

#[test]
fn an_out_of_memory_batch_is_retried_smaller_with_identical_results() {
    let scratch = Scratch::new("resume-oom");
    let dir = &scratch.path;
    let data = write_documents(dir, 6);
    let run = |fail_above: Option<&str>, json: &Path| {
        let mut command = ppl_default("16");
        command.args(["--batch", "8", "--data"]);
        command.arg(&data).arg("--json").arg(json);
        if let Some(limit) = fail_above {
            command.env("PERPLEX_FAIL_WINDOWS_ABOVE", limit);
        }
        command.output().unwrap()
    };
    let (plain, retried, failing) = (dir.join("plain.json"), dir.join("retried.json"), dir.join("failing.json"));
    assert!(run(None, &plain).status.success());
    let out = run(Some("2"), &retried);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying with 4 windows") && stderr.contains("retrying with 2 windows"), "{stderr}");
    assert_eq!(totals(&retried), totals(&plain));
    // Even one window does not fit: a clear error, exit code 2.
    let out = run(Some("0"), &failing);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of memory"));
}
