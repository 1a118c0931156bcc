//! Perplexity scoring: documents -> token windows -> batches on the GPU -> per-token
//! log-probabilities -> per-document and total metrics.

mod data;
mod windows;

pub use data::{read_documents, word_count, Document};
pub use windows::{chunks, rolling, sliding, Window, WindowMode};

use crate::error::{Error, Result};
use crate::forward::TokenScore;
use crate::Model;

#[derive(Debug, Clone)]
pub struct PplOptions {
    pub mode: WindowMode,
    /// Window length; None = the mode's default.
    pub ctx: Option<usize>,
    /// Windows per GPU pass (capped by what fits in one storage binding).
    pub batch: usize,
    /// Keep every scored token's log-probability.
    pub per_token: bool,
    pub progress: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DocumentResult {
    pub name: String,
    pub nll: f64,
    pub tokens: usize,
    pub words: usize,
    pub bytes: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    pub nll: f64,
    pub tokens: usize,
    pub words: usize,
    pub bytes: usize,
    pub token_perplexity: f64,
    pub word_perplexity: f64,
    pub byte_perplexity: f64,
    pub bits_per_byte: f64,
}

impl Totals {
    pub fn of(documents: &[DocumentResult]) -> Totals {
        let nll: f64 = documents.iter().map(|d| d.nll).sum();
        let tokens = documents.iter().map(|d| d.tokens).sum();
        let words = documents.iter().map(|d| d.words).sum();
        let bytes = documents.iter().map(|d| d.bytes).sum();
        Totals {
            nll,
            tokens,
            words,
            bytes,
            token_perplexity: (nll / tokens as f64).exp(),
            word_perplexity: (nll / words as f64).exp(),
            byte_perplexity: (nll / bytes as f64).exp(),
            bits_per_byte: nll / bytes as f64 / std::f64::consts::LN_2,
        }
    }
}

/// One scored token, for `--per-token`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRecord {
    pub doc: String,
    pub pos: usize,
    pub token_id: u32,
    pub logprob: f32,
    pub greedy: bool,
}

#[derive(Debug, Clone)]
pub struct PplResult {
    pub mode: WindowMode,
    pub ctx: usize,
    pub documents: Vec<DocumentResult>,
    pub total: Totals,
    pub tokens: Vec<TokenRecord>,
    pub seconds: f64,
    /// Windows actually run per pass.
    pub batch: usize,
    /// Positions the model processed (windows x their lengths): more than the scored tokens
    /// when windows overlap (sliding) or score half a chunk (chunks).
    pub positions: usize,
}

impl PplResult {
    /// Scored tokens per second of wall time (tokenization included).
    pub fn tokens_per_second(&self) -> f64 {
        self.total.tokens as f64 / self.seconds.max(1e-9)
    }

    /// Processed positions per second: the engine's throughput, comparable with llama.cpp's.
    pub fn positions_per_second(&self) -> f64 {
        self.positions as f64 / self.seconds.max(1e-9)
    }
}

impl PplOptions {
    /// The window length this run uses, checked against the model.
    pub fn resolve_ctx(&self, model: &Model) -> Result<usize> {
        let max = model.spec.max_positions;
        let ctx = match (self.ctx, self.mode) {
            (Some(ctx), _) => ctx,
            (None, WindowMode::Chunks) => 512.min(max),
            (None, _) => 2048.min(max),
        };
        if ctx > max {
            return Err(Error::bad_input(format!(
                "--ctx {ctx} is longer than the model's {max} positions (max_position_embeddings); use --ctx {max} or less"
            )));
        }
        if ctx < 2 {
            return Err(Error::bad_input(format!("--ctx {ctx} is too short: windows need at least 2 tokens")));
        }
        if let WindowMode::Sliding { stride } = self.mode {
            if stride == 0 || stride > ctx {
                return Err(Error::bad_input(format!("--stride {stride} must be between 1 and --ctx ({ctx})")));
            }
        }
        Ok(ctx)
    }
}

/// Cuts every document into windows for `mode`.
pub fn make_windows(model: &Model, tokenized: &[Vec<u32>], mode: WindowMode, ctx: usize) -> Result<Vec<Window>> {
    let tokenizer = &model.tokenizer;
    let mut all = Vec::new();
    for (doc, tokens) in tokenized.iter().enumerate() {
        let windows = match mode {
            WindowMode::Rolling => rolling(doc, tokens, tokenizer.prefix_token()?, ctx),
            WindowMode::Sliding { stride } => sliding(doc, tokens, ctx, stride),
            WindowMode::Chunks => chunks(doc, tokens, ctx, tokenizer.bos.filter(|_| tokenizer.adds_bos)),
        };
        all.extend(windows);
    }
    Ok(all)
}

/// Scores windows in batches; returns each window's scores at its scored positions, in the
/// order of `windows`. Windows of similar length share a pass; the numbers do not depend on it.
pub fn score_windows(model: &Model, windows: &[Window], batch: usize, mut on_pass: impl FnMut(usize)) -> Result<(Vec<Vec<TokenScore>>, usize)> {
    let gpu_model = &model.gpu_model;
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(windows[i].input.len()));
    let mut results: Vec<Vec<TokenScore>> = vec![Vec::new(); windows.len()];
    let mut largest_pass = 0;
    let mut next = 0;
    while next < order.len() {
        let len = windows[order[next]].input.len();
        let fits = (gpu_model.max_rows_per_pass() / len).max(1);
        let count = batch.max(1).min(fits).min(order.len() - next);
        let group = &order[next..next + count];
        let mut tokens = vec![0u32; count * len];
        let mut targets = vec![0u32; count * len];
        for (slot, &w) in group.iter().enumerate() {
            let window = &windows[w];
            tokens[slot * len..slot * len + window.input.len()].copy_from_slice(&window.input);
            targets[slot * len..slot * len + window.targets.len()].copy_from_slice(&window.targets);
        }
        let scores = gpu_model.score(count, len, &tokens, &targets)?;
        for (slot, &w) in group.iter().enumerate() {
            let scored = windows[w].scored.clone();
            results[w] = scores[slot * len + scored.start..slot * len + scored.end].to_vec();
            on_pass(scored.len());
        }
        largest_pass = largest_pass.max(count);
        next += count;
    }
    Ok((results, largest_pass))
}

/// `perplex ppl`: scores every document and aggregates.
pub fn perplexity(model: &Model, documents: &[Document], options: &PplOptions) -> Result<PplResult> {
    let ctx = options.resolve_ctx(model)?;
    let start = std::time::Instant::now();
    let tokenized: Vec<Vec<u32>> = documents.iter().map(|d| model.tokenizer.encode(&d.text)).collect::<Result<_>>()?;
    let windows = make_windows(model, &tokenized, options.mode, ctx)?;
    let total_scored: usize = windows.iter().map(|w| w.scored.len()).sum();
    if total_scored == 0 {
        let longest = tokenized.iter().map(|t| t.len()).max().unwrap_or(0);
        return Err(Error::bad_input(format!(
            "no token to score: the longest document has {longest} tokens, and {} with --ctx {ctx} scores none of them; \
             use a smaller --ctx or more text",
            options.mode.name()
        )));
    }
    let bar = crate::report::progress_bar(total_scored as u64, options.progress);
    let (scores, batch) = score_windows(model, &windows, options.batch, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();

    let mut nll = vec![0f64; documents.len()];
    let mut counts = vec![0usize; documents.len()];
    let mut records = Vec::new();
    for (window, scores) in windows.iter().zip(&scores) {
        for (j, score) in window.scored.clone().zip(scores) {
            nll[window.doc] -= score.logprob as f64;
            counts[window.doc] += 1;
            if options.per_token {
                records.push(TokenRecord {
                    doc: documents[window.doc].name.clone(),
                    pos: window.first_target + j,
                    token_id: window.targets[j],
                    logprob: score.logprob,
                    greedy: score.greedy,
                });
            }
        }
    }
    let results: Vec<DocumentResult> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| DocumentResult {
            name: d.name.clone(),
            nll: nll[i],
            tokens: counts[i],
            words: word_count(&d.text),
            bytes: d.text.len(),
        })
        .collect();
    Ok(PplResult {
        mode: options.mode,
        ctx,
        total: Totals::of(&results),
        documents: results,
        tokens: records,
        seconds: start.elapsed().as_secs_f64(),
        batch,
        positions: windows.iter().map(|w| w.input.len()).sum(),
    })
}
