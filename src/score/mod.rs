//! Perplexity scoring: documents -> token windows -> batches on the GPU -> per-token
//! log-probabilities -> per-document and total metrics.

mod loglik;
mod resume;
mod windows;
mod words;

pub use words::word_count;
pub use loglik::{
    encode_request, is_python_space, loglikelihood, loglikelihood_resumable, python_strip, request_window, EncodedRequest, LoglikOptions,
    LoglikOutput, Loglikelihood, Request, RequestLog, RequestLogHeader, ScoredRequest,
};
pub use resume::{document_key, model_fingerprint, sums_setting, text_hash, DocumentLog, Entry, Finished, ResumeHeader, ResumeLog};
pub use windows::{chunks, rolling, sliding, Window, WindowMode};

use crate::data::Document;
use crate::error::{Error, Result};
use crate::forward::{Batch, PendingScores, RowLayout, TokenScore};
use crate::gpu::Gpu;
use crate::Model;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Told how many tokens a run scores and, as passes finish, how many are done: the command line
/// draws its progress bar with it (`report::ProgressBar`), so scoring needs no terminal. Send and
/// Sync, so that options holding one still go to other threads.
pub trait Progress: Send + Sync {
    /// A run that scores `tokens` tokens starts.
    fn start(&self, tokens: u64);
    /// `tokens` more are scored.
    fn advance(&self, tokens: u64);
    /// The run has ended, finished or stopped.
    fn finish(&self);
}

impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// A [`Progress`] that only counts, for callers that look from elsewhere (the Python bindings'
/// calling thread, a browser page between passes): tokens scored so far, and in all.
#[derive(Default)]
pub struct ProgressCounts {
    done: AtomicU64,
    total: AtomicU64,
}

impl ProgressCounts {
    /// (tokens scored so far, tokens in all) of the run now going.
    pub fn counts(&self) -> (u64, u64) {
        (self.done.load(Relaxed), self.total.load(Relaxed))
    }
}

impl Progress for ProgressCounts {
    fn start(&self, tokens: u64) {
        self.total.store(tokens, Relaxed);
        self.done.store(0, Relaxed);
    }

    fn advance(&self, tokens: u64) {
        self.done.fetch_add(tokens, Relaxed);
    }

    fn finish(&self) {}
}

/// What runs without a [`Progress`] report to.
struct Unwatched;

impl Progress for Unwatched {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// The progress a run reports to: the caller's, or nobody.
pub fn watcher(progress: &Option<Arc<dyn Progress>>) -> &dyn Progress {
    progress.as_deref().unwrap_or(&Unwatched)
}

#[derive(Debug, Clone)]
pub struct PplOptions {
    pub mode: WindowMode,
    /// Window length; None = the mode's default.
    pub ctx: Option<usize>,
    pub batch: Batch,
    /// Keep every scored token's log-probability.
    pub per_token: bool,
    pub progress: Option<Arc<dyn Progress>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DocumentResult {
    pub name: String,
    pub nll: f64,
    pub tokens: usize,
    pub words: usize,
    pub bytes: usize,
}

impl DocumentResult {
    /// `doc` before any of its tokens is scored: its words and bytes, no loss yet.
    pub fn unscored(doc: &Document) -> DocumentResult {
        DocumentResult { name: doc.name.clone(), nll: 0.0, tokens: 0, words: word_count(&doc.text), bytes: doc.text.len() }
    }
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub doc: String,
    pub pos: usize,
    pub token_id: u32,
    pub logprob: f32,
    pub greedy: bool,
    /// The model's most likely token (absent from resume logs of versions that did not keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<u32>,
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
        window_fits(model, ctx)?;
        if let WindowMode::Sliding { stride } = self.mode {
            if stride == 0 || stride > ctx {
                return Err(Error::bad_input(format!("--stride {stride} must be between 1 and --ctx ({ctx})")));
            }
        }
        Ok(ctx)
    }

    /// Sets a sliding window's stride: `stride`, or half the window length where none is given
    /// (the window length depends on the model, hence this step after opening it). A stride for
    /// another window mode is an error.
    pub fn set_stride(&mut self, model: &Model, stride: Option<usize>) -> Result<()> {
        match self.mode {
            WindowMode::Sliding { .. } => {
                // The window length does not depend on the stride; any valid one resolves it.
                self.mode = WindowMode::Sliding { stride: 1 };
                let ctx = self.resolve_ctx(model)?;
                self.mode = WindowMode::Sliding { stride: stride.unwrap_or((ctx / 2).max(1)) };
                Ok(())
            }
            _ if stride.is_some() => Err(Error::bad_input("--stride applies to --window sliding only")),
            _ => Ok(()),
        }
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
pub async fn score_windows(model: &Model, windows: &[Window], batch: Batch, on_pass: impl FnMut(usize)) -> Result<(Vec<Vec<TokenScore>>, usize)> {
    let gpu_model = &model.gpu_model;
    run_passes(
        &gpu_model.gpu,
        windows,
        |len| gpu_model.windows_per_pass(len, batch),
        |pass| gpu_model.submit_rows(pass.windows, pass.len, &pass.tokens, &pass.targets, &pass.layout, &pass.scored),
        async |pending: PendingScores| pending.read(&gpu_model.gpu).await,
        on_pass,
    )
    .await
}

/// A window of `ctx` tokens must fit in one pass: each activation buffer of its rows in one
/// storage binding of the device.
pub fn window_fits(model: &Model, ctx: usize) -> Result<()> {
    let fits = model.gpu_model.max_rows_per_pass();
    if ctx > fits {
        return Err(Error::bad_input(format!(
            "--ctx {ctx}: a window of {ctx} tokens of {} does not fit in one pass on {}, whose storage bindings hold {:.1} MiB \
             ({fits} rows of the model's widest activation); use --ctx {fits} or less",
            model.name,
            model.gpu_model.gpu.describe(),
            model.gpu_model.gpu.max_binding as f64 / (1 << 20) as f64
        )));
    }
    Ok(())
}

/// Windows laid out as one pass of `len` rows each: what the forward pass takes.
pub struct PassInput {
    pub windows: usize,
    pub len: usize,
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    pub layout: RowLayout,
    /// The scored rows, increasing.
    pub scored: Vec<u32>,
    /// The windows laid out, by their index in the windows handed to [`run_passes`], in the
    /// order of their slots (and so of their scored rows).
    pub group: Vec<usize>,
}

/// Runs `windows` in passes and returns each window's results at its scored positions, in the
/// order of `windows`: the pass loop of every scoring command (`ppl`, `compare`). Windows are
/// sorted by length and grouped `per_pass(len)` at a time; `submit` queues a pass and `finish`
/// collects its results, one per scored row in order.
///
/// One pass stays queued while the previous one is collected: the device starts on pass n + 1
/// while the host reads back pass n and hands its results out. A pass the device runs out of
/// memory on is run again at half the size, for the rest of the run.
pub async fn run_passes<S: Clone, P>(
    gpu: &Gpu,
    windows: &[Window],
    per_pass: impl Fn(usize) -> usize,
    mut submit: impl FnMut(&PassInput) -> Result<P>,
    finish: impl AsyncFn(P) -> Result<Vec<S>>,
    mut on_pass: impl FnMut(usize),
) -> Result<(Vec<Vec<S>>, usize)> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(windows[i].input.len()));
    let mut results: Vec<Vec<S>> = vec![Vec::new(); windows.len()];
    let mut largest_pass = 0;
    let mut next = 0;
    // Lowered for the rest of the run when the device runs out of memory.
    let mut ceiling = usize::MAX;
    let mut in_flight: Option<QueuedPass<P>> = None;
    loop {
        let queued = if next < order.len() {
            let len = windows[order[next]].input.len();
            let count = per_pass(len).min(ceiling).min(order.len() - next);
            let pending = submit(&lay_out(windows, &order[next..next + count], len))?;
            next += count;
            Some(QueuedPass { pending, first: next - count, count })
        } else {
            None
        };
        // The device reports running out of memory when a pass is collected.
        let Some(done) = std::mem::replace(&mut in_flight, queued) else {
            if in_flight.is_none() {
                break;
            }
            continue;
        };
        match finish(done.pending).await {
            Ok(scores) => {
                let mut scores = scores.into_iter();
                for &w in &order[done.first..done.first + done.count] {
                    let scored = windows[w].scored.len();
                    results[w] = scores.by_ref().take(scored).collect();
                    on_pass(scored);
                }
                largest_pass = largest_pass.max(done.count);
            }
            Err(error) if error.kind == crate::error::ErrorKind::DeviceMemory && done.count > 1 => {
                // The pass queued behind it is dropped too: both run again, smaller.
                if let Some(later) = in_flight.take() {
                    let _ = finish(later.pending).await;
                }
                eprintln!("warning: {}; retrying with {} windows per pass", error.message, done.count / 2);
                gpu.clear_error();
                ceiling = done.count / 2;
                next = done.first;
            }
            Err(error) => return Err(error),
        }
    }
    Ok((results, largest_pass))
}

/// A submitted pass over `order[first..first + count]`.
struct QueuedPass<P> {
    pending: P,
    first: usize,
    count: usize,
}

/// Lays the windows of `group` out as one pass of `len` positions each.
fn lay_out(windows: &[Window], group: &[usize], len: usize) -> PassInput {
    let count = group.len();
    let mut tokens = vec![0u32; count * len];
    let mut targets = vec![0u32; count * len];
    let mut layout = RowLayout::default();
    let mut scored = Vec::new();
    for (slot, &w) in group.iter().enumerate() {
        let window = &windows[w];
        tokens[slot * len..slot * len + window.input.len()].copy_from_slice(&window.input);
        targets[slot * len..slot * len + window.targets.len()].copy_from_slice(&window.targets);
        layout.push_window(len, window.shared_rows(), &window.segments);
        scored.extend(window.scored.clone().map(|row| (slot * len + row) as u32));
    }
    PassInput { windows: count, len, tokens, targets, layout, scored, group: group.to_vec() }
}

/// Passes scored between two looks at the resume log and the Ctrl-C flag: few enough that
/// finished work is logged (and a Ctrl-C obeyed) soon, enough to keep the device busy.
pub(crate) const PASSES_PER_GROUP: usize = 4;

/// Set by a Ctrl-C handler: long runs stop after the passes in flight, keeping what is done.
pub static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a Ctrl-C asked long runs to stop.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// `perplex ppl`: scores every document and aggregates.
pub fn perplexity(model: &Model, documents: &[Document], options: &PplOptions) -> Result<PplResult> {
    perplexity_resumable(model, documents, options, None)
}

/// [`perplexity`] with an optional resume log: documents already in it are not scored again, and
/// each document is appended to it as soon as it is finished.
pub fn perplexity_resumable(model: &Model, documents: &[Document], options: &PplOptions, resume: Option<&std::path::Path>) -> Result<PplResult> {
    pollster::block_on(perplexity_scored(model, documents, options, resume))
}

/// [`perplexity_resumable`] without blocking: what a browser's page awaits (see
/// [`crate::gpu::PendingRead::read`]).
pub async fn perplexity_scored(model: &Model, documents: &[Document], options: &PplOptions, resume: Option<&std::path::Path>) -> Result<PplResult> {
    let ctx = options.resolve_ctx(model)?;
    let start = web_time::Instant::now();
    let mut log = match resume {
        Some(path) => Some(DocumentLog::open(
            path,
            &ResumeHeader {
                perplex_resume: 1,
                model: model.name.clone(),
                window: options.mode.name().into(),
                ctx,
                stride: match options.mode {
                    WindowMode::Sliding { stride } => Some(stride),
                    _ => None,
                },
                per_token: options.per_token,
                sums: sums_setting(model),
            },
        )?),
        None => None,
    };
    let mut finished: Vec<Option<Finished>> =
        documents.iter().map(|d| log.as_ref().and_then(|l| l.get(&document_key(&d.name, &d.text))).cloned()).collect();
    let pending: Vec<usize> = (0..documents.len()).filter(|&i| finished[i].is_none()).collect();
    let tokenized: Vec<Vec<u32>> = pending.iter().map(|&i| model.tokenizer.encode(&documents[i].text)).collect::<Result<_>>()?;
    let windows = make_windows(model, &tokenized, options.mode, ctx)?;
    let total_scored: usize = windows.iter().map(|w| w.scored.len()).sum();
    if total_scored == 0 && finished.iter().all(|f| f.as_ref().is_none_or(|f| f.result.tokens == 0)) {
        let longest = tokenized.iter().map(|t| t.len()).max().unwrap_or(0);
        return Err(Error::bad_input(format!(
            "no token to score: the longest document has {longest} tokens, and {} with --ctx {ctx} scores none of them; \
             use a smaller --ctx or more text",
            options.mode.name()
        )));
    }

    // Documents are scored in groups of a few passes' worth of windows, so finished documents
    // reach the resume log (and a Ctrl-C stops) without waiting for the whole run.
    let progress = watcher(&options.progress);
    progress.start(total_scored as u64);
    let group_windows = PASSES_PER_GROUP * model.gpu_model.windows_per_pass(ctx, options.batch);
    let mut largest_pass = 0;
    let mut positions = 0;
    let mut first_window = 0;
    while first_window < windows.len() {
        if stop_requested() {
            progress.finish();
            return Err(Error::interrupted(format!(
                "interrupted: {} of {} documents finished{}",
                finished.iter().filter(|f| f.is_some()).count(),
                documents.len(),
                match resume {
                    Some(path) => format!(" and kept in {}; rerun the same command to continue", path.display()),
                    None => String::new(),
                }
            )));
        }
        // Whole documents: extend to the end of the last document the group touches.
        let mut end = (first_window + group_windows).min(windows.len());
        while end < windows.len() && windows[end].doc == windows[end - 1].doc {
            end += 1;
        }
        let group = &windows[first_window..end];
        let (scores, batch) = score_windows(model, group, options.batch, |n| progress.advance(n as u64)).await?;
        largest_pass = largest_pass.max(batch);
        positions += group.iter().map(|w| w.input.len()).sum::<usize>();
        let docs_in_group: Vec<usize> = {
            let mut d: Vec<usize> = group.iter().map(|w| w.doc).collect();
            d.dedup();
            d
        };
        for local in docs_in_group {
            let index = pending[local];
            let doc = &documents[index];
            let mut result = DocumentResult::unscored(doc);
            let mut records = Vec::new();
            for (window, scores) in group.iter().zip(&scores).filter(|(w, _)| w.doc == local) {
                for (j, score) in window.scored.clone().zip(scores) {
                    result.nll -= score.logprob as f64;
                    result.tokens += 1;
                    if options.per_token {
                        records.push(TokenRecord {
                            doc: doc.name.clone(),
                            pos: window.first_target + j,
                            token_id: window.targets[j],
                            logprob: score.logprob,
                            greedy: score.greedy,
                            top: Some(score.top),
                        });
                    }
                }
            }
            let done = Finished { hash: text_hash(&doc.text), result, tokens: records };
            if let Some(log) = log.as_mut() {
                log.append(done.clone())?;
            }
            finished[index] = Some(done);
        }
        first_window = end;
    }
    progress.finish();

    // Documents without any window (too short for a chunk) still get their (empty) line.
    let mut results = Vec::with_capacity(documents.len());
    let mut records = Vec::new();
    for (doc, done) in documents.iter().zip(finished) {
        let done = done.unwrap_or_else(|| Finished {
            hash: text_hash(&doc.text),
            result: DocumentResult::unscored(doc),
            tokens: Vec::new(),
        });
        results.push(done.result);
        records.extend(done.tokens);
    }
    Ok(PplResult {
        mode: options.mode,
        ctx,
        total: Totals::of(&results),
        documents: results,
        tokens: records,
        seconds: start.elapsed().as_secs_f64(),
        batch: largest_pass,
        positions,
    })
}
