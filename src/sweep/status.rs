//! `perplex sweep status`: what a sweep has done and what a rerun (a requeued shard) still has to
//! do, per checkpoint and measurement, read from its results files and the fingerprints of the
//! files as they are now; no GPU, no model loaded.

use super::{checkpoint_hash, CheckpointRef, Measurement, Shard, Units};
use std::collections::BTreeMap;

/// Where a unit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Measured, with the checkpoint and the measurement's data and settings as they are now.
    Done,
    /// Never measured.
    Missing,
    /// The latest attempt failed (or the checkpoint cannot be read now), with why.
    Failed(String),
    /// Measured, but the checkpoint or the data or settings changed since: a rerun measures it again.
    Stale { checkpoint_changed: bool, data_changed: bool },
}

impl State {
    /// One word: done, missing, failed or stale.
    pub fn name(&self) -> &'static str {
        match self {
            State::Done => "done",
            State::Missing => "missing",
            State::Failed(_) => "failed",
            State::Stale { .. } => "stale",
        }
    }

    /// Whether a rerun of the sweep has work to do on the unit.
    pub fn to_do(&self) -> bool {
        *self != State::Done
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Stale { checkpoint_changed: true, data_changed: true } => f.write_str("stale (checkpoint and data changed)"),
            State::Stale { checkpoint_changed: true, .. } => f.write_str("stale (checkpoint changed)"),
            State::Stale { .. } => f.write_str("stale (data or settings changed)"),
            other => f.write_str(other.name()),
        }
    }
}

/// One unit: a checkpoint, a measurement, the shard that measures it, and where it stands.
#[derive(Debug, Clone)]
pub struct UnitStatus {
    pub checkpoint: String,
    pub measurement: String,
    pub shard: Shard,
    pub state: State,
}

/// Every unit of a sweep over `checkpoints` and `measurements`, in the sweep's order, against
/// the results in `units`; shards as `--shard K/<shard_count>` (or `--shard auto` in an array of
/// that many tasks) assigns them.
pub fn status(checkpoints: &[CheckpointRef], measurements: &[Measurement], units: &Units, shard_count: usize) -> Vec<UnitStatus> {
    let mut all = Vec::new();
    for (position, checkpoint) in checkpoints.iter().enumerate() {
        let shard = Shard { index: position % shard_count, count: shard_count };
        let model_hash = checkpoint_hash(checkpoint);
        for m in measurements {
            let state = match &model_hash {
                Err(error) => State::Failed(error.to_string()),
                Ok(hash) => match (units.get(&checkpoint.id, &m.key), units.failure(&checkpoint.id, &m.key)) {
                    (Some(record), _) if record.matches(hash, &m.hash) => State::Done,
                    (_, Some(failure)) => State::Failed(failure.error.clone()),
                    (Some(record), None) => {
                        State::Stale { checkpoint_changed: &record.model_hash != hash, data_changed: record.measurement_hash != m.hash }
                    }
                    (None, None) => State::Missing,
                },
            };
            all.push(UnitStatus { checkpoint: checkpoint.id.clone(), measurement: m.key.clone(), shard, state });
        }
    }
    all
}

/// How many finished units of `units` are none of `statuses`: results of other checkpoints or
/// measurements, or of the same ones named otherwise (a relative path where the sweep was given
/// an absolute one), which status cannot count.
pub fn unmatched(units: &Units, statuses: &[UnitStatus]) -> usize {
    let known: std::collections::HashSet<(&str, &str)> = statuses.iter().map(|u| (u.checkpoint.as_str(), u.measurement.as_str())).collect();
    units.records().iter().filter(|r| !known.contains(&(r.checkpoint.as_str(), r.measurement.as_str()))).count()
}

/// The units as a table, one a line (the shard column where there are shards), then the
/// failures' errors, the count of each state, and what each shard still has to do.
pub fn table(units: &[UnitStatus]) -> String {
    let sharded = units.iter().any(|u| u.shard.count > 1);
    let width = |column: fn(&UnitStatus) -> usize, title: &str| units.iter().map(column).chain([title.len()]).max().unwrap_or(0);
    let checkpoint_width = width(|u| u.checkpoint.len(), "checkpoint");
    let measurement_width = width(|u| u.measurement.len(), "measurement");
    let shard_width = width(|u| u.shard.to_string().len(), "shard");
    let row = |checkpoint: &str, shard: &str, measurement: &str, state: &str| {
        let shard = if sharded { format!("{shard:shard_width$}  ") } else { String::new() };
        format!("{checkpoint:checkpoint_width$}  {shard}{measurement:measurement_width$}  {state}").trim_end().to_string() + "\n"
    };
    let mut out = row("checkpoint", "shard", "measurement", "state");
    for u in units {
        out += &row(&u.checkpoint, &u.shard.to_string(), &u.measurement, &u.state.to_string());
    }
    for u in units {
        if let State::Failed(error) = &u.state {
            out += &format!("failed: {} {}: {error}\n", u.checkpoint, u.measurement);
        }
    }
    let count = |name: &str| units.iter().filter(|u| u.state.name() == name).count();
    out += &format!(
        "{} units: {} done, {} missing, {} failed, {} stale\n",
        units.len(),
        count("done"),
        count("missing"),
        count("failed"),
        count("stale")
    );
    let mut left: BTreeMap<usize, (Shard, usize)> = BTreeMap::new();
    for u in units.iter().filter(|u| u.state.to_do()) {
        left.entry(u.shard.index).or_insert((u.shard, 0)).1 += 1;
    }
    if left.is_empty() {
        out += "nothing left to do\n";
    } else if sharded {
        let shards: Vec<String> = left.values().map(|(shard, n)| format!("shard {shard}: {n} units")).collect();
        out += &format!("left to do: {}\n", shards.join(", "));
    }
    out
}
