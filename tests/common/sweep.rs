//! Helpers for the tests of `perplex sweep` on the shipped checkpoint family (models/family): the
//! checkpoints and measurements they sweep, and how they compare results files.

use super::cli::perplex_command;
use super::repo;
use perplex::sweep::UnitRecord;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Two sizes of the family, an early and a late checkpoint each.
pub fn four_checkpoints() -> Vec<PathBuf> {
    ["0.2M/step30", "0.2M/step500", "0.9M/step30", "0.9M/step500"].iter().map(|c| repo().join("models/family").join(c)).collect()
}

/// Every checkpoint of the family (15), as the pattern `perplex sweep` expands itself.
pub fn every_checkpoint() -> PathBuf {
    repo().join("models/family/*/step*")
}

/// The held-out text every sweep test measures.
pub fn small_text() -> PathBuf {
    repo().join("models/default/heldout-small.txt")
}

/// The task every sweep test measures (the first 20 items).
pub fn agreement_task() -> PathBuf {
    repo().join("models/family/tasks/agreement.jsonl")
}

/// The options after `--models`: the small held-out text and 20 agreement items, at ctx 64.
pub fn measurement_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--data".into(), small_text().into(), "--task".into(), agreement_task().into()];
    args.extend(["--limit", "20", "--ctx", "64"].map(OsString::from));
    args
}

/// `perplex sweep --models CHECKPOINTS... <measurement_args> --out OUT`
pub fn sweep_command(checkpoints: impl IntoIterator<Item = impl AsRef<OsStr>>, out: &Path) -> Command {
    let mut command = perplex_command();
    command.arg("sweep").arg("--models").args(checkpoints).args(measurement_args()).arg("--out").arg(out);
    command
}

/// Records by unit, without the timing, which differs between runs.
pub fn comparable(records: &[UnitRecord]) -> BTreeMap<(String, String), serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let mut value = serde_json::to_value(r).unwrap();
            value.as_object_mut().unwrap().remove("seconds");
            (r.key(), value)
        })
        .collect()
}

/// The unit of every line of a results file (to count duplicates).
pub fn line_units(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str::<UnitRecord>(l).unwrap().key()).collect()
}

/// A results file of `units` lines, each unit once.
pub fn assert_each_unit_once(path: &Path, units: usize) {
    let mut keys = line_units(path);
    assert_eq!(keys.len(), units, "{}: {} lines", path.display(), keys.len());
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), units, "{}: a unit appears twice", path.display());
}
