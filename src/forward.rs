//! The one transformer forward pass on the GPU, parameterised by a [`ModelSpec`]. For a batch of
//! token windows it records, once per batch shape, the whole pass as a [`Program`]: embedding,
//! per layer norm -> fused QKV -> RoPE -> attention -> output projection (+ residual) -> norm ->
//! MLP (+ residual), final norm, and the LM head fused with log-softmax, which emits per position
//! log p(target) and whether the target was the argmax. Logits never leave the kernel.

use crate::error::{Error, Result};
use crate::gpu::{f32_bits, row_grid, DType, Gpu, GpuMatrix, KernelId, PendingRead, Program, ProgramBuilder, ReadPath, BLOCK_ROWS, TILE_COLS};
use crate::model::{load_weights, Checkpoint, ModelSpec, ModelWeights, NormKind, NormWeights, QkNorm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Positions per pass under `--batch auto`: enough rows for every matmul to run at the device's
/// full rate (a few thousand suffice on current GPUs), few enough that the activations of even a
/// large-vocabulary model stay around a GiB.
pub const AUTO_PASS_ROWS: usize = 16384;

/// The LM head's row count is a multiple of this, so passes with similar numbers of scored rows
/// share one recorded program.
const SCORED_ROWS_STEP: usize = 64;

/// What a recorded pass depends on besides the workspace.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ProgramKey {
    windows: usize,
    len: usize,
    packed: bool,
    /// Rows gathered for the LM head; None: all `windows * len` rows in place.
    scored_rows: Option<usize>,
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
    pub greedy: bool,
}

/// A pass queued by [`GpuModel::submit_rows`]; [`PendingScores::finish`] collects its scores.
#[must_use = "a submitted pass's scores are collected with finish"]
pub struct PendingScores {
    raw: PendingRead<[f32; 2]>,
    rows: ScoredRows,
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
        let raw = self.raw.finish(gpu)?;
        let score = |[logprob, greedy]: [f32; 2]| TokenScore { logprob, greedy: greedy > 0.5 };
        Ok(match self.rows {
            ScoredRows::Gathered(count) => raw[..count].iter().map(|&r| score(r)).collect(),
            ScoredRows::InPlace(rows) => rows.iter().map(|&r| score(raw[r as usize])).collect(),
        })
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
    weights: ModelWeights<GpuMatrix, wgpu::Buffer>,
    /// Bound where a kernel's optional input is absent.
    dummy: wgpu::Buffer,
    workspace: Mutex<Option<Arc<Workspace>>>,
    /// Held while a batch runs: batches share the workspace buffers.
    running: Mutex<()>,
    programs: Mutex<HashMap<ProgramKey, Arc<Program>>>,
    rope_tables: Mutex<HashMap<(usize, usize), Arc<wgpu::Buffer>>>,
    pub weight_bytes: u64,
    /// The largest weight buffer (one part of a matrix): the size of the scratch texture it is
    /// copied into before each product on the texture read path.
    largest_part_bytes: u64,
    pub weight_dtype: DType,
}

impl GpuModel {
    /// Uploads the checkpoint's weights in their stored width.
    pub fn load(gpu: Arc<Gpu>, spec: ModelSpec, checkpoint: &Checkpoint) -> Result<GpuModel> {
        let mut weight_bytes = 0u64;
        let mut largest_part_bytes = 0u64;
        let mut dtype = None;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let weights = load_weights(
            &spec,
            checkpoint,
            |tensor| {
                let matrix = GpuMatrix::upload(&gpu, &tensor.name, tensor.shape[0], tensor.shape[1], tensor.dtype, &tensor.bytes)?;
                // Each upload goes through a staging buffer that lives until the queue moves on;
                // flushing here frees it before the next one, so staging never doubles the
                // footprint nor leaves holes between weights.
                gpu.queue.submit([]);
                gpu.wait()?;
                weight_bytes += matrix.bytes();
                largest_part_bytes = matrix.parts.iter().map(|part| part.buffer.size()).fold(largest_part_bytes, u64::max);
                dtype.get_or_insert(tensor.dtype);
                Ok(matrix)
            },
            |name, values| Ok(gpu.upload(name, &values)),
        )?;
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(Error::bad_input(format!(
                "the model's weights ({:.1} MiB) do not fit in the memory of {}: {error}. Use a smaller model or a GPU with more memory.",
                weight_bytes as f64 / (1 << 20) as f64,
                gpu.describe()
            )));
        }
        gpu.check_healthy()?;
        let dummy = gpu.storage("unused", 16);
        Ok(GpuModel {
            dummy,
            weights,
            spec,
            workspace: Mutex::new(None),
            running: Mutex::new(()),
            programs: Mutex::new(HashMap::new()),
            rope_tables: Mutex::new(HashMap::new()),
            weight_bytes,
            largest_part_bytes,
            weight_dtype: dtype.unwrap_or(DType::F32),
            gpu,
        })
    }

    /// How many buffers the embedding table is split into (more than one past the binding limit).
    pub fn embedding_parts(&self) -> usize {
        self.weights.embedding.parts.len()
    }

    fn vocab_tiles(&self) -> usize {
        self.spec.vocab_size.div_ceil(TILE_COLS)
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
            self.vocab_tiles() * 16,
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

    /// Activation memory for `rows` rows, in bytes. On the texture read path the scratch texture
    /// of one weight part is added; the activation copies fit within the second copy of each
    /// activation buffer already counted.
    pub fn activation_bytes(&self, rows: usize) -> u64 {
        // Activations (each buffer twice at most in flight), tokens, targets, positions, segments, scores.
        let per_row: usize = self.row_bytes().iter().sum::<usize>() * 2 + 4 * 3 + 8 + 8;
        let scratch = match self.gpu.read_path {
            ReadPath::Textures => self.largest_part_bytes,
            ReadPath::Buffers => 0,
        };
        (per_row * rows) as u64 + scratch
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
        let _running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = ProgramKey { windows, len, packed: false, scored_rows: None };
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
        let rows = windows * len;
        assert_eq!(tokens.len(), rows);
        assert_eq!(targets.len(), rows);
        assert!(scored.windows(2).all(|w| w[0] < w[1]) && scored.last().is_none_or(|&r| (r as usize) < rows));
        assert_eq!(layout.positions.len(), rows);
        assert_eq!(layout.segments.len(), rows);
        if rows == 0 {
            return Ok(PendingScores { raw: PendingRead::nothing(), rows: ScoredRows::Gathered(0) });
        }
        // RoPE tables cover `len` positions; a row's position never exceeds its row in the window.
        let last_position = layout.positions.iter().max().map_or(0, |&p| p as usize);
        assert!(last_position < len);
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
        let _running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let padded = scored.len().next_multiple_of(SCORED_ROWS_STEP);
        let scored_rows = (padded < rows).then_some(padded);
        let program = {
            let key = ProgramKey { windows, len, packed: layout.packed, scored_rows };
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
        // Queued behind the pass before the workspace is released: a later pass overwrites
        // `scores` only after this copy.
        let raw = self.gpu.start_read(&ws.scores, head_rows);
        let rows = match scored_rows {
            Some(_) => ScoredRows::Gathered(scored.len()),
            None => ScoredRows::InPlace(scored.to_vec()),
        };
        Ok(PendingScores { raw, rows })
    }

    /// Records the forward pass for `key.windows` x `key.len` rows (`packed`: see
    /// [`RowLayout`]), the LM head over all rows or over `scored_rows` gathered rows.
    fn record(&self, ws: &Workspace, key: ProgramKey) -> Program {
        let ProgramKey { windows, len, packed, scored_rows } = key;
        let spec = &self.spec;
        let rows = windows * len;
        let d = spec.hidden;
        let w = &self.weights;
        let mut p = Program::builder(&self.gpu);

        self.gather(&mut p, &w.embedding, &ws.tokens, &ws.x, rows, spec.embedding_scale, false);
        if let Some(positions) = &w.positions {
            self.gather(&mut p, positions, &ws.positions, &ws.x, rows, 1.0, true);
        }
        let qkv_width = spec.qkv_width();
        let up_width = spec.up_width();
        let tables: Vec<_> = (0..spec.ropes.len()).map(|r| self.rope_table(r, len)).collect();
        for (layer, attention) in w.layers.iter().zip(&spec.layer_attention) {
            // Attention block: [norm] -> fused QKV -> [QK-norm] -> RoPE -> attention -> output
            // projection -> [post-norm] -> residual.
            let attn_in = self.maybe_norm(&mut p, rows, &ws.x, &ws.h, layer.attn_norm.as_ref());
            // A parallel block's MLP reads the block input, so normalise it before x changes.
            let parallel_mlp_in = spec.parallel_residual.then(|| self.maybe_norm(&mut p, rows, &ws.x, &ws.h2, layer.ffn_norm.as_ref()));
            self.matmuls(&mut p, rows, attn_in, &layer.qkv, layer.qkv_bias.as_ref(), &ws.qkv, qkv_width);
            self.qk_norm(&mut p, rows, &ws.qkv, layer.q_norm.as_ref(), layer.k_norm.as_ref());
            if let Some(table) = tables.get(attention.rope) {
                let half = spec.rotary_dim(attention.rope) / 2;
                let heads = spec.q_heads + spec.kv_heads;
                p.dispatch(
                    KernelId::Rope,
                    &[rows as u32, heads as u32, spec.head_dim as u32, half as u32, qkv_width as u32, 0, 0, 0],
                    &[&ws.positions, table, &ws.qkv],
                    row_grid(half.div_ceil(64) as u32, rows * heads),
                );
            }
            p.dispatch(
                KernelId::attention(&self.gpu, spec.head_dim as u32),
                &[
                    rows as u32,
                    len as u32,
                    spec.q_heads as u32,
                    spec.kv_heads as u32,
                    qkv_width as u32,
                    f32_bits(spec.attention_scale),
                    f32_bits(spec.attention_softcap),
                    attention.sliding_window.unwrap_or(0) as u32,
                    packed as u32,
                ],
                &[&ws.qkv, &ws.positions, &ws.segments, &ws.attn],
                [len.div_ceil(32) as u32, spec.q_heads as u32, windows as u32],
            );
            self.project_into_residual(&mut p, rows, &ws.attn, &layer.o, layer.o_bias.as_ref(), layer.post_attn_norm.as_ref(), ws);

            // MLP block: [norm] -> up (gate | up) -> activation -> down -> [post-norm] -> residual.
            let mlp_in = match parallel_mlp_in {
                Some(input) => input,
                None => self.maybe_norm(&mut p, rows, &ws.x, &ws.h, layer.ffn_norm.as_ref()),
            };
            self.matmuls(&mut p, rows, mlp_in, &layer.up, layer.up_bias.as_ref(), &ws.ff, up_width);
            p.dispatch(
                KernelId::Activation,
                &[rows as u32, spec.intermediate as u32, spec.activation.code(), spec.gated_mlp as u32],
                &[&ws.ff, &ws.act],
                row_grid(spec.intermediate.div_ceil(64) as u32, rows),
            );
            self.project_into_residual(&mut p, rows, &ws.act, &layer.down, layer.down_bias.as_ref(), layer.post_ffn_norm.as_ref(), ws);
        }
        let head_rows = match scored_rows {
            Some(scored_rows) => {
                self.gather_part(&mut p, DType::F32, &ws.x, 0, rows, d, &ws.scored, &ws.h2, scored_rows, 1.0, false);
                self.norm(&mut p, scored_rows, &ws.h2, &ws.h, &w.final_norm);
                scored_rows
            }
            None => {
                self.norm(&mut p, rows, &ws.x, &ws.h, &w.final_norm);
                rows
            }
        };
        let rows = head_rows;

        let head = w.head();
        let tiles = self.vocab_tiles();
        for part in &head.parts {
            p.dispatch(
                KernelId::lm_head_loss(head.dtype.format(), d),
                &[
                    rows as u32,
                    part.rows as u32,
                    d as u32,
                    part.first_row as u32,
                    tiles as u32,
                    0,
                    0,
                    (part.first_row / TILE_COLS) as u32,
                    f32_bits(spec.final_softcap),
                    spec.vocab_size as u32,
                ],
                &[&ws.h, &part.buffer, &ws.targets, &ws.partials],
                [part.rows.div_ceil(TILE_COLS) as u32, rows.div_ceil(BLOCK_ROWS) as u32, 1],
            );
        }
        p.dispatch(
            KernelId::LossCombine,
            &[rows as u32, 0, 0, 0, tiles as u32],
            &[&ws.targets, &ws.partials, &ws.scores],
            [rows.div_ceil(64) as u32, 1, 1],
        );
        p.build()
    }

    /// Embedding-table gather of `indices` (token ids, or positions for learned position
    /// embeddings), added to `output` when `accumulate`.
    #[allow(clippy::too_many_arguments)]
    fn gather(&self, p: &mut ProgramBuilder, table: &GpuMatrix, indices: &wgpu::Buffer, output: &wgpu::Buffer, rows: usize, scale: f32, accumulate: bool) {
        for part in &table.parts {
            self.gather_part(p, table.dtype, &part.buffer, part.first_row, part.rows, table.cols, indices, output, rows, scale, accumulate);
        }
    }

    /// [`GpuModel::gather`] from one part: rows `first_row..first_row + part_rows` of a
    /// `width`-column table in `dtype`.
    #[allow(clippy::too_many_arguments)]
    fn gather_part(
        &self,
        p: &mut ProgramBuilder,
        dtype: DType,
        part: &wgpu::Buffer,
        first_row: usize,
        part_rows: usize,
        width: usize,
        indices: &wgpu::Buffer,
        output: &wgpu::Buffer,
        rows: usize,
        scale: f32,
        accumulate: bool,
    ) {
        p.dispatch(
            KernelId::Embedding(dtype.format()),
            &[rows as u32, width as u32, first_row as u32, part_rows as u32, f32_bits(scale), 0, 0, accumulate as u32],
            &[indices, part, output],
            row_grid(width.div_ceil(64) as u32, rows),
        );
    }

    /// `output = input @ (matrices stacked by rows)^T (+ bias)`, each matrix writing the next
    /// columns of `output` (fused QKV and gate/up from separate or fused weights alike).
    #[allow(clippy::too_many_arguments)]
    fn matmuls(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, matrices: &[GpuMatrix], bias: Option<&wgpu::Buffer>, output: &wgpu::Buffer, out_stride: usize) {
        let mut col = 0;
        for m in matrices {
            self.matmul(p, rows, input, m, bias, output, col, out_stride, false);
            col += m.rows;
        }
    }

    /// x += input @ weight^T (+ bias), through a post-norm when the block has one.
    #[allow(clippy::too_many_arguments)]
    fn project_into_residual(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, weight: &GpuMatrix, bias: Option<&wgpu::Buffer>, post_norm: Option<&NormWeights<wgpu::Buffer>>, ws: &Workspace) {
        let d = self.spec.hidden;
        match post_norm {
            None => self.matmul(p, rows, input, weight, bias, &ws.x, 0, d, true),
            Some(norm) => {
                self.matmul(p, rows, input, weight, bias, &ws.h, 0, d, false);
                self.norm_segments(p, rows, &ws.h, &ws.x, norm, [d, 1, d, 0], true);
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
        let stride = s.qkv_width();
        for (weight, heads, offset) in [(q, s.q_heads, 0), (k, s.kv_heads, s.q_width())] {
            let (width, segments) = match s.qk_norm {
                QkNorm::PerHead => (s.head_dim, heads),
                _ => (heads * s.head_dim, 1),
            };
            let norm = NormWeights { weight: weight.clone(), bias: None };
            self.norm_segments(p, rows, &self.dummy, qkv, &norm, [width, segments, stride, offset], false);
        }
    }

    fn norm(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, output: &wgpu::Buffer, norm: &NormWeights<wgpu::Buffer>) {
        let d = self.spec.hidden;
        self.norm_segments(p, rows, input, output, norm, [d, 1, d, 0], false);
    }

    /// The norm kernel over `rows` rows of `[width, segments, stride, offset]` layout (see
    /// norm.wgsl). Reading from the dummy buffer means in place on `output`.
    #[allow(clippy::too_many_arguments)]
    fn norm_segments(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, output: &wgpu::Buffer, norm: &NormWeights<wgpu::Buffer>, layout: [usize; 4], accumulate: bool) {
        let s = &self.spec;
        let [width, segments, stride, offset] = layout;
        let in_place = std::ptr::eq(input, &self.dummy);
        p.dispatch(
            KernelId::Norm,
            &[
                (rows * segments) as u32,
                width as u32,
                segments as u32,
                stride as u32,
                offset as u32,
                (s.norm == NormKind::Layer) as u32,
                norm.bias.is_some() as u32,
                in_place as u32,
                accumulate as u32,
                f32_bits(s.norm_eps),
                f32_bits(s.norm_weight_offset),
            ],
            &[input, &norm.weight, norm.bias.as_ref().unwrap_or(&self.dummy), output],
            row_grid(1, rows * segments),
        );
    }

    /// output[:, col_offset..col_offset + weight.rows] (+)= input @ weight^T (+ bias), one
    /// dispatch per part of the weight.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        p: &mut ProgramBuilder,
        rows: usize,
        input: &wgpu::Buffer,
        weight: &GpuMatrix,
        bias: Option<&wgpu::Buffer>,
        output: &wgpu::Buffer,
        col_offset: usize,
        out_stride: usize,
        accumulate: bool,
    ) {
        for part in &weight.parts {
            p.dispatch(
                KernelId::matmul(weight.dtype.format(), weight.cols),
                &[
                    rows as u32,
                    part.rows as u32,
                    weight.cols as u32,
                    (col_offset + part.first_row) as u32,
                    out_stride as u32,
                    bias.is_some() as u32,
                    accumulate as u32,
                ],
                &[input, &part.buffer, bias.unwrap_or(&self.dummy), output],
                [part.rows.div_ceil(TILE_COLS) as u32, rows.div_ceil(BLOCK_ROWS) as u32, 1],
            );
        }
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
