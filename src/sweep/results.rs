//! The results file: JSON Lines, one finished (checkpoint, measurement) unit a line, appended
//! and synced to disk the moment the unit finishes, so nothing finished is ever lost. A line cut
//! short by a crash is dropped when the file is next opened; when a unit is measured again (its
//! files changed), the newer line replaces the older one.

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

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::bad_input(format!("{}: cannot {what}: {e}", path.display()))
}

/// The records of a results file, the newest for each unit, in file order; and whether the file
/// needs rewriting (a cut line or replaced records). A line cut short by a crash (the last one,
/// without its newline) is dropped; any other unreadable line is an error.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<UnitRecord>, bool)> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::bad_input(format!("{}: not a perplex sweep results file (not UTF-8)", path.display())))?;
    let mut records: Vec<UnitRecord> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut rewrite = false;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if line.trim().is_empty() {
            rewrite = true;
            continue;
        }
        let record: UnitRecord = match serde_json::from_str(line) {
            Ok(record) => record,
            Err(_) if !line.ends_with('\n') => {
                rewrite = true; // cut short by a crash
                break;
            }
            Err(e) => {
                return Err(Error::bad_input(format!(
                    "{}:{}: not a perplex sweep record ({e}); move the file aside or remove the line",
                    path.display(),
                    number + 1
                )))
            }
        };
        match index.get(&record.key()) {
            Some(&i) => {
                records[i] = record;
                rewrite = true;
            }
            None => {
                index.insert(record.key(), records.len());
                records.push(record);
            }
        }
    }
    rewrite |= complete < text.len();
    Ok((records, rewrite))
}

/// Reads a results file (see [`parse`]) without changing it.
pub fn read_results(path: &Path) -> Result<Vec<UnitRecord>> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, "read", e))?;
    Ok(parse(path, &bytes)?.0)
}

fn to_lines(records: &[UnitRecord]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(|e| Error::internal(e.to_string()))?;
        out.push(b'\n');
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
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, "write", e))?;
    file.write_all(bytes).map_err(|e| io_error(&tmp, "write", e))?;
    file.sync_all().map_err(|e| io_error(&tmp, "write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, "write", e))?;
    sync_dir(path);
    Ok(())
}

/// A results file open for a sweep: locked against a second sweep writing to it, and appended to
/// one synced line per finished unit.
pub struct ResultsFile {
    path: PathBuf,
    file: std::fs::File,
    records: Vec<UnitRecord>,
    index: HashMap<(String, String), usize>,
}

impl ResultsFile {
    /// Opens (or creates) `path`, dropping a line cut short by a crash and older records of
    /// units measured again.
    pub fn open(path: &Path) -> Result<ResultsFile> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", e))?;
        }
        let file = Self::open_locked(path)?;
        let bytes = std::fs::read(path).map_err(|e| io_error(path, "read", e))?;
        let (records, rewrite) = parse(path, &bytes)?;
        let file = if rewrite {
            replace(path, &to_lines(&records)?)?;
            drop(file);
            Self::open_locked(path)?
        } else {
            file
        };
        let index = records.iter().enumerate().map(|(i, r)| (r.key(), i)).collect();
        Ok(ResultsFile { path: path.to_path_buf(), file, records, index })
    }

    fn open_locked(path: &Path) -> Result<std::fs::File> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io_error(path, "open", e))?;
        sync_dir(path);
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::bad_input(format!(
                "{}: another perplex sweep is writing to this file; give each job its own --out (then `perplex sweep merge`)",
                path.display()
            ))),
            // Some network file systems have no locks: go on without one.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => Ok(file),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(path, "lock", e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn records(&self) -> &[UnitRecord] {
        &self.records
    }

    pub fn get(&self, checkpoint: &str, measurement: &str) -> Option<&UnitRecord> {
        self.index.get(&(checkpoint.to_string(), measurement.to_string())).map(|&i| &self.records[i])
    }

    /// Appends one finished unit and syncs it to disk before returning.
    pub fn append(&mut self, record: UnitRecord) -> Result<()> {
        let mut line = serde_json::to_vec(&record).map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        let fail = |e| io_error(&self.path, "write", e);
        self.file.write_all(&line).map_err(fail)?;
        self.file.flush().map_err(fail)?;
        self.file.sync_data().map_err(fail)?;
        match self.index.get(&record.key()) {
            Some(&i) => self.records[i] = record,
            None => {
                self.index.insert(record.key(), self.records.len());
                self.records.push(record);
            }
        }
        Ok(())
    }

    /// Rewrites the file without replaced records, if it has any.
    pub fn compact(self) -> Result<()> {
        let bytes = std::fs::read(&self.path).map_err(|e| io_error(&self.path, "read", e))?;
        if parse(&self.path, &bytes)?.1 {
            replace(&self.path, &to_lines(&self.records)?)?;
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
    replace(out, &to_lines(&records)?)?;
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
        let mut text = to_lines(&[record("step1", "task:a", 0.3), record("step2", "task:a", 0.4), record("step1", "task:a", 0.5)]).unwrap();
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
}
