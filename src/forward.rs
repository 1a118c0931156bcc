//! The one transformer forward pass on the GPU, parameterised by a [`ModelSpec`]. For a batch of
//! token windows it records, once per batch shape, the whole pass as a [`Program`]: embedding,
//! per layer norm -> fused QKV -> RoPE -> attention -> output projection (+ residual) -> norm ->
//! MLP (+ residual), final norm, and the LM head fused with log-softmax, which emits per position
//! log p(target) and whether the target was the argmax. Logits never leave the kernel.

use crate::error::{Error, ErrorKind, Result};
use crate::gpu::{ops, DType, Gpu, GpuMatrix, KernelId, PendingRead, Program, ProgramBuilder, WeightFormat};
use crate::model::{load_weights, Checkpoint, LayerAttention, ModelSpec, ModelWeights, NormKind, NormWeights, QkNorm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Positions per pass under `--batch auto`: enough rows for every matmul to run at the device's
/// full rate (a few thousand suffice on current GPUs), few enough that the activations of even a
/// large-vocabulary model stay around a GiB.
pub const AUTO_PASS_ROWS: usize = 16384;

/// The LM head's row count is a multiple of this, so passes with similar numbers of scored rows
/// share one recorded program.
const SCORED_ROWS_STEP: usize = 64;

/// A prefill pass's window length is a multiple of this, so prompts of similar lengths share one
/// recorded program.
const PREFILL_LEN_STEP: usize = 64;

/// What a recorded pass depends on besides the workspace.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ProgramKey {
    windows: usize,
    len: usize,
    packed: bool,
    /// Rows gathered for the LM head; None: all `windows * len` rows in place.
    scored_rows: Option<usize>,
    kind: PassKind,
}

/// What a pass computes besides the transformer layers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum PassKind {
    /// The LM head fused with the loss: log p(target) per scored row.
    Score,
    /// No head: the scored rows' final hidden states (see [`GpuModel::submit_hidden`]).
    Hidden,
    /// Generation's prefill: windows of prompts whose keys and values go into the KV cache, and
    /// the greedy token after each prompt.
    Prefill,
    /// Generation's step: one row per sequence, attending over its slot of the KV cache, and the
    /// greedy next token.
    Decode,
}

impl PassKind {
    /// The pass writes to (and, decoding, reads from) the KV cache.
    fn uses_cache(self) -> bool {
        matches!(self, PassKind::Prefill | PassKind::Decode)
    }
}

/// The keys and values of every layer for `slots` sequences of up to `slot_len` positions (see
/// kv_store.wgsl): per layer one buffer of `slots * slot_len` rows of [k heads | v heads].
struct KvCache {
    slots: usize,
    slot_len: usize,
    layers: Vec<wgpu::Buffer>,
}

/// The greedy choice at one row: the argmax token (ties to the lowest id) and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GreedyToken {
    pub token: u32,
    pub logprob: f32,
}

/// One sequence's row of a decoding step: the token it feeds, its KV-cache slot and the token's
/// position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeRow {
    pub token: u32,
    pub slot: usize,
    pub position: usize,
}

/// A prompt of a prefill pass and the KV-cache slot it fills.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    pub tokens: &'a [u32],
    pub slot: usize,
}

/// One pass as [`GpuModel::submit_pass`] takes it.
struct PassRequest<'a> {
    windows: usize,
    len: usize,
    tokens: &'a [u32],
    targets: &'a [u32],
    layout: &'a RowLayout,
    /// Rows whose head output is wanted, increasing.
    scored: &'a [u32],
    kind: PassKind,
    /// Per row, where its keys and values go in the KV cache ([`ops::NO_CACHE_ROW`]: nowhere);
    /// empty for passes that do not use the cache.
    cache_rows: &'a [u32],
}

/// Fault injection for tests: PERPLEX_FAIL_WINDOWS_ABOVE=N makes every pass of more than N
/// windows fail as if the device had run out of memory while running it.
fn injected_memory_limit() -> Option<usize> {
    std::env::var("PERPLEX_FAIL_WINDOWS_ABOVE").ok().and_then(|v| v.parse().ok())
}

/// Per-position result of scoring a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    pub logprob: f32,
    /// Whether the token is the model's most likely one.
    pub greedy: bool,
    /// The model's most likely token (ties: the lowest id).
    pub top: u32,
}

/// A pass queued by [`GpuModel::submit_rows`]; [`PendingScores::finish`] collects its scores.
#[must_use = "a submitted pass's scores are collected with finish"]
pub struct PendingScores {
    raw: PendingRead<[f32; 2]>,
    rows: ScoredRows,
    /// The scored rows' targets, in order.
    targets: Vec<u32>,
}

/// Where the scored rows' results lie in the pass's score buffer.
enum ScoredRows {
    /// The first n entries, in order (the LM head ran over the gathered rows).
    Gathered(usize),
    /// At these row indices (the LM head ran over every row).
    InPlace(Vec<u32>),
}

impl PendingScores {
    /// Waits for the pass and returns the scores of its scored rows, in order.
    pub fn finish(self, gpu: &Gpu) -> Result<Vec<TokenScore>> {
        pollster::block_on(self.read(gpu))
    }

    /// [`PendingScores::finish`] without blocking (see [`PendingRead::read`]).
    pub async fn read(mut self, gpu: &Gpu) -> Result<Vec<TokenScore>> {
        let targets = std::mem::take(&mut self.targets);
        // The argmax is an f32, exact below 2^24 token ids.
        let score = |([logprob, top], target): ([f32; 2], u32)| TokenScore { logprob, greedy: top as u32 == target, top: top as u32 };
        Ok(self.read_raw(gpu).await?.into_iter().zip(targets).map(score).collect())
    }

    /// The two floats the head's second pass wrote for each scored row, in order.
    async fn read_raw(self, gpu: &Gpu) -> Result<Vec<[f32; 2]>> {
        let raw = self.raw.read(gpu).await?;
        Ok(match self.rows {
            ScoredRows::Gathered(count) => raw[..count].to_vec(),
            ScoredRows::InPlace(rows) => rows.iter().map(|&r| raw[r as usize]).collect(),
        })
    }
}

/// The normalised final hidden states of a pass's scored rows, as the LM head reads them, left on
/// the GPU by [`GpuModel::submit_hidden`]: row i is the i-th scored row, padded with copies of
/// row 0 to `rows`. While it is held no other pass of the model starts, so work queued meanwhile
/// (a second model's head reading it) sees these rows.
pub struct FinalHidden<'a> {
    _running: std::sync::MutexGuard<'a, ()>,
    workspace: Arc<Workspace>,
    pub rows: usize,
    pub width: usize,
}

impl FinalHidden<'_> {
    /// The buffer holding the rows: `rows` rows of `width` floats from its start.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.workspace.h
    }
}

/// Where each row of a pass sits (see attention.wgsl): its token position, and the rows
/// (shared_end, segment_start) of its window that bound what it attends to. A plain window's rows
/// sit at their row in the window with (0, 0): causal attention over every earlier row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowLayout {
    pub positions: Vec<u32>,
    pub segments: Vec<[u32; 2]>,
    /// Some window is packed: positions are not rows.
    pub packed: bool,
}

impl RowLayout {
    /// `windows` plain windows of `len` rows.
    pub fn plain(windows: usize, len: usize) -> RowLayout {
        let mut layout = RowLayout::default();
        for _ in 0..windows {
            layout.push_window(len, 0, &[]);
        }
        layout
    }

    /// Appends a window of `len` rows: `shared` rows, then segments of the given row counts, each
    /// seeing the shared rows and itself with positions restarting at `shared`, then padding.
    /// Without segments the window is plain.
    pub fn push_window(&mut self, len: usize, shared: usize, segments: &[usize]) {
        let first = self.positions.len();
        self.positions.extend(0..len as u32);
        self.segments.resize(first + len, [0, 0]);
        self.packed |= !segments.is_empty();
        let mut start = shared;
        for &rows in segments {
            for i in 0..rows {
                self.positions[first + start + i] = (shared + i) as u32;
                self.segments[first + start + i] = [shared as u32, start as u32];
            }
            start += rows;
        }
        assert!(start <= len, "segments of {start} rows overflow a window of {len}");
    }
}

/// Activation buffers for up to `rows` rows (windows x window length).
struct Workspace {
    rows: usize,
    tokens: wgpu::Buffer,
    targets: wgpu::Buffer,
    /// The pass's [`RowLayout`].
    positions: wgpu::Buffer,
    segments: wgpu::Buffer,
    x: wgpu::Buffer,
    h: wgpu::Buffer,
    /// The MLP input of parallel-residual blocks, and the scored rows of x before the final norm.
    h2: wgpu::Buffer,
    /// Which rows the LM head scores (see [`GpuModel::score_rows`]).
    scored: wgpu::Buffer,
    /// Per row, its KV-cache row (generation passes).
    cache_rows: wgpu::Buffer,
    qkv: wgpu::Buffer,
    attn: wgpu::Buffer,
    ff: wgpu::Buffer,
    act: wgpu::Buffer,
    partials: wgpu::Buffer,
    scores: wgpu::Buffer,
}

pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub spec: ModelSpec,
    /// None while released ([`GpuModel::release_weights`]): perplex compare swaps two models
    /// that do not fit on the device together.
    weights: Mutex<Option<Arc<Weights>>>,
    /// Bound where a kernel's optional input is absent.
    dummy: wgpu::Buffer,
    workspace: Mutex<Option<Arc<Workspace>>>,
    /// Generation's KV cache, while one is reserved.
    cache: Mutex<Option<Arc<KvCache>>>,
    /// Held while a batch runs: batches share the workspace buffers.
    running: Mutex<()>,
    programs: Mutex<HashMap<ProgramKey, Arc<Program>>>,
    rope_tables: Mutex<HashMap<(usize, usize), Arc<wgpu::Buffer>>>,
    pub weight_bytes: u64,
    pub weight_dtype: DType,
}

type Weights = ModelWeights<GpuMatrix, wgpu::Buffer>;

/// Fault injection for tests: PERPLEX_FAIL_WEIGHTS_ABOVE=N makes a weight upload that would
/// bring the model weights resident on the device past N bytes fail as if the device had run
/// out of memory.
pub(crate) fn injected_weight_limit() -> Option<u64> {
    std::env::var("PERPLEX_FAIL_WEIGHTS_ABOVE").ok().and_then(|v| v.parse().ok())
}

/// Uploads a checkpoint's weights in their stored width: the weights, their bytes on the
/// device and the width of the first matrix.
fn upload_weights(gpu: &Gpu, spec: &ModelSpec, checkpoint: &Checkpoint) -> Result<(Weights, u64, DType)> {
    let weight_bytes = std::cell::Cell::new(0u64);
    let mut dtype = None;
    let resident = || gpu.resident_weights.load(std::sync::atomic::Ordering::Relaxed);
    let does_not_fit = |device: &str, error: &dyn std::fmt::Display| {
        format!(
            "the model's weights do not fit in the memory of {device} (it ran out after {:.1} MiB of them): {error}. \
             Use a smaller model or a GPU with more memory.",
            weight_bytes.get() as f64 / (1 << 20) as f64
        )
    };
    let uploaded = gpu.allocate(
        || {
            load_weights(
                spec,
                checkpoint,
                |tensor, usage| {
                    if let Some(limit) = injected_weight_limit() {
                        if resident() + weight_bytes.get() + tensor.bytes.len() as u64 > limit {
                            let error = format!("out of memory (injected: more than {limit} bytes of weights)");
                            return Err(Error { kind: ErrorKind::DeviceMemory, message: does_not_fit(&gpu.describe(), &error) });
                        }
                    }
                    let matrix = GpuMatrix::upload(gpu, &tensor.name, tensor.shape[0], tensor.shape[1], tensor.dtype, &tensor.bytes, usage)?;
                    // Each upload goes through a staging buffer that lives until the queue moves on;
                    // flushing here frees it before the next one, so staging never doubles the
                    // footprint nor leaves holes between weights.
                    gpu.queue.submit([]);
                    gpu.wait()?;
                    weight_bytes.set(weight_bytes.get() + matrix.bytes());
                    dtype.get_or_insert(tensor.dtype);
                    Ok(matrix)
                },
                |name, values| Ok(gpu.upload(name, &values)),
            )
        },
        |device, error| does_not_fit(device, error),
    );
    let weights = uploaded?;
    gpu.resident_weights.fetch_add(weight_bytes.get(), std::sync::atomic::Ordering::Relaxed);
    Ok((weights, weight_bytes.get(), dtype.unwrap_or(DType::F32)))
}

impl Drop for GpuModel {
    fn drop(&mut self) {
        if self.weights.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).is_some() {
            self.gpu.resident_weights.fetch_sub(self.weight_bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl GpuModel {
    /// Uploads the checkpoint's weights in their stored width.
    pub fn load(gpu: Arc<Gpu>, spec: ModelSpec, checkpoint: &Checkpoint) -> Result<GpuModel> {
        let (weights, weight_bytes, weight_dtype) = upload_weights(&gpu, &spec, checkpoint)?;
        gpu.check_healthy()?;
        let dummy = gpu.storage("unused", 16);
        Ok(GpuModel {
            dummy,
            weights: Mutex::new(Some(Arc::new(weights))),
            spec,
            workspace: Mutex::new(None),
            cache: Mutex::new(None),
            running: Mutex::new(()),
            programs: Mutex::new(HashMap::new()),
            rope_tables: Mutex::new(HashMap::new()),
            weight_bytes,
            weight_dtype,
            gpu,
        })
    }

    /// Frees the model's weights, activations and KV cache on the device, leaving room for
    /// another model; [`GpuModel::restore_weights`] brings them back. Until then passes fail.
    pub fn release_weights(&self) -> Result<()> {
        let _running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Programs bind the weights and workspace: they go first.
        self.programs.lock().unwrap().clear();
        *self.workspace.lock().unwrap() = None;
        self.release_kv_cache();
        if self.weights.lock().unwrap().take().is_some() {
            self.gpu.resident_weights.fetch_sub(self.weight_bytes, std::sync::atomic::Ordering::Relaxed);
        }
        // Dropped buffers are freed once the device has finished the work that uses them.
        self.gpu.wait()
    }

    /// Uploads the weights again from `checkpoint` (the one the model was loaded from) after
    /// [`GpuModel::release_weights`]; nothing to do while they are resident.
    pub fn restore_weights(&self, checkpoint: &Checkpoint) -> Result<()> {
        if self.weights_resident() {
            return Ok(());
        }
        let (weights, bytes, _) = upload_weights(&self.gpu, &self.spec, checkpoint)?;
        if bytes != self.weight_bytes {
            return Err(Error::bad_input(format!(
                "the checkpoint changed while it was in use: its weights were {} bytes and are now {bytes}",
                self.weight_bytes
            )));
        }
        *self.weights.lock().unwrap() = Some(Arc::new(weights));
        Ok(())
    }

    pub fn weights_resident(&self) -> bool {
        self.weights.lock().unwrap().is_some()
    }

    /// The weights on the device; passes check [`GpuModel::weights_resident`] first.
    fn weights(&self) -> Arc<Weights> {
        self.weights.lock().unwrap().clone().expect("the model's weights are on the device")
    }

    /// How many buffers the embedding table is split into (more than one past the binding limit).
    pub fn embedding_parts(&self) -> usize {
        self.weights().embedding.parts.len()
    }

    /// Bytes of activation memory per row (token position) of a batch, per buffer.
    fn row_bytes(&self) -> [usize; 6] {
        let s = &self.spec;
        [
            s.hidden * 4,
            s.qkv_width() * 4,
            s.q_width() * 4,
            s.up_width() * 4,
            s.intermediate * 4,
            ops::vocab_tiles(s.vocab_size) * 16,
        ]
    }

    /// Most rows one pass may hold: every activation buffer must fit in one storage binding.
    pub fn max_rows_per_pass(&self) -> usize {
        let widest = *self.row_bytes().iter().max().unwrap() as u64;
        (self.gpu.max_binding / widest).max(1) as usize
    }

    /// Windows of `len` positions one pass scores under `batch` (at least one).
    pub fn windows_per_pass(&self, len: usize, batch: Batch) -> usize {
        let fits = self.max_rows_per_pass() / len.max(1);
        let wanted = match batch {
            Batch::Auto => AUTO_PASS_ROWS / len.max(1),
            Batch::Windows(n) => n,
        };
        wanted.min(fits).max(1)
    }

    /// Activation memory for `rows` rows, in bytes. On the texture read path, the texture copies
    /// of activations fit within the second copy of each activation buffer counted here (weights
    /// live in their own textures there, see [`crate::gpu::MatrixUse`]).
    pub fn activation_bytes(&self, rows: usize) -> u64 {
        // Activations (each buffer twice at most in flight), tokens, targets, positions, cache
        // rows, segments, scores.
        let per_row: usize = self.row_bytes().iter().sum::<usize>() * 2 + 4 * 4 + 8 + 8;
        (per_row * rows) as u64
    }

    fn workspace(&self, rows: usize) -> Arc<Workspace> {
        let mut slot = self.workspace.lock().unwrap();
        if let Some(ws) = slot.as_ref() {
            if ws.rows >= rows {
                return ws.clone();
            }
        }
        // A bigger workspace invalidates programs bound to the old one.
        self.programs.lock().unwrap().clear();
        let gpu = &self.gpu;
        let [x, qkv, attn, ff, act, partials] = self.row_bytes().map(|b| (b * rows) as u64);
        let ws = Arc::new(Workspace {
            rows,
            tokens: gpu.storage("tokens", 4 * rows as u64),
            targets: gpu.storage("targets", 4 * rows as u64),
            positions: gpu.storage("positions", 4 * rows as u64),
            segments: gpu.storage("segments", 8 * rows as u64),
            x: gpu.storage("x", x),
            h: gpu.storage("h", x),
            h2: gpu.storage("h2", x),
            scored: gpu.storage("scored rows", 4 * rows as u64),
            cache_rows: gpu.storage("cache rows", 4 * rows as u64),
            qkv: gpu.storage("qkv", qkv),
            attn: gpu.storage("attn", attn),
            ff: gpu.storage("ff", ff),
            act: gpu.storage("act", act),
            partials: gpu.storage("partials", partials),
            scores: gpu.storage("scores", 8 * rows as u64),
        });
        *slot = Some(ws.clone());
        ws
    }

    fn rope_table(&self, rope: usize, len: usize) -> Arc<wgpu::Buffer> {
        let mut tables = self.rope_tables.lock().unwrap();
        tables
            .entry((rope, len))
            .or_insert_with(|| {
                let table = self.spec.rope_table(rope, len);
                Arc::new(self.gpu.upload("rope cos/sin", bytemuck::cast_slice::<[f32; 2], f32>(&table)))
            })
            .clone()
    }

    /// Runs one pass like [`GpuModel::score`] with a timestamp around every dispatch: per-kernel
    /// seconds, or None without timestamp queries.
    pub fn profile(&self, windows: usize, len: usize, tokens: &[u32], targets: &[u32]) -> Result<Option<Vec<(KernelId, f64)>>> {
        self.score(windows, len, tokens, targets)?;
        self.profile_program(ProgramKey { windows, len, packed: false, scored_rows: None, kind: PassKind::Score })
    }

    /// Runs one decoding step like [`GpuModel::decode`] with a timestamp around every dispatch
    /// (see [`GpuModel::profile`]). It writes the rows' keys and values into the cache as a
    /// step does.
    pub fn profile_decode(&self, rows: &[DecodeRow]) -> Result<Option<Vec<(KernelId, f64)>>> {
        self.decode(rows)?;
        self.profile_program(ProgramKey { windows: rows.len(), len: 1, packed: false, scored_rows: None, kind: PassKind::Decode })
    }

    fn profile_program(&self, key: ProgramKey) -> Result<Option<Vec<(KernelId, f64)>>> {
        let _running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let program = self.programs.lock().unwrap().get(&key).cloned();
        match program {
            Some(program) => program.profile(&self.gpu),
            None => Ok(None),
        }
    }

    /// Scores `windows` plain windows of `len` positions each: `tokens[w * len + t]` is the input
    /// at position t of window w and `targets[...]` the token it should predict. Returns one score
    /// per position. A window's scores do not depend on the other windows or on `len` padding.
    pub fn score(&self, windows: usize, len: usize, tokens: &[u32], targets: &[u32]) -> Result<Vec<TokenScore>> {
        let all: Vec<u32> = (0..(windows * len) as u32).collect();
        self.score_rows(windows, len, tokens, targets, &RowLayout::plain(windows, len), &all)
    }

    /// [`GpuModel::score`] with rows laid out by `layout` (packed windows among them), scoring
    /// only the rows listed in `scored` (increasing row indices): returns their scores in that
    /// order. The LM head, the costliest matrix of small models, then skips context rows,
    /// padding and overlaps; a row's score is the same bits either way.
    pub fn score_rows(&self, windows: usize, len: usize, tokens: &[u32], targets: &[u32], layout: &RowLayout, scored: &[u32]) -> Result<Vec<TokenScore>> {
        self.submit_rows(windows, len, tokens, targets, layout, scored)?.finish(&self.gpu)
    }

    /// [`GpuModel::score_rows`] without waiting: queues the pass and the readback of its scores
    /// and returns. Passes run in the order submitted; collecting one with
    /// [`PendingScores::finish`] while the next is queued keeps the device busy while the host
    /// reads back and prepares the pass after it.
    pub fn submit_rows(&self, windows: usize, len: usize, tokens: &[u32], targets: &[u32], layout: &RowLayout, scored: &[u32]) -> Result<PendingScores> {
        if windows * len == 0 {
            return Ok(PendingScores { raw: PendingRead::nothing(), rows: ScoredRows::Gathered(0), targets: Vec::new() });
        }
        let pass = PassRequest { windows, len, tokens, targets, layout, scored, kind: PassKind::Score, cache_rows: &[] };
        let (_running, ws, head_rows, gathered) = self.submit_pass(&pass)?;
        // Queued behind the pass before the workspace is released: a later pass overwrites
        // `scores` only after this copy.
        let raw = self.gpu.start_read(&ws.scores, head_rows);
        let rows = if gathered { ScoredRows::Gathered(scored.len()) } else { ScoredRows::InPlace(scored.to_vec()) };
        Ok(PendingScores { raw, rows, targets: scored.iter().map(|&r| targets[r as usize]).collect() })
    }

    /// The forward pass of [`GpuModel::submit_rows`] without the LM head: leaves the final
    /// hidden states of the scored rows, normalised and gathered in order, on the GPU for another
    /// kernel to read (perplex compare runs two models' heads together). `scored` must not be empty.
    pub fn submit_hidden(&self, windows: usize, len: usize, tokens: &[u32], targets: &[u32], layout: &RowLayout, scored: &[u32]) -> Result<FinalHidden<'_>> {
        assert!(!scored.is_empty());
        let pass = PassRequest { windows, len, tokens, targets, layout, scored, kind: PassKind::Hidden, cache_rows: &[] };
        let (running, ws, rows, _) = self.submit_pass(&pass)?;
        Ok(FinalHidden { _running: running, workspace: ws, rows, width: self.spec.hidden })
    }

    /// Bytes of KV cache for `slots` sequences of up to `slot_len` positions: keys and values
    /// of every layer in f32.
    pub fn kv_cache_bytes(&self, slots: usize, slot_len: usize) -> u64 {
        (self.spec.layers * slots * slot_len * self.kv_row_bytes()) as u64
    }

    /// Bytes of one position's keys and values in one layer.
    fn kv_row_bytes(&self) -> usize {
        2 * self.spec.kv_heads * self.spec.head_dim * 4
    }

    /// Most KV-cache slots of `slot_len` positions: each layer's cache is one storage binding.
    pub fn max_kv_slots(&self, slot_len: usize) -> usize {
        (self.gpu.max_binding as usize / (slot_len.max(1) * self.kv_row_bytes())).max(1)
    }

    /// Allocates the KV cache for `slots` sequences of up to `slot_len` positions, replacing any
    /// earlier one. Running out of device memory is a [`ErrorKind::DeviceMemory`] error.
    pub fn reserve_kv_cache(&self, slots: usize, slot_len: usize) -> Result<()> {
        let per_layer = (slots * slot_len * self.kv_row_bytes()) as u64;
        if per_layer > self.gpu.max_binding {
            return Err(Error::bad_input(format!(
                "a KV cache of {slots} sequences of {slot_len} positions needs {:.1} MiB per layer, more than one storage \
                 binding of {} holds ({:.1} MiB): generate fewer sequences at once (--batch) or shorter ones",
                per_layer as f64 / (1 << 20) as f64,
                self.gpu.describe(),
                self.gpu.max_binding as f64 / (1 << 20) as f64
            )));
        }
        self.release_kv_cache();
        let layers = self.gpu.allocate(
            || Ok((0..self.spec.layers).map(|_| self.gpu.storage("kv cache", per_layer)).collect::<Vec<_>>()),
            |device, error| {
                format!(
                    "a KV cache of {:.1} MiB ({slots} sequences of {slot_len} positions) does not fit beside the model in {device}: {error}",
                    self.kv_cache_bytes(slots, slot_len) as f64 / (1 << 20) as f64
                )
            },
        )?;
        // Programs recorded over an earlier cache bind its buffers.
        self.programs.lock().unwrap().retain(|key, _| !key.kind.uses_cache());
        *self.cache.lock().unwrap() = Some(Arc::new(KvCache { slots, slot_len, layers }));
        Ok(())
    }

    /// Frees the KV cache.
    pub fn release_kv_cache(&self) {
        self.programs.lock().unwrap().retain(|key, _| !key.kind.uses_cache());
        *self.cache.lock().unwrap() = None;
    }

    /// The reserved KV cache's slots and positions per slot.
    fn cache_shape(&self) -> Result<(usize, usize)> {
        let cache = self.cache.lock().unwrap();
        let cache = cache.as_ref().ok_or_else(|| Error::internal("generation pass without a KV cache".to_string()))?;
        Ok((cache.slots, cache.slot_len))
    }

    /// Generation's prefill: runs each prompt as a window (padded to a common length), stores
    /// its keys and values in its KV-cache slot, and returns the greedy token after each prompt.
    /// A prompt's numbers do not depend on the others of the pass.
    pub fn prefill(&self, prompts: &[Prompt]) -> Result<Vec<GreedyToken>> {
        let (slots, slot_len) = self.cache_shape()?;
        let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        assert!(prompts.iter().all(|p| !p.tokens.is_empty() && p.slot < slots && p.tokens.len() <= slot_len));
        // Lengths rounded up, so prompts of similar lengths share one recorded program.
        let len = longest.next_multiple_of(PREFILL_LEN_STEP);
        let windows = prompts.len();
        let mut tokens = vec![0u32; windows * len];
        let mut cache_rows = vec![ops::NO_CACHE_ROW; windows * len];
        let mut scored = Vec::with_capacity(windows);
        for (w, prompt) in prompts.iter().enumerate() {
            let n = prompt.tokens.len();
            tokens[w * len..w * len + n].copy_from_slice(prompt.tokens);
            for (i, row) in cache_rows[w * len..w * len + n].iter_mut().enumerate() {
                *row = (prompt.slot * slot_len + i) as u32;
            }
            scored.push((w * len + n - 1) as u32);
        }
        let targets = vec![0u32; windows * len];
        let layout = RowLayout::plain(windows, len);
        let pass = PassRequest { windows, len, tokens: &tokens, targets: &targets, layout: &layout, scored: &scored, kind: PassKind::Prefill, cache_rows: &cache_rows };
        self.run_greedy(&pass)
    }

    /// One decoding step: each row feeds its token at its position into its sequence's KV-cache
    /// slot and gets the greedy next token. A row's numbers do not depend on the other rows.
    pub fn decode(&self, rows: &[DecodeRow]) -> Result<Vec<GreedyToken>> {
        let (slots, slot_len) = self.cache_shape()?;
        assert!(rows.iter().all(|r| r.slot < slots && r.position < slot_len));
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        let cache_rows: Vec<u32> = rows.iter().map(|r| (r.slot * slot_len + r.position) as u32).collect();
        let mut layout = RowLayout::plain(rows.len(), 1);
        layout.positions = rows.iter().map(|r| r.position as u32).collect();
        let targets = vec![0u32; rows.len()];
        let scored: Vec<u32> = (0..rows.len() as u32).collect();
        let pass = PassRequest { windows: rows.len(), len: 1, tokens: &tokens, targets: &targets, layout: &layout, scored: &scored, kind: PassKind::Decode, cache_rows: &cache_rows };
        self.run_greedy(&pass)
    }

    /// Runs a generation pass and reads back the greedy token of each scored row.
    fn run_greedy(&self, pass: &PassRequest) -> Result<Vec<GreedyToken>> {
        if pass.scored.is_empty() {
            return Ok(Vec::new());
        }
        let pending = {
            let (_running, ws, head_rows, gathered) = self.submit_pass(pass)?;
            let raw = self.gpu.start_read(&ws.scores, head_rows);
            let rows = if gathered { ScoredRows::Gathered(pass.scored.len()) } else { ScoredRows::InPlace(pass.scored.to_vec()) };
            PendingScores { raw, rows, targets: Vec::new() }
        };
        Ok(pollster::block_on(pending.read_raw(&self.gpu))?.into_iter().map(|[token, logprob]| GreedyToken { token: token as u32, logprob }).collect())
    }

    /// Rows the head reads after a pass of `rows` rows scoring `scored` of them (the scored rows
    /// gathered and padded, see [`GpuModel::submit_pass`]): what [`GpuModel::submit_hidden`]
    /// leaves.
    pub fn hidden_rows(rows: usize, scored: usize) -> usize {
        scored.next_multiple_of(SCORED_ROWS_STEP).min(rows)
    }

    /// Queues one pass: the forward pass and the head its kind asks for. Returns the hold on the
    /// workspace (queue what reads it before letting go), the workspace, the rows the head reads
    /// (or would read) and whether those are the scored rows gathered.
    fn submit_pass(&self, pass: &PassRequest) -> Result<(std::sync::MutexGuard<'_, ()>, Arc<Workspace>, usize, bool)> {
        let PassRequest { windows, len, tokens, targets, layout, scored, kind, cache_rows } = *pass;
        let rows = windows * len;
        assert_eq!(tokens.len(), rows);
        assert_eq!(targets.len(), rows);
        assert!(scored.windows(2).all(|w| w[0] < w[1]) && scored.last().is_none_or(|&r| (r as usize) < rows));
        assert_eq!(layout.positions.len(), rows);
        assert_eq!(layout.segments.len(), rows);
        assert_eq!(cache_rows.len(), if kind.uses_cache() { rows } else { 0 });
        // RoPE tables cover the positions of a window, or of a KV-cache slot.
        let last_position = layout.positions.iter().max().map_or(0, |&p| p as usize);
        assert!(last_position < self.rope_len(len, kind));
        if last_position >= self.spec.max_positions && self.spec.learned_positions {
            return Err(Error::bad_input(format!(
                "window of {} tokens exceeds the model's {} positions",
                last_position + 1,
                self.spec.max_positions
            )));
        }
        if rows > self.max_rows_per_pass() {
            return Err(Error::internal(format!("{rows} rows exceed the per-pass maximum {}", self.max_rows_per_pass())));
        }
        if let Some(&bad) = tokens.iter().chain(targets).find(|&&t| t as usize >= self.spec.vocab_size) {
            return Err(Error::bad_input(format!(
                "token id {bad} is outside the model's vocabulary of {}: the tokenizer does not match the model",
                self.spec.vocab_size
            )));
        }
        let running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.weights_resident() {
            return Err(Error::internal("a pass was queued on a model whose weights are released"));
        }
        if let Some(limit) = injected_memory_limit() {
            if windows > limit {
                // Reported when the pass is collected, like a real device's failure, so the
                // pass queued behind it is in flight by then.
                self.gpu.report_failure(&format!("out of memory (injected: more than {limit} windows per pass)"));
            }
        }
        let ws = self.workspace(rows);
        // The LM head runs over the scored rows gathered into a block padded to a multiple of
        // SCORED_ROWS_STEP (few programs to record), or over all rows when that is no smaller.
        // Without the head the scored rows are always gathered: whoever reads them finds them
        // in order.
        let padded = scored.len().next_multiple_of(SCORED_ROWS_STEP);
        let scored_rows = match kind {
            PassKind::Hidden => Some(Self::hidden_rows(rows, scored.len())),
            _ => (padded < rows).then_some(padded),
        };
        let program = {
            let key = ProgramKey { windows, len, packed: layout.packed, scored_rows, kind };
            let existing = self.programs.lock().unwrap().get(&key).cloned();
            match existing {
                Some(p) => p,
                None => {
                    let p = Arc::new(self.record(&ws, key));
                    self.programs.lock().unwrap().insert(key, p.clone());
                    p
                }
            }
        };
        self.gpu.queue.write_buffer(&ws.tokens, 0, bytemuck::cast_slice(tokens));
        self.gpu.queue.write_buffer(&ws.positions, 0, bytemuck::cast_slice(&layout.positions));
        self.gpu.queue.write_buffer(&ws.segments, 0, bytemuck::cast_slice(&layout.segments));
        if kind.uses_cache() {
            self.gpu.queue.write_buffer(&ws.cache_rows, 0, bytemuck::cast_slice(cache_rows));
        }
        let head_rows = match scored_rows {
            Some(padded) => {
                // Padding rows score row 0 again; their results are dropped.
                let mut index = scored.to_vec();
                index.resize(padded, 0);
                let head_targets: Vec<u32> = index.iter().map(|&r| targets[r as usize]).collect();
                self.gpu.queue.write_buffer(&ws.scored, 0, bytemuck::cast_slice(&index));
                self.gpu.queue.write_buffer(&ws.targets, 0, bytemuck::cast_slice(&head_targets));
                padded
            }
            None => {
                self.gpu.queue.write_buffer(&ws.targets, 0, bytemuck::cast_slice(targets));
                rows
            }
        };
        program.submit(&self.gpu);
        Ok((running, ws, head_rows, scored_rows.is_some()))
    }

    /// Records the forward pass for `key.windows` x `key.len` rows (`packed`: see
    /// [`RowLayout`]), the LM head over all rows or over `scored_rows` gathered rows.
    fn record(&self, ws: &Workspace, key: ProgramKey) -> Program {
        let ProgramKey { windows, len, packed, scored_rows, kind } = key;
        let cache = kind.uses_cache().then(|| self.cache.lock().unwrap().clone().expect("a KV cache is reserved before generation passes"));
        let spec = &self.spec;
        let rows = windows * len;
        let d = spec.hidden;
        let w = &*self.weights();
        let mut p = Program::builder(&self.gpu);

        gather(&mut p, &w.embedding, &ws.tokens, &ws.x, rows, spec.embedding_scale, false);
        if let Some(positions) = &w.positions {
            gather(&mut p, positions, &ws.positions, &ws.x, rows, 1.0, true);
        }
        let qkv_width = spec.qkv_width();
        let up_width = spec.up_width();
        let tables: Vec<_> = (0..spec.ropes.len()).map(|r| self.rope_table(r, self.rope_len(len, kind))).collect();
        for (index, (layer, attention)) in w.layers.iter().zip(&spec.layer_attention).enumerate() {
            // Attention block: [norm] -> fused QKV -> [QK-norm] -> RoPE -> attention -> output
            // projection -> [post-norm] -> residual.
            let attn_in = self.maybe_norm(&mut p, rows, &ws.x, &ws.h, layer.attn_norm.as_ref());
            // A parallel block's MLP reads the block input, so normalise it before x changes.
            let parallel_mlp_in = spec.parallel_residual.then(|| self.maybe_norm(&mut p, rows, &ws.x, &ws.h2, layer.ffn_norm.as_ref()));
            let qkv = Linear { matrices: &layer.qkv, bias: layer.qkv_bias.as_ref() };
            self.linear(&mut p, rows, attn_in, qkv, Columns::all(&ws.qkv, qkv_width));
            self.qk_norm(&mut p, rows, &ws.qkv, layer.q_norm.as_ref(), layer.k_norm.as_ref());
            if let Some(table) = tables.get(attention.rope) {
                let params = ops::Rope {
                    rows: rows as u32,
                    heads: (spec.q_heads + spec.kv_heads) as u32,
                    head_dim: spec.head_dim as u32,
                    rotary_half: (spec.rotary_dim(attention.rope) / 2) as u32,
                    stride: qkv_width as u32,
                };
                ops::rope(&mut p, params, &ws.positions, table, &ws.qkv);
            }
            if let Some(cache) = &cache {
                let params = ops::KvStore {
                    rows: rows as u32,
                    kv_width: (spec.kv_heads * spec.head_dim) as u32,
                    qkv_stride: qkv_width as u32,
                    k_offset: spec.q_width() as u32,
                };
                ops::kv_store(&mut p, params, &ws.qkv, &ws.cache_rows, &cache.layers[index]);
            }
            match (kind, &cache) {
                (PassKind::Decode, Some(cache)) => {
                    let params = ops::DecodeAttention {
                        rows: rows as u32,
                        q_heads: spec.q_heads as u32,
                        kv_heads: spec.kv_heads as u32,
                        qkv_stride: qkv_width as u32,
                        slot_len: cache.slot_len as u32,
                        scale: spec.attention_scale,
                        softcap: spec.attention_softcap,
                        sliding_window: attention.sliding_window.unwrap_or(0) as u32,
                    };
                    ops::decode_attention(&mut p, spec.head_dim as u32, params, &ws.qkv, &ws.cache_rows, &cache.layers[index], &ws.attn);
                }
                _ => self.window_attention(&mut p, ws, windows, len, packed, attention),
            }
            let o = Linear { matrices: std::slice::from_ref(&layer.o), bias: layer.o_bias.as_ref() };
            self.project_into_residual(&mut p, rows, &ws.attn, o, layer.post_attn_norm.as_ref(), ws);

            // MLP block: [norm] -> up (gate | up) -> activation -> down -> [post-norm] -> residual.
            let mlp_in = match parallel_mlp_in {
                Some(input) => input,
                None => self.maybe_norm(&mut p, rows, &ws.x, &ws.h, layer.ffn_norm.as_ref()),
            };
            let up = Linear { matrices: &layer.up, bias: layer.up_bias.as_ref() };
            self.linear(&mut p, rows, mlp_in, up, Columns::all(&ws.ff, up_width));
            let params = ops::Activation { rows: rows as u32, width: spec.intermediate as u32, gated: spec.gated_mlp.into() };
            ops::activation(&mut p, spec.activation, params, &ws.ff, &ws.act);
            let down = Linear { matrices: std::slice::from_ref(&layer.down), bias: layer.down_bias.as_ref() };
            self.project_into_residual(&mut p, rows, &ws.act, down, layer.post_ffn_norm.as_ref(), ws);
        }
        let head_rows = match scored_rows {
            Some(scored_rows) => {
                // The scored rows of x, gathered as rows of an f32 table.
                let params = ops::Embedding { rows: scored_rows as u32, width: d as u32, first_row: 0, part_rows: rows as u32, scale: 1.0, accumulate: 0 };
                ops::embedding(&mut p, WeightFormat::F32, params, &ws.scored, &ws.x, &ws.h2);
                self.norm(&mut p, scored_rows, &ws.h2, &ws.h, &w.final_norm);
                scored_rows
            }
            None => {
                self.norm(&mut p, rows, &ws.x, &ws.h, &w.final_norm);
                rows
            }
        };
        let rows = head_rows;
        if kind == PassKind::Hidden {
            return p.build();
        }

        let head = ops::LmHead { matrix: w.head(), vocab: spec.vocab_size, softcap: spec.final_softcap };
        ops::lm_head_loss(&mut p, rows, head, &ws.h, &ws.targets, &ws.partials);
        match kind {
            PassKind::Score => ops::loss_combine(&mut p, rows, head.tiles(), &ws.targets, &ws.partials, &ws.scores),
            _ => ops::greedy_combine(&mut p, rows, head.tiles(), &ws.targets, &ws.partials, &ws.scores),
        }
        p.build()
    }

    /// Causal attention within each of `windows` windows of `len` rows of the fused QKV rows.
    fn window_attention(&self, p: &mut ProgramBuilder, ws: &Workspace, windows: usize, len: usize, packed: bool, attention: &LayerAttention) {
        let spec = &self.spec;
        let params = ops::Attention {
            rows: (windows * len) as u32,
            window_len: len as u32,
            q_heads: spec.q_heads as u32,
            kv_heads: spec.kv_heads as u32,
            qkv_stride: spec.qkv_width() as u32,
            scale: spec.attention_scale,
            softcap: spec.attention_softcap,
            sliding_window: attention.sliding_window.unwrap_or(0) as u32,
            packed: packed.into(),
        };
        ops::attention(p, spec.head_dim as u32, params, &ws.qkv, &ws.positions, &ws.segments, &ws.attn);
    }

    /// Positions the RoPE tables of a pass cover: its window, or with the KV cache, a slot.
    fn rope_len(&self, len: usize, kind: PassKind) -> usize {
        match (kind.uses_cache(), self.cache.lock().unwrap().as_ref()) {
            (true, Some(cache)) => cache.slot_len.max(len),
            _ => len,
        }
    }

    /// `input @ linear^T (+ bias)` into `output`'s columns, each matrix writing the next ones
    /// (fused QKV and gate/up from separate or fused weights alike), one dispatch per part.
    fn linear(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, linear: Linear, output: Columns) {
        let mut col_offset = output.offset;
        for matrix in linear.matrices {
            for part in &matrix.parts {
                let params = ops::Matmul {
                    rows: rows as u32,
                    cols: part.rows as u32,
                    depth: matrix.cols as u32,
                    col_offset: (col_offset + part.first_row) as u32,
                    out_stride: output.stride as u32,
                    has_bias: linear.bias.is_some().into(),
                    accumulate: output.accumulate.into(),
                };
                let bias = linear.bias.unwrap_or(&self.dummy);
                ops::matmul(p, matrix.dtype.format(), params, input, part, bias, output.buffer);
            }
            col_offset += matrix.rows;
        }
    }

    /// x += input @ linear^T (+ bias), through a post-norm when the block has one.
    fn project_into_residual(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, linear: Linear, post_norm: Option<&NormWeights<wgpu::Buffer>>, ws: &Workspace) {
        let d = self.spec.hidden;
        match post_norm {
            None => self.linear(p, rows, input, linear, Columns { accumulate: true, ..Columns::all(&ws.x, d) }),
            Some(norm) => {
                self.linear(p, rows, input, linear, Columns::all(&ws.h, d));
                self.norm_segments(p, &ws.h, &ws.x, norm, Segments::rows(rows, d), true);
            }
        }
    }

    /// The normalised `input` in `output`, or `input` itself when the block has no such norm.
    fn maybe_norm<'b>(&self, p: &mut ProgramBuilder, rows: usize, input: &'b wgpu::Buffer, output: &'b wgpu::Buffer, norm: Option<&NormWeights<wgpu::Buffer>>) -> &'b wgpu::Buffer {
        match norm {
            Some(norm) => {
                self.norm(p, rows, input, output, norm);
                output
            }
            None => input,
        }
    }

    /// QK-norm in place on the q and k columns of the fused QKV activation.
    fn qk_norm(&self, p: &mut ProgramBuilder, rows: usize, qkv: &wgpu::Buffer, q: Option<&wgpu::Buffer>, k: Option<&wgpu::Buffer>) {
        let s = &self.spec;
        let (Some(q), Some(k)) = (q, k) else { return };
        for (weight, heads, offset) in [(q, s.q_heads, 0), (k, s.kv_heads, s.q_width())] {
            let (width, per_row) = match s.qk_norm {
                QkNorm::PerHead => (s.head_dim, heads),
                _ => (heads * s.head_dim, 1),
            };
            let norm = NormWeights { weight: weight.clone(), bias: None };
            let segments = Segments { rows, width, per_row, stride: s.qkv_width(), offset };
            self.norm_segments(p, &self.dummy, qkv, &norm, segments, false);
        }
    }

    fn norm(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, output: &wgpu::Buffer, norm: &NormWeights<wgpu::Buffer>) {
        self.norm_segments(p, input, output, norm, Segments::rows(rows, self.spec.hidden), false);
    }

    /// The norm kernel over `segments` (see norm.wgsl). Reading from the dummy buffer means in
    /// place on `output`.
    fn norm_segments(&self, p: &mut ProgramBuilder, input: &wgpu::Buffer, output: &wgpu::Buffer, norm: &NormWeights<wgpu::Buffer>, segments: Segments, accumulate: bool) {
        let s = &self.spec;
        let Segments { rows, width, per_row, stride, offset } = segments;
        let params = ops::Norm {
            segments_total: (rows * per_row) as u32,
            width: width as u32,
            segments: per_row as u32,
            stride: stride as u32,
            offset: offset as u32,
            layer_norm: (s.norm == NormKind::Layer).into(),
            has_bias: norm.bias.is_some().into(),
            in_place: std::ptr::eq(input, &self.dummy).into(),
            accumulate: accumulate.into(),
            eps: s.norm_eps,
            weight_offset: s.norm_weight_offset,
        };
        ops::norm(p, params, input, &norm.weight, norm.bias.as_ref().unwrap_or(&self.dummy), output);
    }
}

/// Embedding-table gather of `indices` (token ids, or positions for learned position
/// embeddings) from every part of `table`, added to `output` when `accumulate`.
fn gather(p: &mut ProgramBuilder, table: &GpuMatrix, indices: &wgpu::Buffer, output: &wgpu::Buffer, rows: usize, scale: f32, accumulate: bool) {
    for part in &table.parts {
        let params = ops::Embedding {
            rows: rows as u32,
            width: table.cols as u32,
            first_row: part.first_row as u32,
            part_rows: part.rows as u32,
            scale,
            accumulate: accumulate.into(),
        };
        ops::embedding(p, table.dtype.format(), params, indices, part.rows_buffer(), output);
    }
}

/// A linear layer: matrices whose rows, stacked, are its outputs, and the bias of those.
#[derive(Clone, Copy)]
struct Linear<'a> {
    matrices: &'a [GpuMatrix],
    bias: Option<&'a wgpu::Buffer>,
}

/// Where a linear layer writes: columns from `offset` of rows `stride` apart, added to what is
/// there when `accumulate`.
#[derive(Clone, Copy)]
struct Columns<'a> {
    buffer: &'a wgpu::Buffer,
    offset: usize,
    stride: usize,
    accumulate: bool,
}

impl<'a> Columns<'a> {
    /// Every column of rows `stride` wide, overwritten.
    fn all(buffer: &'a wgpu::Buffer, stride: usize) -> Columns<'a> {
        Columns { buffer, offset: 0, stride, accumulate: false }
    }
}

/// What the norm kernel normalises: `per_row` segments of `width` values in each of `rows` rows
/// `stride` apart, the first at column `offset`.
#[derive(Clone, Copy)]
struct Segments {
    rows: usize,
    width: usize,
    per_row: usize,
    stride: usize,
    offset: usize,
}

impl Segments {
    /// Whole rows of `width` values.
    fn rows(rows: usize, width: usize) -> Segments {
        Segments { rows, width, per_row: 1, stride: width, offset: 0 }
    }
}

/// How many windows one GPU pass scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// As many as the device takes: up to [`AUTO_PASS_ROWS`] positions and what one storage
    /// binding holds; halved for the rest of the run if the device runs out of memory.
    Auto,
    /// At most this many (fewer when they do not fit in one storage binding).
    Windows(usize),
}

impl From<usize> for Batch {
    fn from(windows: usize) -> Batch {
        Batch::Windows(windows)
    }
}

impl std::str::FromStr for Batch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Batch, String> {
        match s {
            "auto" => Ok(Batch::Auto),
            _ => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Batch::Windows(n)),
                _ => Err(format!("'{s}' is not a batch size: give a positive number of windows or 'auto'")),
            },
        }
    }
}
