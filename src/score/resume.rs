//! `--resume FILE`: a JSON Lines log of finished work, appended (and synced) as it finishes, so a
//! killed or interrupted run continues without redoing or duplicating it. The first line (the
//! header) records what every entry depends on; a log written under another header is refused.
//! `perplex ppl` logs one line per document ([`Finished`]), `perplex eval` one per request
//! (`loglik::ScoredRequest`).

use super::{DocumentResult, TokenRecord};
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// One line of a resume log after the header.
pub trait Entry: Serialize + DeserializeOwned {
    /// What identifies the work an entry stands for: a run looks entries up by it.
    type Key: Eq + std::hash::Hash;
    /// What the entries are, for messages ("documents", "requests").
    const NAME: &'static str;
    fn key(&self) -> Self::Key;
}

/// A resume log open for appending, with the entries it already holds.
pub struct ResumeLog<H, E: Entry> {
    path: PathBuf,
    file: std::fs::File,
    done: HashMap<E::Key, E>,
    header: std::marker::PhantomData<H>,
}

impl<H, E> ResumeLog<H, E>
where
    H: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    E: Entry,
{
    /// Opens (or starts) the log at `path` for a run described by `header`. A line cut short by a
    /// crash ends the log: it and anything after it are dropped, to be written again.
    pub fn open(path: &Path, header: &H) -> Result<Self> {
        let fail = |e: std::io::Error| Error::bad_input(format!("{}: {e}", path.display()));
        let mut done = HashMap::new();
        let mut valid_len = 0u64;
        if path.exists() {
            let reader = std::io::BufReader::new(std::fs::File::open(path).map_err(fail)?);
            for (i, line) in reader.split(b'\n').enumerate() {
                let line = line.map_err(fail)?;
                let parsed = std::str::from_utf8(&line).ok();
                if i == 0 {
                    let found: Option<H> = parsed.and_then(|l| serde_json::from_str(l).ok());
                    match found {
                        Some(found) if &found == header => {}
                        Some(found) => {
                            return Err(Error::bad_input(format!(
                                "{}: written by a run with other settings ({found:?}); use a new --resume file for {header:?}",
                                path.display()
                            )))
                        }
                        None => {
                            return Err(Error::bad_input(format!(
                                "{}: not a perplex resume file of this command (its first line is not like {header:?}); \
                                 use a new --resume file",
                                path.display()
                            )))
                        }
                    }
                } else {
                    let Some(entry) = parsed.and_then(|l| serde_json::from_str::<E>(l).ok()) else { break };
                    done.insert(entry.key(), entry);
                }
                valid_len += line.len() as u64 + 1;
            }
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(fail)?;
        if valid_len == 0 {
            file.set_len(0).map_err(fail)?;
            let line = serde_json::to_string(header).map_err(|e| Error::internal(e.to_string()))?;
            writeln!(file, "{line}").map_err(fail)?;
        } else {
            file.set_len(valid_len.min(std::fs::metadata(path).map_err(fail)?.len())).map_err(fail)?;
        }
        file.sync_data().map_err(fail)?;
        Ok(ResumeLog { path: path.to_path_buf(), file, done, header: std::marker::PhantomData })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &E::Key) -> Option<&E> {
        self.done.get(key)
    }

    pub fn finished(&self) -> usize {
        self.done.len()
    }

    /// Appends and syncs one entry: a whole line or nothing (a write cut short by a full disk is
    /// cut off again at once, so the entries before it stay readable).
    pub fn append(&mut self, entry: E) -> Result<()> {
        self.append_all(vec![entry])
    }

    /// Appends entries with one write and one sync (a sync per entry would cost more than scoring
    /// it, on network file systems above all): all their lines or none.
    pub fn append_all(&mut self, entries: Vec<E>) -> Result<()> {
        let mut lines = Vec::new();
        for entry in &entries {
            serde_json::to_writer(&mut lines, entry).map_err(|e| Error::internal(e.to_string()))?;
            lines.push(b'\n');
        }
        let fail = |e: std::io::Error| Error::bad_input(format!("{}: cannot write: {e}", self.path.display()));
        let before = self.file.metadata().map_err(fail)?.len();
        if let Err(e) = self.file.write_all(&lines).and_then(|()| self.file.sync_data()) {
            let _ = self.file.set_len(before);
            let _ = self.file.sync_data();
            let full = matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded);
            return Err(Error::bad_input(format!(
                "{}: {} ({e}); the {} {} finished before are kept. Free some space and rerun the same command to continue",
                self.path.display(),
                if full { "the disk is full" } else { "cannot write" },
                self.done.len(),
                E::NAME
            )));
        }
        self.done.extend(entries.into_iter().map(|entry| (entry.key(), entry)));
        Ok(())
    }
}

/// The settings a `perplex ppl` log was written with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeHeader {
    pub perplex_resume: u32,
    pub model: String,
    pub window: String,
    pub ctx: usize,
    pub stride: Option<usize>,
    pub per_token: bool,
    /// [`sums_setting`] of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums: Option<String>,
}

/// How a run's matrix kernels sum, for resume headers ([`crate::gpu::Sums::recorded`]): a log of
/// one arithmetic is not continued in the other.
pub fn sums_setting(model: &crate::Model) -> Option<String> {
    model.gpu_model.gpu.sums.recorded().map(String::from)
}

/// One finished document: its result and, with --per-token, its token records. A document whose
/// text changed has another key, so it is scored again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Finished {
    pub hash: String,
    pub result: DocumentResult,
    pub tokens: Vec<TokenRecord>,
}

impl Entry for Finished {
    type Key = (String, String);
    const NAME: &'static str = "documents";
    fn key(&self) -> Self::Key {
        (self.result.name.clone(), self.hash.clone())
    }
}

/// The log of `perplex ppl --resume`.
pub type DocumentLog = ResumeLog<ResumeHeader, Finished>;

/// FNV-1a 64 of a document's text: stable across runs, platforms and Rust versions.
pub fn text_hash(text: &str) -> String {
    crate::hash::Fnv1a::default().update(text.as_bytes()).hex()
}

/// The key of a document in a [`DocumentLog`].
pub fn document_key(name: &str, text: &str) -> (String, String) {
    (name.to_string(), text_hash(text))
}

/// The fingerprint of a model's files (those the engine reads; see [`crate::fingerprint`]), so that
/// a log is never continued with other weights or another tokenizer at the same path. For models
/// opened without a revision (a hub id resolves to its default branch).
pub fn model_fingerprint(model: &crate::Model) -> Result<String> {
    let path = if crate::model::is_gguf(&model.name) {
        PathBuf::from(&model.name)
    } else {
        crate::model::ModelFiles::locate(&model.name, None)?.dir
    };
    crate::fingerprint::checkpoint(&path)
}

#[cfg(test)]
mod tests {
    /// Logged scores come back bit for bit: totals are sums of them, and a resumed run's must equal
    /// an uninterrupted one's.
    #[test]
    fn logged_floats_round_trip_exactly() {
        let mut state = 0x9e3779b97f4a7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = -((state >> 11) as f64) / (1u64 << 53) as f64 * 50.0;
            let back: f64 = serde_json::from_str(&serde_json::to_string(&value).unwrap()).unwrap();
            assert_eq!(back.to_bits(), value.to_bits(), "{value:?}");
        }
    }
}
