//! `perplex compare`: what a converted, quantized or distilled model lost against a base model.
//! Both models run over the same windows (the windows, pass loop and document reader of `ppl`);
//! per pass, each model's forward pass stops at its final hidden states, and one fused kernel
//! computes both heads tile by tile (compare_head.wgsl: the two hidden states stacked as pairs of
//! rows against both heads side by side) and keeps per position only the KL divergence, both
//! log-probabilities of the actual next token and both top tokens. No distribution leaves the GPU
//! and no logit is stored; device memory depends on the pass size, never on the text.

pub mod resume;
pub mod stats;

use crate::data::Document;
use crate::error::{Error, ErrorKind, Result};
use crate::forward::{injected_weight_limit, Batch, FinalHidden, GpuModel};
use crate::gpu::{ops, DType, Gpu, GpuMatrix, MatrixUse, PendingRead, Program};
use crate::model::{load_head, Checkpoint, ModelSpec, TextTokenizer};
use crate::score::{make_windows, run_passes, DocumentResult, PassInput, PplOptions, Progress, Totals, Window, WindowMode, PASSES_PER_GROUP};
use resume::{CompareHeader, CompareLog};
use crate::Model;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub use stats::{CompareStats, Estimate};

/// One scored position as both models see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionScore {
    /// KL(base ‖ model) of the next-token distributions, nats.
    pub kld: f32,
    pub logprob_base: f32,
    pub logprob_model: f32,
    /// Each model's most likely token (ties: the lowest id).
    pub top_base: u32,
    pub top_model: u32,
}

impl PositionScore {
    pub fn p_base(&self) -> f64 {
        (self.logprob_base as f64).exp()
    }

    pub fn p_model(&self) -> f64 {
        (self.logprob_model as f64).exp()
    }

    pub fn same_top(&self) -> bool {
        self.top_base == self.top_model
    }
}

/// A scored position as the run keeps it: a few numbers, whatever the vocabulary.
struct Scored {
    doc: usize,
    pos: usize,
    token_id: u32,
    score: PositionScore,
}

impl Scored {
    fn comparison(&self, documents: &[Document]) -> TokenComparison {
        let s = &self.score;
        TokenComparison {
            doc: documents[self.doc].name.clone(),
            pos: self.pos,
            token_id: self.token_id,
            kld: s.kld,
            logprob_base: s.logprob_base,
            logprob_model: s.logprob_model,
            p_base: s.p_base(),
            p_model: s.p_model(),
            same_top: s.same_top(),
            top_base: s.top_base,
            top_model: s.top_model,
        }
    }
}

/// A scored token, for `--per-token` and the positions of greatest disagreement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenComparison {
    pub doc: String,
    /// The token's index among the document's tokens.
    pub pos: usize,
    pub token_id: u32,
    pub kld: f32,
    pub logprob_base: f32,
    pub logprob_model: f32,
    pub p_base: f64,
    pub p_model: f64,
    pub same_top: bool,
    pub top_base: u32,
    pub top_model: u32,
}

/// A position where the models disagree most, with its text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Disagreement {
    #[serde(flatten)]
    pub token: TokenComparison,
    /// The text of the tokens before it (up to [`CONTEXT_TOKENS`]).
    pub context: String,
    /// The actual next token, and each model's first choice.
    pub text: String,
    pub text_top_base: String,
    pub text_top_model: String,
}

/// Tokens of text shown before a position of greatest disagreement.
pub const CONTEXT_TOKENS: usize = 12;

/// Positions of greatest disagreement reported.
pub const WORST: usize = 10;

#[derive(Debug, Clone)]
pub struct CompareResult {
    pub mode: WindowMode,
    pub ctx: usize,
    /// Per document and in total, as `ppl` reports them: the base model, then the model.
    pub base: Vec<DocumentResult>,
    pub model: Vec<DocumentResult>,
    pub total_base: Totals,
    pub total_model: Totals,
    pub stats: CompareStats,
    pub residency: Residency,
    /// Bytes of weights each model holds on the device: the base model's, then the model's.
    pub weight_bytes: [u64; 2],
    /// The [`WORST`] positions of largest KL divergence, largest first.
    pub worst: Vec<Disagreement>,
    /// Every scored token, where asked for.
    pub tokens: Vec<TokenComparison>,
    pub seconds: f64,
    /// Windows actually run per pass.
    pub batch: usize,
}

/// The first difference between two tokenizers that makes their token ids mean different
/// things: vocabulary size, a token's text, the special tokens and whether BOS is added. None
/// when they agree.
pub fn tokenizer_difference(base: &TextTokenizer, model: &TextTokenizer) -> Option<String> {
    if base.vocab_size != model.vocab_size {
        return Some(format!("the base tokenizer has {} tokens and the model's {}", base.vocab_size, model.vocab_size));
    }
    for id in 0..base.vocab_size as u32 {
        let (a, b) = (base.token_text(id), model.token_text(id));
        if a != b {
            let show = |t: Option<String>| t.map_or("no token".to_string(), |t| format!("{t:?}"));
            return Some(format!("token {id} is {} in the base tokenizer and {} in the model's", show(a), show(b)));
        }
    }
    let special = |t: &TextTokenizer| (t.bos, t.eos, t.adds_bos);
    if special(base) != special(model) {
        let show = |t: &TextTokenizer| format!("BOS {:?}, EOS {:?}, adds BOS {}", t.bos, t.eos, t.adds_bos);
        return Some(format!("the special tokens differ: base {}, model {}", show(base), show(model)));
    }
    let (a, b) = (base.special_tokens(), model.special_tokens());
    if let Some(&id) = a.iter().filter(|id| !b.contains(id)).chain(b.iter().filter(|id| !a.contains(id))).min() {
        let owner = if a.contains(&id) { "the base" } else { "the model's" };
        return Some(format!("token {id} ({:?}) is special in {owner} tokenizer only", base.token_text(id).unwrap_or_default()));
    }
    None
}

/// Host memory a swapped pair keeps final hidden states in, per round: 1 GiB holds 65,536
/// positions of a model 4096 wide, so a swap costs little beside the passes of a round.
pub const DEFAULT_ROUND_BYTES: usize = 1 << 30;

/// Whether the two models of a [`Pair`] stay on the device together or take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// Both models on the device: every pass runs both and compares them at once.
    Together,
    /// One model on the device at a time. A round of passes runs the model on the device and
    /// keeps the final hidden states of its scored positions in host memory (at most
    /// [`Pair::round_bytes`]); then the models swap, the other one runs the same
    /// windows, and the comparison reads the kept rows. The next round starts with the model
    /// now on the device, so each round costs one swap. Same numbers as [`Residency::Together`],
    /// bit for bit: the kept rows are the same floats.
    Swapped,
}

impl Residency {
    pub fn describe(self) -> &'static str {
        match self {
            Residency::Together => "both models on the device",
            Residency::Swapped => "one model on the device at a time, swapped between rounds of passes",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Residency::Together => "both",
            Residency::Swapped => "swapped",
        }
    }
}

/// A base model and a model to compare with it on one GPU (both resident, or taking turns), and
/// their heads side by side.
pub struct Pair {
    pub base: Model,
    pub model: Model,
    pub residency: Residency,
    /// Swapped pairs: the most bytes of final hidden states kept in host memory per round (the
    /// text is compared in rounds of that many positions, one swap each).
    pub round_bytes: usize,
    /// Row v: the base model's head row v, then the model's (one format: both heads' if they
    /// share it, else f32, into which every stored format widens exactly).
    head: GpuMatrix,
    buffers: Mutex<Option<Arc<Buffers>>>,
    /// The compare program per block of rows.
    programs: Mutex<HashMap<usize, Arc<Program>>>,
}

/// The compare kernels' buffers for blocks of up to `rows` compared rows. A pass's rows are
/// compared block by block (each buffer must fit in one storage binding), every block in these
/// buffers: its rows of both models' final hidden states are copied into `inputs` first.
struct Buffers {
    rows: usize,
    /// One block's final hidden states: the base model's, then the model's.
    inputs: [wgpu::Buffer; 2],
    stacked: wgpu::Buffer,
    targets: wgpu::Buffer,
    partials: wgpu::Buffer,
    output: wgpu::Buffer,
}

/// What [`Pair::submit`] queued: the per-row results of the compared rows, block by block.
pub struct PendingCompare {
    blocks: Vec<PendingRead<[f32; 5]>>,
    scored: usize,
}

impl PendingCompare {
    async fn read(self, gpu: &Gpu) -> Result<Vec<PositionScore>> {
        let mut raw = Vec::new();
        for block in self.blocks {
            raw.extend(block.read(gpu).await?);
        }
        Ok(raw[..self.scored]
            .iter()
            .map(|&[kld, logprob_base, logprob_model, top_base, top_model]| PositionScore {
                kld,
                logprob_base,
                logprob_model,
                top_base: top_base as u32,
                top_model: top_model as u32,
            })
            .collect())
    }
}

/// The head of one model as read from its checkpoint, kept until both are there.
struct HeadRows {
    dtype: DType,
    cols: usize,
    bytes: Vec<u8>,
}

fn read_head(spec: &ModelSpec, checkpoint: &Checkpoint) -> Result<HeadRows> {
    let head = load_head(spec, checkpoint)?;
    Ok(HeadRows { dtype: head.dtype, cols: spec.hidden, bytes: head.bytes.into_owned() })
}

impl HeadRows {
    /// Row `v` in `dtype` (its own, or f32).
    fn row(&self, v: usize, dtype: DType) -> Vec<u8> {
        let row_bytes = self.dtype.row_bytes(self.cols);
        let bytes = &self.bytes[v * row_bytes..(v + 1) * row_bytes];
        if dtype == self.dtype {
            return bytes.to_vec();
        }
        let row = crate::model::TensorData { name: String::new(), dtype: self.dtype, shape: vec![1, self.cols], bytes: bytes.into() };
        bytemuck::cast_slice(&row.to_f32()).to_vec()
    }
}

impl Pair {
    /// Opens both models on `gpu`, together where they fit and else taking turns; their
    /// tokenizers must agree and their vocabularies match.
    pub fn open(base: &str, model: &str, gpu: Arc<Gpu>) -> Result<Pair> {
        Pair::open_revision(base, model, None, None, gpu)
    }

    /// [`Pair::open`] with a revision of the model where it is a hub id, and a residency where
    /// one is wanted (None: together where both fit, else swapped).
    pub fn open_revision(base: &str, model: &str, revision: Option<&str>, residency: Option<Residency>, gpu: Arc<Gpu>) -> Result<Pair> {
        let (base, base_head) = Model::open_with(base, None, gpu.clone(), read_head)
            .map_err(|e| Error { message: format!("the base model {base}: {}", e.message), ..e })?;
        let base_mib = base.gpu_model.weight_bytes as f64 / (1 << 20) as f64;
        let open_model = || Model::open_with(model, revision, gpu.clone(), read_head);
        // Why the model could not be opened: as it is, or (device memory) with the base away.
        let alone = |e: Error| {
            let message = if e.kind == ErrorKind::DeviceMemory {
                format!("{model} does not fit on the device even without the base model {} on it: {}", base.name, e.message)
            } else {
                format!("the model {model}: {}", e.message)
            };
            Error { message, ..e }
        };
        let wanted = residency;
        let (mut residency, opened) = match wanted {
            Some(Residency::Swapped) => {
                base.gpu_model.release_weights()?;
                (Residency::Swapped, open_model().map_err(alone)?)
            }
            _ => match open_model() {
                Ok(opened) => (Residency::Together, opened),
                Err(e) if e.kind == ErrorKind::DeviceMemory && wanted.is_none() => {
                    eprintln!(
                        "note: {model} does not fit on {} beside the base model {} ({base_mib:.1} MiB); the two take turns on the \
                         device, swapped between rounds of passes (same numbers, more time)",
                        gpu.describe(),
                        base.name
                    );
                    gpu.clear_error();
                    base.gpu_model.release_weights()?;
                    (Residency::Swapped, open_model().map_err(alone)?)
                }
                Err(e) if e.kind == ErrorKind::DeviceMemory => {
                    let message = format!("{model} does not fit on the device beside the base model {} ({base_mib:.1} MiB): {}", base.name, e.message);
                    return Err(Error { message, ..e });
                }
                Err(e) => return Err(alone(e)),
            },
        };
        let (model, model_head) = opened;
        if let Some(difference) = tokenizer_difference(&base.tokenizer, &model.tokenizer) {
            return Err(Error::bad_input(format!(
                "{} and {} do not share a tokenizer ({difference}); KL divergence compares distributions over the same tokens",
                base.name, model.name
            )));
        }
        if base.spec.vocab_size != model.spec.vocab_size {
            return Err(Error::bad_input(format!(
                "{} has {} vocabulary rows and {} has {}: the distributions are over different tokens",
                base.name, base.spec.vocab_size, model.name, model.spec.vocab_size
            )));
        }
        let dtype = if base_head.dtype == model_head.dtype { base_head.dtype } else { DType::F32 };
        let vocab = base.spec.vocab_size;
        let cols = base.spec.hidden + model.spec.hidden;
        let mut bytes = Vec::with_capacity(vocab * dtype.row_bytes(cols));
        for v in 0..vocab {
            bytes.extend(base_head.row(v, dtype));
            bytes.extend(model_head.row(v, dtype));
        }
        drop((base_head, model_head));
        let upload_heads = |residency: Residency| {
            let does_not_fit = |device: &str, error: &dyn std::fmt::Display| {
                let beside = match residency {
                    Residency::Together => "both models fit",
                    Residency::Swapped => "each model fits alone",
                };
                format!("{beside} on {device} but not their heads side by side ({:.1} MiB) as well: {error}", bytes.len() as f64 / (1 << 20) as f64)
            };
            // The heads count as weights for the injected limit (tests of the fallback below).
            if let Some(limit) = injected_weight_limit() {
                if gpu.resident_weights.load(Ordering::Relaxed) + bytes.len() as u64 > limit {
                    let error = format!("out of memory (injected: more than {limit} bytes of weights)");
                    return Err(Error { kind: ErrorKind::DeviceMemory, message: does_not_fit(&gpu.describe(), &error) });
                }
            }
            gpu.allocate(
                || {
                    let head = GpuMatrix::upload(&gpu, "paired heads", vocab, cols, dtype, &bytes, MatrixUse::Products)?;
                    gpu.queue.submit([]);
                    gpu.wait()?;
                    Ok(head)
                },
                |device, error| does_not_fit(device, error),
            )
        };
        let head = match upload_heads(residency) {
            // Both models fit but not the heads beside them: one model makes room.
            Err(e) if e.kind == ErrorKind::DeviceMemory && residency == Residency::Together && wanted.is_none() => {
                eprintln!("note: {}; the two models take turns on the device, swapped between rounds of passes", e.message);
                gpu.clear_error();
                base.gpu_model.release_weights()?;
                residency = Residency::Swapped;
                upload_heads(residency)
            }
            other => other,
        }?;
        Ok(Pair { base, model, residency, round_bytes: DEFAULT_ROUND_BYTES, head, buffers: Mutex::new(None), programs: Mutex::new(HashMap::new()) })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.base.gpu_model.gpu
    }

    /// Bytes per compared row of each compare buffer: either model's final hidden state, the
    /// stacked pair of rows, tile summaries.
    fn row_bytes(&self) -> [usize; 4] {
        let [base, model] = [self.base.spec.hidden, self.model.spec.hidden];
        [4 * base, 4 * model, 2 * (base + model) * 4, ops::vocab_tiles(self.base.spec.vocab_size) * 48]
    }

    /// Most rows of a block: every compare buffer fits in one storage binding.
    fn block_rows(&self) -> usize {
        let widest = *self.row_bytes().iter().max().unwrap() as u64;
        (self.gpu().max_binding / widest).max(1) as usize
    }

    /// Windows of `len` positions per pass: what both models take.
    pub fn windows_per_pass(&self, len: usize, batch: Batch) -> usize {
        self.base.gpu_model.windows_per_pass(len, batch).min(self.model.gpu_model.windows_per_pass(len, batch))
    }

    fn buffers(&self, rows: usize) -> Arc<Buffers> {
        let mut slot = self.buffers.lock().unwrap();
        if let Some(buffers) = slot.as_ref().filter(|b| b.rows >= rows) {
            return buffers.clone();
        }
        // Programs bound to the old buffers go with them.
        self.programs.lock().unwrap().clear();
        let gpu = self.gpu();
        let [base, model, stacked, partials] = self.row_bytes().map(|b| (b * rows) as u64);
        let buffers = Arc::new(Buffers {
            rows,
            inputs: [gpu.storage("base hidden rows", base), gpu.storage("model hidden rows", model)],
            stacked: gpu.storage("stacked hidden rows", stacked),
            targets: gpu.storage("compared targets", 4 * rows as u64),
            partials: gpu.storage("compare partials", partials),
            output: gpu.storage("compare output", 20 * rows as u64),
        });
        *slot = Some(buffers.clone());
        buffers
    }

    /// Host bytes a swapped pair keeps per scored position: the wider model's final hidden state.
    fn kept_row_bytes(&self) -> usize {
        4 * self.base.spec.hidden.max(self.model.spec.hidden)
    }

    fn side(&self, side: Side) -> &Model {
        match side {
            Side::Base => &self.base,
            Side::Model => &self.model,
        }
    }

    /// Queues one pass over `pass` and the comparison of the two heads: both models' passes,
    /// or (swapped) the pass of the model on the device against the rows `kept` of the other,
    /// its final hidden states of the pass's scored positions in order.
    fn submit(&self, pass: &PassInput, kept: Option<(Side, &[f32])>) -> Result<PendingCompare> {
        if pass.scored.is_empty() {
            return Ok(PendingCompare { blocks: Vec::new(), scored: 0 });
        }
        let gpu = self.gpu();
        let run = |side: Side| -> Result<Option<FinalHidden<'_>>> {
            if kept.is_some_and(|(off_device, _)| off_device == side) {
                return Ok(None);
            }
            let gpu_model = &self.side(side).gpu_model;
            gpu_model.submit_hidden(pass.windows, pass.len, &pass.tokens, &pass.targets, &pass.layout, &pass.scored).map(Some)
        };
        let live = [run(Side::Base)?, run(Side::Model)?];
        // Padded rows, the same for both models (see GpuModel::hidden_rows).
        let rows = GpuModel::hidden_rows(pass.windows * pass.len, pass.scored.len());
        assert!(live.iter().all(|h| h.as_ref().is_none_or(|h| h.rows == rows)));
        // Padding rows (copies of row 0) compare row 0 again; their results are dropped.
        let mut targets: Vec<u32> = pass.scored.iter().map(|&r| pass.targets[r as usize]).collect();
        targets.resize(rows, targets[0]);
        let block = self.block_rows().min(rows);
        let buffers = self.buffers(block);
        let mut blocks = Vec::new();
        for start in (0..rows).step_by(block) {
            let count = block.min(rows - start);
            // The block's rows of both models into the inputs: copied on the device from a
            // model's pass, or written from the rows kept of the model off the device. Queue
            // order puts each after the previous block's comparison.
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            for (side, (hidden, input)) in [Side::Base, Side::Model].into_iter().zip(live.iter().zip(&buffers.inputs)) {
                let width = self.side(side).spec.hidden;
                let (from, to) = (start * width, (start + count) * width);
                match (hidden, kept) {
                    (Some(hidden), _) => encoder.copy_buffer_to_buffer(hidden.buffer(), 4 * from as u64, input, 0, 4 * (to - from) as u64),
                    (None, Some((_, rows))) => {
                        // Kept rows are the scored rows only: padding rows keep what they held.
                        let rows = &rows[from.min(rows.len())..to.min(rows.len())];
                        if !rows.is_empty() {
                            gpu.queue.write_buffer(input, 0, bytemuck::cast_slice(rows));
                        }
                    }
                    (None, None) => unreachable!("a model off the device has kept rows"),
                }
            }
            gpu.queue.write_buffer(&buffers.targets, 0, bytemuck::cast_slice(&targets[start..start + count]));
            gpu.queue.submit([encoder.finish()]);
            self.program(count, &buffers).submit(gpu);
            blocks.push(gpu.start_read(&buffers.output, count));
        }
        // Both models' next passes wait for their final hidden states to be let go, after this.
        Ok(PendingCompare { blocks, scored: pass.scored.len() })
    }

    /// The compare program for a block of `rows` rows in `buffers`.
    fn program(&self, rows: usize, buffers: &Buffers) -> Arc<Program> {
        let mut programs = self.programs.lock().unwrap();
        programs.entry(rows).or_insert_with(|| Arc::new(self.record(rows, buffers))).clone()
    }

    /// Queues the pass of the model on the device (`side`) over `pass` and the readback of its
    /// final hidden states at the scored positions, to keep while the other model runs.
    fn submit_kept(&self, side: Side, pass: &PassInput) -> Result<PendingKept> {
        let width = self.side(side).spec.hidden;
        if pass.scored.is_empty() {
            return Ok(PendingKept { raw: PendingRead::nothing(), width });
        }
        let gpu_model = &self.side(side).gpu_model;
        let hidden = gpu_model.submit_hidden(pass.windows, pass.len, &pass.tokens, &pass.targets, &pass.layout, &pass.scored)?;
        Ok(PendingKept { raw: self.gpu().start_read(hidden.buffer(), pass.scored.len() * width), width })
    }

    /// Every window's compared positions, in the order of `windows`, and the most windows a pass
    /// ran.
    fn run(&self, windows: &[Window], batch: Batch, mut advance: impl FnMut(usize)) -> Result<(Vec<Vec<PositionScore>>, usize)> {
        let gpu = self.gpu();
        let per_pass = |len| self.windows_per_pass(len, batch);
        let finish = async |pending: PendingCompare| pending.read(gpu).await;
        let Residency::Swapped = self.residency else {
            let submit = |pass: &PassInput| stop_check().and_then(|_| self.submit(pass, None));
            return pollster::block_on(run_passes(gpu, windows, per_pass, submit, finish, advance));
        };
        let mut scores = Vec::with_capacity(windows.len());
        let mut largest = 0;
        for round in self.rounds(windows) {
            // The model on the device runs the round first and keeps its rows, then the other.
            let first = if self.base.gpu_model.weights_resident() { Side::Base } else { Side::Model };
            let submit_kept = |pass: &PassInput| stop_check().and_then(|_| self.submit_kept(first, pass));
            let finish_kept = async |pending: PendingKept| pending.read(gpu).await;
            let (kept, _) = pollster::block_on(run_passes(gpu, round, per_pass, submit_kept, finish_kept, |_| {}))?;
            self.swap(first)?;
            let submit = |pass: &PassInput| {
                stop_check()?;
                let rows: Vec<f32> = pass.group.iter().flat_map(|&w| kept[w].iter().flatten().copied()).collect();
                self.submit(pass, Some((first, &rows)))
            };
            let (round_scores, round_largest) = pollster::block_on(run_passes(gpu, round, per_pass, submit, finish, &mut advance))?;
            scores.extend(round_scores);
            largest = largest.max(round_largest);
        }
        Ok((scores, largest))
    }

    /// `windows` in consecutive rounds whose kept rows fit in [`Pair::round_bytes`]
    /// (each round at least one window).
    fn rounds<'w>(&self, windows: &'w [Window]) -> Vec<&'w [Window]> {
        let row_bytes = self.kept_row_bytes();
        let mut rounds = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, window) in windows.iter().enumerate() {
            let more = window.scored.len() * row_bytes;
            if i > start && bytes + more > self.round_bytes {
                rounds.push(&windows[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += more;
        }
        if start < windows.len() {
            rounds.push(&windows[start..]);
        }
        rounds
    }

    /// Takes the model `off` the device and puts the other one on.
    fn swap(&self, off: Side) -> Result<()> {
        self.side(off).gpu_model.release_weights()?;
        let on = match off {
            Side::Base => Side::Model,
            Side::Model => Side::Base,
        };
        self.side(on).restore_weights()
    }

    fn record(&self, rows: usize, buffers: &Buffers) -> Program {
        let mut p = Program::builder(self.gpu());
        let stack = ops::StackRows { rows: rows as u32, width_a: self.base.spec.hidden as u32, width_b: self.model.spec.hidden as u32 };
        let [base, model] = &buffers.inputs;
        ops::stack_rows(&mut p, stack, base, model, &buffers.stacked);
        let head = ops::PairedHead {
            matrix: &self.head,
            vocab: self.base.spec.vocab_size,
            softcap_base: self.base.spec.final_softcap,
            softcap_model: self.model.spec.final_softcap,
        };
        ops::compare_head(&mut p, rows, head, &buffers.stacked, &buffers.targets, &buffers.partials);
        ops::compare_combine(&mut p, rows, ops::vocab_tiles(head.vocab), &buffers.targets, &buffers.partials, &buffers.output);
        p.build()
    }
}

/// One of the two models of a [`Pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Base,
    Model,
}

/// What [`Pair::submit_kept`] queued: a model's final hidden states at the scored positions.
struct PendingKept {
    raw: PendingRead<f32>,
    width: usize,
}

impl PendingKept {
    /// One row of floats per scored position.
    async fn read(self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        Ok(self.raw.read(gpu).await?.chunks(self.width).map(<[f32]>::to_vec).collect())
    }
}

/// Ctrl-C: statistics over part of the text would mislead, so nothing is reported.
fn stop_check() -> Result<()> {
    if crate::score::stop_requested() {
        return Err(Error::interrupted("interrupted: no statistics over part of the text; nothing written"));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub mode: WindowMode,
    /// Window length; None = the mode's default for the model of fewer positions. A sliding
    /// stride of 0 is half the window.
    pub ctx: Option<usize>,
    pub batch: Batch,
    /// Keep every scored token.
    pub per_token: bool,
    pub progress: Option<Arc<dyn Progress>>,
    /// Log compared windows to this file, and take those it holds from it (`--resume`).
    pub resume: Option<std::path::PathBuf>,
}

impl CompareOptions {
    /// `mode` with a sliding window's `stride` (None: half the window, worked out for the pair);
    /// a stride given for another mode is an error.
    pub fn windows(mode: WindowMode, stride: Option<usize>) -> Result<WindowMode> {
        match mode {
            WindowMode::Sliding { .. } if stride == Some(0) => Err(Error::bad_input("--stride 0: a sliding window must advance by at least one token")),
            WindowMode::Sliding { .. } => Ok(WindowMode::Sliding { stride: stride.unwrap_or(0) }),
            _ if stride.is_some() => Err(Error::bad_input("--stride applies to --window sliding only")),
            other => Ok(other),
        }
    }
}

/// `perplex compare`: both models over every document's windows, the statistics and the
/// positions of greatest disagreement.
pub fn compare(pair: &Pair, documents: &[Document], options: &CompareOptions) -> Result<CompareResult> {
    let start = web_time::Instant::now();
    let mut ppl = PplOptions { mode: options.mode, ctx: options.ctx, batch: options.batch, per_token: false, progress: None };
    // The window must suit both models: the shorter context decides.
    let shorter = if pair.model.spec.max_positions < pair.base.spec.max_positions { &pair.model } else { &pair.base };
    // A sliding stride of 0 is the default, half the window, which set_stride works out.
    let stride = match options.mode {
        WindowMode::Sliding { stride } if stride > 0 => Some(stride),
        _ => None,
    };
    ppl.set_stride(shorter, stride)?;
    let ctx = ppl.resolve_ctx(shorter)?;
    crate::score::window_fits(if std::ptr::eq(shorter, &pair.base) { &pair.model } else { &pair.base }, ctx)?;
    let mode = ppl.mode;
    let tokenized: Vec<Vec<u32>> = documents.iter().map(|d| pair.base.tokenizer.encode(&d.text)).collect::<Result<_>>()?;
    let windows = make_windows(&pair.base, &tokenized, mode, ctx)?;
    let total: usize = windows.iter().map(|w| w.scored.len()).sum();
    if total == 0 {
        return Err(Error::bad_input(format!("no token to score: {} with --ctx {ctx} scores none of the text", mode.name())));
    }
    let log = match &options.resume {
        Some(path) => Some(CompareLog::open(path, &CompareHeader::of(pair, mode, ctx)?, documents)?),
        None => None,
    };
    let (scores, batch) = compare_windows(pair, &windows, ctx, options, log)?;

    let mut base: Vec<DocumentResult> = documents.iter().map(DocumentResult::unscored).collect();
    let mut model = base.clone();
    let mut scored = Vec::with_capacity(total);
    for (window, scores) in windows.iter().zip(&scores) {
        for (j, score) in window.scored.clone().zip(scores) {
            base[window.doc].nll -= score.logprob_base as f64;
            base[window.doc].tokens += 1;
            model[window.doc].nll -= score.logprob_model as f64;
            model[window.doc].tokens += 1;
            scored.push(Scored { doc: window.doc, pos: window.first_target + j, token_id: window.targets[j], score: *score });
        }
    }
    let scores: Vec<PositionScore> = scored.iter().map(|s| s.score).collect();
    let stats = CompareStats::of(&scores);
    let worst = worst_positions(&scored, documents, &tokenized, &pair.base.tokenizer);
    Ok(CompareResult {
        mode,
        ctx,
        total_base: Totals::of(&base),
        total_model: Totals::of(&model),
        base,
        model,
        stats,
        residency: pair.residency,
        weight_bytes: [pair.base.gpu_model.weight_bytes, pair.model.gpu_model.weight_bytes],
        worst,
        tokens: if options.per_token { scored.iter().map(|s| s.comparison(documents)).collect() } else { Vec::new() },
        seconds: start.elapsed().as_secs_f64(),
        batch,
    })
}

/// Every window's scores: those in the resume log as logged, the others compared (with a log, in
/// groups of a few passes, or of a swapped pair's rounds, each logged as it finishes). Also the
/// most windows one pass held.
fn compare_windows(pair: &Pair, windows: &[Window], ctx: usize, options: &CompareOptions, mut log: Option<CompareLog>) -> Result<(Vec<Vec<PositionScore>>, usize)> {
    let mut scores: Vec<Option<Vec<PositionScore>>> = windows.iter().map(|w| log.as_ref().and_then(|log| log.get(w))).collect();
    let pending: Vec<usize> = (0..windows.len()).filter(|&i| scores[i].is_none()).collect();
    // Without a log (or with nothing in it) every window is pending: no copy of them is made.
    let pending_windows: std::borrow::Cow<[Window]> = if pending.len() == windows.len() {
        std::borrow::Cow::Borrowed(windows)
    } else {
        pending.iter().map(|&i| windows[i].clone()).collect::<Vec<_>>().into()
    };
    let progress = options.progress.as_deref();
    if let Some(progress) = progress {
        progress.start(windows.iter().map(|w| w.scored.len()).sum::<usize>() as u64);
        progress.advance(scores.iter().flatten().map(|s| s.len()).sum::<usize>() as u64);
    }
    let groups: Vec<&[Window]> = match (&log, pair.residency) {
        (None, _) => vec![&pending_windows[..]],
        (Some(_), Residency::Swapped) => pair.rounds(&pending_windows),
        (Some(_), Residency::Together) => pending_windows.chunks((PASSES_PER_GROUP * pair.windows_per_pass(ctx, options.batch)).max(1)).collect(),
    };
    let advance = |n: usize| {
        if let Some(progress) = progress {
            progress.advance(n as u64)
        }
    };
    let (mut largest, mut compared) = (0, 0);
    for group in groups {
        let (group_scores, batch) = pair.run(group, options.batch, advance).map_err(|e| match &log {
            Some(log) if e.kind == ErrorKind::Interrupted => Error::interrupted(format!(
                "interrupted: {} of {} windows compared and kept in {}; rerun the same command to continue",
                windows.len() - pending.len() + compared,
                windows.len(),
                log.path().display()
            )),
            _ => e,
        })?;
        if let Some(log) = &mut log {
            log.append(group, &group_scores)?;
        }
        for window_scores in group_scores {
            scores[pending[compared]] = Some(window_scores);
            compared += 1;
        }
        largest = largest.max(batch);
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    Ok((scores.into_iter().map(|s| s.expect("every window is logged or compared")).collect(), largest))
}

/// The [`WORST`] positions of largest KL divergence (ties: the earlier position), with the text
/// before each.
fn worst_positions(scored: &[Scored], documents: &[Document], tokenized: &[Vec<u32>], tokenizer: &TextTokenizer) -> Vec<Disagreement> {
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| scored[b].score.kld.total_cmp(&scored[a].score.kld).then(a.cmp(&b)));
    order
        .into_iter()
        .take(WORST)
        .map(|i| {
            let token = scored[i].comparison(documents);
            let ids = &tokenized[scored[i].doc];
            let before = &ids[token.pos.saturating_sub(CONTEXT_TOKENS)..token.pos];
            Disagreement {
                context: tokenizer.decode(before),
                text: tokenizer.decode_token(token.token_id),
                text_top_base: tokenizer.decode_token(token.top_base),
                text_top_model: tokenizer.decode_token(token.top_model),
                token,
            }
        })
        .collect()
}
