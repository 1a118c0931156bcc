//! `--resume FILE`: a JSON Lines log of finished documents, appended (and synced) as each
//! finishes, so a killed or interrupted run continues without rescoring or duplicating them. The
//! first line records the settings; a log written with other settings is refused, and a document
//! whose text changed is scored again.

use super::{DocumentResult, TokenRecord};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeHeader {
    pub perplex_resume: u32,
    pub model: String,
    pub window: String,
    pub ctx: usize,
    pub stride: Option<usize>,
    pub per_token: bool,
}

/// One finished document: its result and, with --per-token, its token records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Finished {
    pub hash: String,
    pub result: DocumentResult,
    pub tokens: Vec<TokenRecord>,
}

pub struct ResumeLog {
    path: PathBuf,
    file: std::fs::File,
    done: HashMap<(String, String), Finished>,
}

/// FNV-1a 64 of a document's text: stable across runs, platforms and Rust versions.
pub fn text_hash(text: &str) -> String {
    crate::hash::Fnv1a::default().update(text.as_bytes()).hex()
}

impl ResumeLog {
    pub fn open(path: &Path, header: &ResumeHeader) -> Result<ResumeLog> {
        let fail = |e: std::io::Error| Error::bad_input(format!("{}: {e}", path.display()));
        let mut done = HashMap::new();
        let mut valid_len = 0u64;
        if path.exists() {
            let reader = std::io::BufReader::new(std::fs::File::open(path).map_err(fail)?);
            for (i, line) in reader.split(b'\n').enumerate() {
                let line = line.map_err(fail)?;
                let parsed = std::str::from_utf8(&line).ok();
                if i == 0 {
                    let found: Option<ResumeHeader> = parsed.and_then(|l| serde_json::from_str(l).ok());
                    match found {
                        Some(found) if &found == header => {}
                        Some(found) => {
                            return Err(Error::bad_input(format!(
                                "{}: written by a run with other settings ({found:?}); use a new --resume file for {header:?}",
                                path.display()
                            )))
                        }
                        None => return Err(Error::bad_input(format!("{}: not a perplex resume file", path.display()))),
                    }
                } else {
                    // A line cut short by a crash ends the log; it is dropped and rewritten.
                    let Some(finished) = parsed.and_then(|l| serde_json::from_str::<Finished>(l).ok()) else { break };
                    done.insert((finished.result.name.clone(), finished.hash.clone()), finished);
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
        Ok(ResumeLog { path: path.to_path_buf(), file, done })
    }

    pub fn get(&self, name: &str, text: &str) -> Option<&Finished> {
        self.done.get(&(name.to_string(), text_hash(text)))
    }

    pub fn finished(&self) -> usize {
        self.done.len()
    }

    /// Appends and syncs one finished document: a whole line or nothing (a write cut short by a
    /// full disk is cut off again at once, so the documents before it stay readable).
    pub fn append(&mut self, finished: Finished) -> Result<()> {
        let mut line = serde_json::to_vec(&finished).map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        let fail = |e: std::io::Error| Error::bad_input(format!("{}: cannot write: {e}", self.path.display()));
        let before = self.file.metadata().map_err(fail)?.len();
        if let Err(e) = self.file.write_all(&line).and_then(|()| self.file.sync_data()) {
            let _ = self.file.set_len(before);
            let _ = self.file.sync_data();
            let full = matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded);
            return Err(Error::bad_input(format!(
                "{}: {} ({e}); the {} documents finished before are kept. Free some space and rerun the same command to continue",
                self.path.display(),
                if full { "the disk is full" } else { "cannot write" },
                self.done.len()
            )));
        }
        self.done.insert((finished.result.name.clone(), finished.hash.clone()), finished);
        Ok(())
    }
}
