//! Human tables, JSON files and progress bars.

mod compare;
mod eval;

pub use compare::{compare_json, compare_table};
pub use eval::{eval_json, eval_table};

use crate::error::{Error, Result};
use crate::score::{PplResult, Progress};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// A progress bar of scored tokens on stderr, drawn only when stderr is a terminal: what the
/// command line gives scoring as its [`Progress`].
pub struct ProgressBar(Mutex<indicatif::ProgressBar>);

impl ProgressBar {
    pub fn new() -> ProgressBar {
        ProgressBar(Mutex::new(indicatif::ProgressBar::hidden()))
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, indicatif::ProgressBar> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for ProgressBar {
    fn default() -> ProgressBar {
        ProgressBar::new()
    }
}

impl Progress for ProgressBar {
    fn start(&self, tokens: u64) {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(tokens);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} tokens ({per_sec}, eta {eta})")
                .unwrap()
                .progress_chars("=> "),
        );
        *self.bar() = bar;
    }

    fn advance(&self, tokens: u64) {
        self.bar().inc(tokens);
    }

    fn finish(&self) {
        self.bar().finish_and_clear();
    }
}

/// Left-aligned first column, right-aligned others.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec()) + "\n";
    for row in rows {
        out += &line(row.iter().map(|s| s.as_str()).collect());
        out.push('\n');
    }
    out
}

/// Two left-aligned columns: a label and its value.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

pub fn ppl_table(result: &PplResult, model: &str, adapter: &str) -> String {
    let t = &result.total;
    key_values(&[
        ("model", model.into()),
        ("adapter", adapter.into()),
        ("window", format!("{} (ctx {})", result.mode.name(), result.ctx)),
        ("documents", result.documents.len().to_string()),
        ("tokens", t.tokens.to_string()),
        ("nll", format!("{:.4}", t.nll)),
        ("token perplexity", format!("{:.4}", t.token_perplexity)),
        ("word perplexity", format!("{:.4}", t.word_perplexity)),
        ("byte perplexity", format!("{:.4}", t.byte_perplexity)),
        ("bits per byte", format!("{:.4}", t.bits_per_byte)),
        ("tokens/s", format!("{:.1} scored, {:.1} processed", result.tokens_per_second(), result.positions_per_second())),
    ])
}

pub fn ppl_json(result: &PplResult, model: &str, adapter: &str) -> serde_json::Value {
    json!({
        "model": model,
        "adapter": adapter,
        "window": result.mode.name(),
        "ctx": result.ctx,
        "stride": match result.mode { crate::score::WindowMode::Sliding { stride } => Some(stride), _ => None },
        "documents": result.documents,
        "total": result.total,
        "seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second(),
        "positions": result.positions,
        "positions_per_second": result.positions_per_second(),
    })
}

/// Why a generated answer ended, in words.
pub fn stop_reason(stop: crate::generate::Stop) -> String {
    match stop {
        crate::generate::Stop::Until(i) => format!("stopped at --until string {}", i + 1),
        crate::generate::Stop::EndOfText => "end of text".to_string(),
        crate::generate::Stop::MaxTokens => "token limit".to_string(),
    }
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::internal(e.to_string()))?;
    write_atomically(path, text.as_bytes())
}

/// JSON Lines, one value per line.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(|e| Error::internal(e.to_string()))?;
        out.push(b'\n');
    }
    write_atomically(path, &out)
}

/// Writes to a temporary file beside `path`, then renames: a crash never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let fail = |e: std::io::Error| Error::bad_input(format!("{}: cannot write: {e}", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
