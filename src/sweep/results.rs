//! The results file: JSON Lines, one finished (checkpoint, measurement) unit a line, appended
//! and synced to disk the moment the unit finishes, so nothing finished is ever lost. A line cut
//! short by a crash is dropped when the file is next opened; when a unit is measured again (its
//! files changed), the newer line replaces the older one.

use super::lock::Lock;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One metric of one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<f64>,
    /// The value random guessing is expected to get (multiple choice: from the number of choices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lower_is_better: bool,
}

/// What perplexity scoring of a text measurement counted, so losses can be pooled over files.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TextCounts {
    pub nll: f64,
    pub tokens: usize,
    pub bytes: usize,
    pub words: usize,
}

/// One finished unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub checkpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub run: String,
    pub step: Option<u64>,
    pub parameters: u64,
    /// `text:<path>` or `task:<name>`.
    pub measurement: String,
    /// Fingerprints of the checkpoint's files and of the measurement (data and settings).
    pub model_hash: String,
    pub measurement_hash: String,
    pub metrics: BTreeMap<String, Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextCounts>,
    pub seconds: f64,
}

impl UnitRecord {
    pub fn key(&self) -> (String, String) {
        (self.checkpoint.clone(), self.measurement.clone())
    }

    /// Whether this record is a finished measurement of exactly these files and settings.
    pub fn matches(&self, model_hash: &str, measurement_hash: &str) -> bool {
        self.model_hash == model_hash && self.measurement_hash == measurement_hash
    }
}

/// A failed attempt at a unit: why, and the fingerprints it was tried with. `sweep status` shows
/// it; the next run tries the unit again, and its record, once finished, supersedes this line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitFailure {
    pub checkpoint: String,
    pub measurement: String,
    /// None where the checkpoint's files could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_hash: Option<String>,
    pub measurement_hash: String,
    pub error: String,
}

impl UnitFailure {
    pub fn key(&self) -> (String, String) {
        (self.checkpoint.clone(), self.measurement.clone())
    }
}

/// What a results file holds: the newest record of each finished unit, in file order, and the
/// units whose latest attempt failed.
#[derive(Debug, Clone, Default)]
pub struct Units {
    records: Vec<UnitRecord>,
    index: HashMap<(String, String), usize>,
    failures: Vec<UnitFailure>,
}

impl Units {
    pub fn records(&self) -> &[UnitRecord] {
        &self.records
    }

    pub fn into_records(self) -> Vec<UnitRecord> {
        self.records
    }

    /// Units whose latest attempt failed.
    pub fn failures(&self) -> &[UnitFailure] {
        &self.failures
    }

    pub fn get(&self, checkpoint: &str, measurement: &str) -> Option<&UnitRecord> {
        self.index.get(&(checkpoint.to_string(), measurement.to_string())).map(|&i| &self.records[i])
    }

    pub fn failure(&self, checkpoint: &str, measurement: &str) -> Option<&UnitFailure> {
        self.failures.iter().find(|f| f.checkpoint == checkpoint && f.measurement == measurement)
    }

    /// Adds a finished unit; true if it supersedes a line (an older record, a failure).
    fn add_record(&mut self, record: UnitRecord) -> bool {
        let key = record.key();
        let superseded = self.remove_failure(&key);
        match self.index.get(&key) {
            Some(&i) => {
                self.records[i] = record;
                true
            }
            None => {
                self.index.insert(key, self.records.len());
                self.records.push(record);
                superseded
            }
        }
    }

    /// Adds a failed unit; true if it supersedes an older failure of the unit.
    fn add_failure(&mut self, failure: UnitFailure) -> bool {
        let superseded = self.remove_failure(&failure.key());
        self.failures.push(failure);
        superseded
    }

    fn remove_failure(&mut self, key: &(String, String)) -> bool {
        let before = self.failures.len();
        self.failures.retain(|f| &f.key() != key);
        self.failures.len() < before
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::bad_input(format!("{}: cannot {what}: {e}", path.display()))
}

/// One line of a results file: a finished unit, or a failed attempt (it has an `error`).
enum Line {
    Finished(UnitRecord),
    Failed(UnitFailure),
}

fn parse_line(line: &str) -> serde_json::Result<Line> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    if value.get("error").is_some() {
        serde_json::from_value(value).map(Line::Failed)
    } else {
        serde_json::from_value(value).map(Line::Finished)
    }
}

/// A results file read: its units, how many of its bytes are whole lines (a line cut short by a
/// crash is the rest), and whether lines were superseded (a unit measured again, a failure
/// followed by success) so that rewriting would shorten it.
struct Parsed {
    units: Units,
    whole: usize,
    superseded: bool,
}

/// Reads a results file's text. A line cut short by a crash (the last one, without its newline)
/// is dropped; any other unreadable line is an error.
fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::bad_input(format!("{}: not a perplex sweep results file (not UTF-8)", path.display())))?;
    let mut units = Units::default();
    let mut superseded = false;
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    for (number, line) in text[..whole].split_inclusive('\n').enumerate() {
        if line.trim().is_empty() {
            superseded = true;
            continue;
        }
        match parse_line(line) {
            Ok(Line::Finished(record)) => superseded |= units.add_record(record),
            Ok(Line::Failed(failure)) => superseded |= units.add_failure(failure),
            Err(e) => {
                return Err(Error::bad_input(format!(
                    "{}:{}: not a perplex sweep record ({e}); move the file aside or remove the line",
                    path.display(),
                    number + 1
                )))
            }
        }
    }
    Ok(Parsed { units, whole, superseded })
}

/// Reads a results file's units (see [`parse`]) without changing it.
pub fn read_units(path: &Path) -> Result<Units> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, "read", e))?;
    Ok(parse(path, &bytes)?.units)
}

/// Reads several results files (shards) as one: where two have a line for a unit, the later
/// file's wins, as in [`merge`].
pub fn read_all_units(paths: &[PathBuf]) -> Result<Units> {
    let mut all = Units::default();
    for path in paths {
        let units = read_units(path)?;
        for record in units.records {
            all.add_record(record);
        }
        for failure in units.failures {
            all.add_failure(failure);
        }
    }
    Ok(all)
}

/// Reads a results file's finished units (see [`parse`]) without changing it.
pub fn read_results(path: &Path) -> Result<Vec<UnitRecord>> {
    Ok(read_units(path)?.into_records())
}

/// The lines of a results file: records, then failures (which a record of the same unit after
/// them would supersede).
fn to_lines(records: &[UnitRecord], failures: &[UnitFailure]) -> Result<Vec<u8>> {
    fn line(out: &mut Vec<u8>, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut *out, value).map_err(|e| Error::internal(e.to_string()))?;
        out.push(b'\n');
        Ok(())
    }
    let mut out = Vec::new();
    for record in records {
        line(&mut out, record)?;
    }
    for failure in failures {
        line(&mut out, failure)?;
    }
    Ok(out)
}

/// Syncs a directory, so that a file created or renamed in it survives a crash.
fn sync_dir(path: &Path) {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, synced, then renamed.
/// Where that fails (a full disk), `path` is left as it was and the temporary file removed.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_error(path, e, "it is left as it was"));
    }
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, "write", e))?;
    sync_dir(path);
    Ok(())
}

/// A failed write, said plainly when the disk is full, with what became of the file.
fn write_error(path: &Path, e: std::io::Error, kept: &str) -> Error {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    let cause = match e.kind() {
        StorageFull | QuotaExceeded => format!("the disk is full ({e})"),
        _ => format!("cannot write ({e})"),
    };
    Error::bad_input(format!("{}: {cause}; {kept}. Free some space and rerun the same command to measure the rest", path.display()))
}

/// A results file open for a sweep: locked against a second sweep writing to it (see
/// [`super::lock`]), and appended to one synced line per finished or failed unit.
pub struct ResultsFile {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes of whole lines: where a write that fails is cut back to.
    len: u64,
    units: Units,
    lock: Lock,
}

impl ResultsFile {
    /// Opens (or creates) `path`, dropping a line cut short by a crash and older lines of units
    /// measured again.
    pub fn open(path: &Path) -> Result<ResultsFile> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", e))?;
        }
        let lock = Lock::acquire(path)?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io_error(path, "open", e))?;
        sync_dir(path);
        let bytes = std::fs::read(path).map_err(|e| io_error(path, "read", e))?;
        let Parsed { units, whole, superseded } = parse(path, &bytes)?;
        let file = if superseded {
            replace(path, &to_lines(&units.records, &units.failures)?)?;
            std::fs::OpenOptions::new().append(true).open(path).map_err(|e| io_error(path, "open", e))?
        } else {
            // Only a cut last line: cutting it off needs no space, where a rewrite needs a copy.
            if whole < bytes.len() {
                file.set_len(whole as u64).map_err(|e| io_error(path, "truncate", e))?;
                file.sync_data().map_err(|e| io_error(path, "truncate", e))?;
            }
            file
        };
        let len = file.metadata().map_err(|e| io_error(path, "read", e))?.len();
        Ok(ResultsFile { path: path.to_path_buf(), file, len, units, lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn records(&self) -> &[UnitRecord] {
        self.units.records()
    }

    pub fn get(&self, checkpoint: &str, measurement: &str) -> Option<&UnitRecord> {
        self.units.get(checkpoint, measurement)
    }

    /// Appends one finished unit and syncs it to disk before returning.
    pub fn append(&mut self, record: UnitRecord) -> Result<()> {
        self.write_line(serde_json::to_vec(&record))?;
        self.units.add_record(record);
        Ok(())
    }

    /// Appends one failed unit (a rerun tries it again) and syncs it to disk.
    pub fn append_failure(&mut self, failure: UnitFailure) -> Result<()> {
        self.write_line(serde_json::to_vec(&failure))?;
        self.units.add_failure(failure);
        Ok(())
    }

    /// Writes one whole line or nothing: a write cut short (a full disk) is cut off again at
    /// once, so the file stays whole lines for readers (`status`, `merge`) and for the rerun.
    fn write_line(&mut self, line: serde_json::Result<Vec<u8>>) -> Result<()> {
        if let Some(error) = self.lock.lost() {
            return Err(error);
        }
        let mut line = line.map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        let written = self.file.write_all(&line).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let cut = self.file.set_len(self.len).and_then(|()| self.file.sync_data());
            let kept = match cut {
                Ok(()) => format!("the {} units written before are kept, whole", self.units.records.len()),
                Err(_) => format!("the {} units written before are kept; the cut line is dropped when the file is next opened", self.units.records.len()),
            };
            return Err(write_error(&self.path, e, &kept));
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// Rewrites the file without superseded lines, if it has any.
    pub fn compact(self) -> Result<()> {
        let bytes = std::fs::read(&self.path).map_err(|e| io_error(&self.path, "read", e))?;
        if parse(&self.path, &bytes)?.superseded {
            replace(&self.path, &to_lines(&self.units.records, &self.units.failures)?)?;
        }
        Ok(())
    }
}

/// Canonical order of records: by run, step and checkpoint (natural order), then measurement.
pub fn sort_records(records: &mut [UnitRecord]) {
    use super::checkpoints::natural_cmp;
    records.sort_by(|a, b| {
        natural_cmp(&a.run, &b.run)
            .then_with(|| a.step.is_none().cmp(&b.step.is_none()))
            .then_with(|| a.step.cmp(&b.step))
            .then_with(|| natural_cmp(&a.checkpoint, &b.checkpoint))
            .then_with(|| a.measurement.cmp(&b.measurement))
    });
}

/// What `merge` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSummary {
    pub records: usize,
    /// Units found in more than one input (the later input's record is kept).
    pub duplicates: usize,
}

/// Combines results files (shards) into `out`, one record per unit (where several inputs have
/// one, the later input wins), in canonical order. `out` may be one of the inputs.
pub fn merge(out: &Path, inputs: &[PathBuf]) -> Result<MergeSummary> {
    if inputs.is_empty() {
        return Err(Error::bad_input("perplex sweep merge OUT SHARD...: name at least one shard file"));
    }
    let mut merged: BTreeMap<(String, String), UnitRecord> = BTreeMap::new();
    let mut duplicates = 0;
    for input in inputs {
        for record in read_results(input)? {
            duplicates += merged.insert(record.key(), record).is_some() as usize;
        }
    }
    let mut records: Vec<UnitRecord> = merged.into_values().collect();
    sort_records(&mut records);
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", e))?;
    }
    replace(out, &to_lines(&records, &[])?)?;
    Ok(MergeSummary { records: records.len(), duplicates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(checkpoint: &str, measurement: &str, value: f64) -> UnitRecord {
        UnitRecord {
            checkpoint: checkpoint.into(),
            revision: None,
            run: "run".into(),
            step: checkpoint.trim_start_matches("step").parse().ok(),
            parameters: 1000,
            measurement: measurement.into(),
            model_hash: "m".into(),
            measurement_hash: "d".into(),
            metrics: [("acc".to_string(), Metric { value, stderr: None, chance: Some(0.25), lower_is_better: false })].into(),
            text: None,
            seconds: 0.5,
        }
    }

    #[test]
    fn a_cut_line_is_dropped_and_a_newer_record_wins() {
        let dir = std::env::temp_dir().join(format!("perplex-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let mut text = Vec::new();
        for line in [record("step1", "task:a", 0.3), record("step2", "task:a", 0.4), record("step1", "task:a", 0.5)] {
            text.extend(serde_json::to_vec(&line).unwrap());
            text.push(b'\n');
        }
        text.extend_from_slice(b"{\"checkpoint\":\"step3\",\"run");
        std::fs::write(&path, &text).unwrap();
        let mut file = ResultsFile::open(&path).unwrap();
        assert_eq!(file.records().len(), 2);
        assert_eq!(file.get("step1", "task:a").unwrap().metrics["acc"].value, 0.5);
        // The file was rewritten whole, and appends land on lines of their own.
        file.append(record("step3", "task:a", 0.6)).unwrap();
        assert!(ResultsFile::open(&path).is_err(), "locked by the first");
        drop(file);
        let again = read_results(&path).unwrap();
        assert_eq!(again.iter().map(|r| r.checkpoint.as_str()).collect::<Vec<_>>(), ["step1", "step2", "step3"]);
        // A broken line in the middle is an error, not silently skipped.
        std::fs::write(&path, b"{}\n{\"x\":1}\n").unwrap();
        assert!(read_results(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failures_are_kept_until_the_unit_is_measured() {
        let dir = std::env::temp_dir().join(format!("perplex-results-failures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let failure = |checkpoint: &str| UnitFailure {
            checkpoint: checkpoint.into(),
            measurement: "task:a".into(),
            model_hash: None,
            measurement_hash: "d".into(),
            error: "config.json: missing".into(),
        };
        let mut file = ResultsFile::open(&path).unwrap();
        file.append(record("step1", "task:a", 0.3)).unwrap();
        file.append_failure(failure("step2")).unwrap();
        file.append_failure(failure("step3")).unwrap();
        file.append(record("step3", "task:a", 0.4)).unwrap();
        file.compact().unwrap();
        let units = read_units(&path).unwrap();
        assert_eq!(units.records().len(), 2);
        assert_eq!(units.failures(), [failure("step2")], "step3's failure superseded by its record");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3, "compacted");
        // Shards read together: a later file's record supersedes an earlier file's failure.
        let other = dir.join("s.jsonl");
        let mut file = ResultsFile::open(&other).unwrap();
        file.append(record("step2", "task:a", 0.5)).unwrap();
        drop(file);
        let all = read_all_units(&[path.clone(), other]).unwrap();
        assert_eq!((all.records().len(), all.failures().len()), (3, 0));
        assert_eq!(read_results(&path).unwrap().len(), 2, "failures are no results");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
