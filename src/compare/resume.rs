//! `perplex compare --resume FILE`: every compared window's per-position numbers, logged as its
//! group of passes finishes (the log of `ppl --resume`, [`crate::score::ResumeLog`]), so a killed
//! or interrupted comparison continues where it stopped, even inside one long document. The
//! statistics need every position (percentiles, the positions of greatest disagreement), so
//! these few numbers per position are what is kept: about 40 bytes of JSON, against a logits
//! file's whole distribution.

use super::{Pair, PositionScore};
use crate::data::Document;
use crate::error::Result;
use crate::score::{model_fingerprint, sums_setting, text_hash, Entry, ResumeLog, Window, WindowMode};

/// The settings a `perplex compare` log was written with: a log is continued only by the same
/// two models' files, windows and arithmetic.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompareHeader {
    pub perplex_compare_resume: u32,
    pub base: String,
    pub base_files: String,
    pub model: String,
    pub model_files: String,
    pub window: String,
    pub ctx: usize,
    pub stride: Option<usize>,
    /// [`sums_setting`] of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums: Option<String>,
}

impl CompareHeader {
    pub fn of(pair: &Pair, mode: WindowMode, ctx: usize) -> Result<CompareHeader> {
        Ok(CompareHeader {
            perplex_compare_resume: 1,
            base: pair.base.name.clone(),
            base_files: model_fingerprint(&pair.base)?,
            model: pair.model.name.clone(),
            model_files: model_fingerprint(&pair.model)?,
            window: mode.name().into(),
            ctx,
            stride: match mode {
                WindowMode::Sliding { stride } => Some(stride),
                _ => None,
            },
            sums: sums_setting(&pair.base),
        })
    }
}

/// One compared window: the document (name and text hash, so a changed text is compared again),
/// its first scored position, and per scored position the numbers of a [`PositionScore`] as
/// columns. f32 values are written in their shortest form and read back bit for bit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ComparedWindow {
    pub doc: String,
    pub hash: String,
    pub first: usize,
    pub kld: Vec<f32>,
    pub logprob_base: Vec<f32>,
    pub logprob_model: Vec<f32>,
    pub top_base: Vec<u32>,
    pub top_model: Vec<u32>,
}

impl Entry for ComparedWindow {
    type Key = (String, String, usize);
    const NAME: &'static str = "windows";
    fn key(&self) -> Self::Key {
        (self.doc.clone(), self.hash.clone(), self.first)
    }
}

impl ComparedWindow {
    fn new(key: WindowKey, scores: &[PositionScore]) -> ComparedWindow {
        let (doc, hash, first) = key;
        ComparedWindow {
            doc,
            hash,
            first,
            kld: scores.iter().map(|s| s.kld).collect(),
            logprob_base: scores.iter().map(|s| s.logprob_base).collect(),
            logprob_model: scores.iter().map(|s| s.logprob_model).collect(),
            top_base: scores.iter().map(|s| s.top_base).collect(),
            top_model: scores.iter().map(|s| s.top_model).collect(),
        }
    }

    /// The scores, where the entry holds `len` of each (else it is not this window's).
    fn scores(&self, len: usize) -> Option<Vec<PositionScore>> {
        let columns = [self.kld.len(), self.logprob_base.len(), self.logprob_model.len(), self.top_base.len(), self.top_model.len()];
        if columns.iter().any(|&n| n != len) {
            return None;
        }
        Some(
            (0..len)
                .map(|i| PositionScore {
                    kld: self.kld[i],
                    logprob_base: self.logprob_base[i],
                    logprob_model: self.logprob_model[i],
                    top_base: self.top_base[i],
                    top_model: self.top_model[i],
                })
                .collect(),
        )
    }
}

type WindowKey = (String, String, usize);

/// The log of `perplex compare --resume`, with the keys of the run's documents.
pub struct CompareLog {
    log: ResumeLog<CompareHeader, ComparedWindow>,
    /// Each document's text hash, computed once.
    hashes: Vec<String>,
    names: Vec<String>,
}

impl CompareLog {
    pub fn open(path: &std::path::Path, header: &CompareHeader, documents: &[Document]) -> Result<CompareLog> {
        Ok(CompareLog {
            log: ResumeLog::open(path, header)?,
            hashes: documents.iter().map(|d| text_hash(&d.text)).collect(),
            names: documents.iter().map(|d| d.name.clone()).collect(),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        self.log.path()
    }

    fn key(&self, window: &Window) -> WindowKey {
        (self.names[window.doc].clone(), self.hashes[window.doc].clone(), window.first_target + window.scored.start)
    }

    /// The logged scores of `window`, if it was compared before.
    pub fn get(&self, window: &Window) -> Option<Vec<PositionScore>> {
        self.log.get(&self.key(window)).and_then(|entry| entry.scores(window.scored.len()))
    }

    /// Logs compared windows (one write and one sync).
    pub fn append(&mut self, windows: &[Window], scores: &[Vec<PositionScore>]) -> Result<()> {
        let entries = windows.iter().zip(scores).map(|(w, s)| ComparedWindow::new(self.key(w), s)).collect();
        self.log.append_all(entries)
    }
}
