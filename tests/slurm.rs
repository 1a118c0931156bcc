//! `perplex sweep` as a Slurm job array on a real (one-node) cluster, submitted with the README's
//! files (`examples/slurm/sweep.sbatch` and `merge.sbatch`): three array tasks over the shipped
//! family, merged and reported by a job that depends on them (`afterok`), equal to an unsharded
//! sweep unit for unit; then again with one task cancelled mid-run (`scancel`) and requeued
//! (`scontrol requeue`): the requeued task takes over its dead predecessor's lock, measures only
//! what is missing, and the merge has every unit once.
//!
//! Needs a Slurm cluster: `tests/slurm/start-cluster` (as root) starts one on this machine; the
//! cluster tests run where `PERPLEX_SLURM` is set and are skipped, with a notice, elsewhere.

mod common;

use common::repo;
use common::sweep::{assert_each_unit_once, comparable, every_checkpoint, measurement_args, sweep_command};
use perplex::sweep::lock::{lock_path, Holder};
use perplex::sweep;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Array tasks, and the checkpoints each measures (15 in the family) times 2 measurements.
const TASKS: usize = 3;
const UNITS_PER_TASK: usize = 15 / TASKS * 2;

fn slurm_available(test: &str) -> bool {
    if std::env::var_os("PERPLEX_SLURM").is_none() {
        eprintln!("SKIPPED {test}: PERPLEX_SLURM is not set (start a cluster with tests/slurm/start-cluster as root, then set it)");
        return false;
    }
    if Command::new("sbatch").arg("--version").output().is_err() {
        eprintln!("SKIPPED {test}: PERPLEX_SLURM is set but sbatch is not on PATH");
        return false;
    }
    true
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("perplex-slurm-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn succeed(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?} failed: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The sweep options of the Slurm jobs: every checkpoint of the family, measured as the
/// unsharded reference measures them.
fn sweep_options() -> Vec<String> {
    ["--models".into(), every_checkpoint().into()]
        .into_iter()
        .chain(measurement_args())
        .map(|arg| arg.into_string().unwrap())
        .collect()
}

/// Submits and watches jobs from a scratch directory (where their output files go), with the
/// test's perplex first on PATH; cancels whatever it submitted when dropped.
struct Cluster {
    dir: PathBuf,
    jobs: Vec<String>,
}

impl Cluster {
    fn new(dir: &Path) -> Cluster {
        Cluster { dir: dir.to_path_buf(), jobs: Vec::new() }
    }

    fn command(&self, program: &str) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_perplex")).parent().unwrap().to_path_buf();
        let path = std::env::join_paths([bin].into_iter().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))).unwrap();
        let mut command = Command::new(program);
        command.current_dir(&self.dir).env("PATH", path);
        command
    }

    /// `sbatch --parsable ARGS...`: the job id.
    fn sbatch(&mut self, args: &[&str]) -> String {
        let id = succeed(self.command("sbatch").arg("--parsable").args(args));
        let id = id.split(';').next().unwrap().to_string();
        self.jobs.push(id.clone());
        id
    }

    fn scontrol(&self, args: &[&str]) -> String {
        succeed(self.command("scontrol").args(args))
    }

    /// `JobState` and `Reason` of a job (one task of an array: `J_K`).
    fn state(&self, job: &str) -> (String, String) {
        let shown = self.scontrol(&["show", "job", "-o", job]);
        let field = |name: &str| {
            shown.split_whitespace().find_map(|f| f.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
        };
        (field("JobState"), field("Reason"))
    }

    /// Waits for a job to complete; fails with the jobs' output where it ends otherwise.
    fn wait_completed(&self, job: &str) {
        let start = Instant::now();
        loop {
            let (state, reason) = self.state(job);
            match state.as_str() {
                "COMPLETED" => return,
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" if reason != "DependencyNeverSatisfied" => {}
                _ => panic!("job {job}: {state} ({reason})\n{}", self.outputs()),
            }
            assert!(start.elapsed() < Duration::from_secs(300), "job {job} still {state} ({reason}) after 5 minutes\n{}", self.outputs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every job output file of the scratch directory, for failure messages.
    fn outputs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "out") {
                all += &format!("--- {}\n{}\n", path.display(), std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.jobs.is_empty() {
            let _ = Command::new("scancel").args(&self.jobs).status();
        }
    }
}

fn sweep_sbatch() -> String {
    repo().join("examples/slurm/sweep.sbatch").display().to_string()
}

fn merge_sbatch() -> String {
    repo().join("examples/slurm/merge.sbatch").display().to_string()
}

/// The unsharded sweep the merged shards must equal.
fn reference(dir: &Path) -> BTreeMap<(String, String), serde_json::Value> {
    let whole = dir.join("whole.jsonl");
    let output = sweep_command([every_checkpoint()], &whole).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    comparable(&sweep::read_results(&whole).unwrap())
}

#[test]
fn an_array_job_and_its_merge_equal_an_unsharded_sweep() {
    if !slurm_available("slurm array") {
        return;
    }
    let dir = scratch("array");
    let reference = reference(&dir);
    assert_eq!(reference.len(), TASKS * UNITS_PER_TASK);
    let mut cluster = Cluster::new(&dir);
    let out = dir.join("results").display().to_string();
    let array: Vec<String> = [format!("--array=0-{}", TASKS - 1), sweep_sbatch(), out.clone()].into_iter().chain(sweep_options()).collect();
    let job = cluster.sbatch(&array.iter().map(String::as_str).collect::<Vec<_>>());
    let merge = cluster.sbatch(&[&format!("--dependency=afterok:{job}"), &merge_sbatch(), &out]);
    cluster.wait_completed(&merge);

    let results = dir.join("results");
    for k in 0..TASKS {
        assert_each_unit_once(&results.join(format!("shard-{k}.jsonl")), UNITS_PER_TASK);
    }
    assert_each_unit_once(&results.join("results.jsonl"), reference.len());
    assert_eq!(comparable(&sweep::read_results(&results.join("results.jsonl")).unwrap()), reference);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("report.json")).unwrap()).unwrap();
    assert!(report["metrics"].as_array().is_some_and(|m| !m.is_empty()), "{report}");
    assert!(results.join("plots/loss.svg").exists());

    // Status over the shards: all done.
    let shards: Vec<PathBuf> = (0..TASKS).map(|k| results.join(format!("shard-{k}.jsonl"))).collect();
    let status = succeed(
        Command::new(env!("CARGO_BIN_EXE_perplex")).args(["sweep", "status"]).args(&shards).args(sweep_options()).args(["--shard-count", "3"]),
    );
    assert!(status.contains(&format!("{0} units: {0} done", reference.len())) && status.contains("nothing left to do"), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_task_cancelled_mid_run_and_requeued_loses_and_repeats_nothing() {
    if !slurm_available("slurm requeue") {
        return;
    }
    let dir = scratch("requeue");
    let reference = reference(&dir);
    let mut cluster = Cluster::new(&dir);
    let out = dir.join("results").display().to_string();
    let array: Vec<String> = [format!("--array=0-{}", TASKS - 1), sweep_sbatch(), out.clone()].into_iter().chain(sweep_options()).collect();
    let job = cluster.sbatch(&array.iter().map(String::as_str).collect::<Vec<_>>());
    let merge = cluster.sbatch(&[&format!("--dependency=afterok:{job}"), &merge_sbatch(), &out]);

    // Task 1 is cancelled once two of its units are on disk, in the middle of the third.
    let shard1 = dir.join("results/shard-1.jsonl");
    let lines = || std::fs::read_to_string(&shard1).map_or(0, |t| t.lines().count());
    let start = Instant::now();
    while lines() < 2 {
        assert!(start.elapsed() < Duration::from_secs(180), "task 1 wrote no units\n{}", cluster.outputs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let task1 = format!("{job}_1");
    let holder: Holder = serde_json::from_slice(&std::fs::read(lock_path(&shard1)).unwrap()).unwrap();
    succeed(cluster.command("scancel").arg(&task1));
    // Slurm says CANCELLED before the processes are gone; the sweep is gone when its pid is.
    let start = Instant::now();
    while Path::new("/proc").join(holder.pid.to_string()).exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "task 1 (pid {}) still running: {:?}", holder.pid, cluster.state(&task1));
        std::thread::sleep(Duration::from_millis(100));
    }
    while cluster.state(&task1).0 != "CANCELLED" {
        assert!(start.elapsed() < Duration::from_secs(60), "task 1: {:?}", cluster.state(&task1));
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = lines();
    assert!((2..UNITS_PER_TASK).contains(&kept), "task 1 kept {kept} units");

    // What a requeue has to do, by `sweep status`: the rest of shard 1.
    let status = succeed(
        Command::new(env!("CARGO_BIN_EXE_perplex")).args(["sweep", "status"]).arg(&shard1).args(sweep_options()).args(["--shard-count", "3"]),
    );
    assert!(status.contains(&format!("shard 1/3: {} units", UNITS_PER_TASK - kept)), "{status}");

    // Requeued. A cancelled task fails `afterok` for good, even once it has run again, so the
    // merge waits for the tasks one by one instead (README).
    cluster.scontrol(&["requeue", &task1]);
    let tasks: Vec<String> = (0..TASKS).map(|k| format!("{job}_{k}")).collect();
    cluster.scontrol(&["update", &format!("JobId={merge}"), &format!("Dependency=afterok:{}", tasks.join(":"))]);
    cluster.wait_completed(&merge);

    let task_output = std::fs::read_to_string(dir.join(format!("slurm-{job}_1.out"))).unwrap();
    assert!(task_output.contains("which is no longer running"), "the requeued task takes over the dead one's lock:\n{task_output}");
    assert!(task_output.contains(&format!("{} units measured, {kept} already", UNITS_PER_TASK - kept)), "{task_output}");
    assert_each_unit_once(&shard1, UNITS_PER_TASK);
    let merged = dir.join("results/results.jsonl");
    assert_each_unit_once(&merged, reference.len());
    assert_eq!(comparable(&sweep::read_results(&merged).unwrap()), reference);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README shows the Slurm files the tests submit, verbatim.
#[test]
fn the_readme_shows_the_submitted_files() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for file in ["examples/slurm/sweep.sbatch", "examples/slurm/merge.sbatch"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        assert!(readme.contains(&format!("`{file}`")) && readme.contains(&text), "README.md must show {file} as it is");
    }
}
