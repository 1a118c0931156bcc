//! What dead and failing sweeps leave behind: the lock of a sweep killed with SIGKILL (or of a
//! holder on another host whose heartbeat stopped) is taken over by the next run; a second live
//! sweep on the same results is refused, naming the holder's host and pid; and `perplex sweep
//! status` tells, per checkpoint and measurement, what is done, missing, failed or stale, and in
//! which shard.

mod common;

use common::repo;
use common::sweep::{every_checkpoint, sweep_command};
use perplex::sweep::lock::{host_name, lock_path, Holder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("perplex-sweep-recovery-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn perplex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_perplex"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn succeed(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?} failed: {}", stderr(&output));
    output
}

/// A sweep over every checkpoint of the family (15): long enough (a few seconds) to be caught running.
fn family_sweep(out: &Path) -> Command {
    sweep_command([every_checkpoint()], out)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn holder(results: &Path) -> Option<Holder> {
    serde_json::from_slice(&std::fs::read(lock_path(results)).ok()?).ok()
}

#[test]
fn a_killed_holders_lock_is_taken_over_and_a_live_one_refuses() {
    let dir = scratch("locks");
    let results = dir.join("results.jsonl");

    // A live holder: a second sweep on its file is refused at once, naming host and pid.
    let mut first = family_sweep(&results).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the first sweep's first unit", || lines(&results) >= 1);
    let second = family_sweep(&results).output().unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    let named = format!("pid {} on host {}", first.id(), host_name());
    assert!(stderr(&second).contains(&named), "names the holder ({named}): {}", stderr(&second));

    // Killed: its lock file still names it, and the next run takes it over at once.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(holder(&results).map(|h| h.pid), Some(first.id()), "a SIGKILLed holder leaves its name behind");
    let kept = lines(&results);
    let start = Instant::now();
    let rerun = succeed(&mut family_sweep(&results));
    assert!(stderr(&rerun).contains(&format!("took over the lock of {named}, which is no longer running")), "{}", stderr(&rerun));
    assert!(stdout(&rerun).contains(&format!("{} units measured, {kept} already", 30 - kept)), "{}", stdout(&rerun));
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(std::fs::read(lock_path(&results)).unwrap().is_empty(), "released when done");

    // A holder on another host whose heartbeat stopped (a lost node): taken over after three beats.
    let remote = Holder { host: "node-that-died".into(), pid: 4242, beat_seconds: 1, beat: 17 };
    std::fs::write(lock_path(&results), serde_json::to_vec(&remote).unwrap()).unwrap();
    let start = Instant::now();
    let rerun = succeed(&mut family_sweep(&results));
    assert!(start.elapsed() >= Duration::from_secs(3), "watched its heartbeat for three beats");
    assert!(stderr(&rerun).contains("took over the lock of pid 4242 on host node-that-died, whose heartbeat stopped"), "{}", stderr(&rerun));
    assert!(stdout(&rerun).contains("0 units measured, 30 already"), "{}", stdout(&rerun));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// `perplex sweep status`'s rows: (checkpoint's last component, shard, measurement kind, state).
fn status_rows(output: &Output) -> Vec<(String, String, String, String)> {
    stdout(output)
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("failed:") && !l.contains(" units: "))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let step = cells[0].rsplit('/').next().unwrap().to_string();
            let kind = cells[2].split(':').next().unwrap().to_string();
            (step, cells[1].to_string(), kind, cells[3..].join(" "))
        })
        .collect()
}

#[test]
fn status_shows_done_missing_failed_and_stale_units_with_their_shards() {
    let dir = scratch("status");
    for step in ["step30", "step60", "step125", "step250", "step500"] {
        copy_dir(&repo().join("models/family/0.2M").join(step), &dir.join("run").join(step));
    }
    // step125 cannot be loaded: its units fail.
    let config = dir.join("run/step125/config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"llama\"", "\"no-such-family\"");
    std::fs::write(&config, text).unwrap();
    let data = dir.join("valid.txt");
    std::fs::copy(repo().join("models/default/heldout-small.txt"), &data).unwrap();
    let units = |command: &mut Command| {
        command.arg("--models").arg(dir.join("run/step*")).arg("--data").arg(&data);
        command.arg("--task").arg(repo().join("models/family/tasks/agreement.jsonl")).args(["--limit", "5", "--ctx", "64"]);
    };
    let shard0 = dir.join("shard-0.jsonl");
    let mut sweep = perplex();
    sweep.args(["sweep", "--shard", "0/2", "--out"]).arg(&shard0);
    units(&mut sweep);
    let output = sweep.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "step125 fails: {}", stderr(&output));
    assert!(stdout(&output).contains("4 units measured, 0 already"), "{}", stdout(&output));

    // step30 changes after it was measured.
    let tokenizer_config = dir.join("run/step30/tokenizer_config.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tokenizer_config).unwrap()).unwrap();
    value["model_max_length"] = 64.into();
    std::fs::write(&tokenizer_config, value.to_string()).unwrap();

    let status = || {
        let mut command = perplex();
        command.args(["sweep", "status"]).arg(&shard0).args(["--shard-count", "2"]);
        units(&mut command);
        succeed(&mut command)
    };
    let output = status();
    let row = |step: &str, shard: &str, kind: &str, state: &str| (step.to_string(), shard.to_string(), kind.to_string(), state.to_string());
    let expected = [
        row("step30", "0/2", "text", "stale (checkpoint changed)"),
        row("step30", "0/2", "task", "stale (checkpoint changed)"),
        row("step60", "1/2", "text", "missing"),
        row("step60", "1/2", "task", "missing"),
        row("step125", "0/2", "text", "failed"),
        row("step125", "0/2", "task", "failed"),
        row("step250", "1/2", "text", "missing"),
        row("step250", "1/2", "task", "missing"),
        row("step500", "0/2", "text", "done"),
        row("step500", "0/2", "task", "done"),
    ];
    assert_eq!(status_rows(&output), expected, "{}", stdout(&output));
    let report = stdout(&output);
    assert!(report.contains("no-such-family"), "the failure's error is shown: {report}");
    assert!(report.contains("10 units: 2 done, 4 missing, 2 failed, 2 stale"), "{report}");
    assert!(report.contains("left to do: shard 0/2: 4 units, shard 1/2: 4 units"), "{report}");

    // New validation text: the text unit of step500 is stale too.
    std::fs::write(&data, std::fs::read_to_string(&data).unwrap() + "And the LORD spake unto Moses, saying,\n").unwrap();
    let output = status();
    let rows = status_rows(&output);
    assert_eq!(rows[8], row("step500", "0/2", "text", "stale (data or settings changed)"), "{}", stdout(&output));
    assert_eq!(rows[9], row("step500", "0/2", "task", "done"));
    std::fs::remove_dir_all(&dir).unwrap();
}
