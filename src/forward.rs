//! The one transformer forward pass on the GPU, parameterised by a [`ModelSpec`]. For a batch of
//! token windows it records, once per batch shape, the whole pass as a [`Program`]: embedding,
//! per layer norm -> fused QKV -> RoPE -> attention -> output projection (+ residual) -> norm ->
//! MLP (+ residual), final norm, and the LM head fused with log-softmax, which emits per position
//! log p(target) and whether the target was the argmax. Logits never leave the kernel.

use crate::error::{Error, Result};
use crate::gpu::{f32_bits, row_grid, DType, Gpu, GpuMatrix, KernelId, Program, ProgramBuilder, BLOCK_ROWS, TILE_COLS};
use crate::model::{load_weights, Checkpoint, ModelSpec, ModelWeights, NormKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Per-position result of scoring a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    pub logprob: f32,
    pub greedy: bool,
}

/// Activation buffers for up to `rows` rows (windows x window length).
struct Workspace {
    rows: usize,
    tokens: wgpu::Buffer,
    targets: wgpu::Buffer,
    x: wgpu::Buffer,
    h: wgpu::Buffer,
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
    programs: Mutex<HashMap<(usize, usize), Arc<Program>>>,
    rope_tables: Mutex<HashMap<usize, Arc<wgpu::Buffer>>>,
    pub weight_bytes: u64,
    pub weight_dtype: DType,
}

impl GpuModel {
    /// Uploads the checkpoint's weights in their stored width.
    pub fn load(gpu: Arc<Gpu>, spec: ModelSpec, checkpoint: &Checkpoint) -> Result<GpuModel> {
        let mut weight_bytes = 0u64;
        let mut dtype = None;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let weights = load_weights(
            &spec,
            checkpoint,
            |tensor| {
                let matrix = GpuMatrix::upload(&gpu, &tensor.name, tensor.shape[0], tensor.shape[1], tensor.dtype, tensor.bytes)?;
                weight_bytes += matrix.bytes();
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
            s.q_heads * s.head_dim * 4,
            2 * s.intermediate * 4,
            s.intermediate * 4,
            self.vocab_tiles() * 16,
        ]
    }

    /// Most rows one pass may hold: every activation buffer must fit in one storage binding.
    pub fn max_rows_per_pass(&self) -> usize {
        let widest = *self.row_bytes().iter().max().unwrap() as u64;
        (self.gpu.max_binding / widest).max(1) as usize
    }

    /// Activation memory for `rows` rows, in bytes.
    pub fn activation_bytes(&self, rows: usize) -> u64 {
        let per_row: usize = self.row_bytes().iter().sum::<usize>() * 2 + 4 * 2 + 8;
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
            x: gpu.storage("x", x),
            h: gpu.storage("h", x),
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

    fn rope_table(&self, len: usize) -> Arc<wgpu::Buffer> {
        let mut tables = self.rope_tables.lock().unwrap();
        tables
            .entry(len)
            .or_insert_with(|| {
                let table = self.spec.rope_table(len);
                Arc::new(self.gpu.upload("rope cos/sin", bytemuck::cast_slice::<[f32; 2], f32>(&table)))
            })
            .clone()
    }

    /// Scores `windows` windows of `len` positions each: `tokens[w * len + t]` is the input at
    /// position t of window w and `targets[...]` the token it should predict. Returns one score
    /// per position. A window's scores do not depend on the other windows or on `len` padding.
    pub fn score(&self, windows: usize, len: usize, tokens: &[u32], targets: &[u32]) -> Result<Vec<TokenScore>> {
        let rows = windows * len;
        assert_eq!(tokens.len(), rows);
        assert_eq!(targets.len(), rows);
        if rows == 0 {
            return Ok(Vec::new());
        }
        if len > self.spec.max_positions && self.spec.rope.is_none() {
            return Err(Error::bad_input(format!("window of {len} tokens exceeds the model's {} positions", self.spec.max_positions)));
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
        let ws = self.workspace(rows);
        let program = {
            let key = (windows, len);
            let existing = self.programs.lock().unwrap().get(&key).cloned();
            match existing {
                Some(p) => p,
                None => {
                    let p = Arc::new(self.record(&ws, windows, len));
                    self.programs.lock().unwrap().insert(key, p.clone());
                    p
                }
            }
        };
        self.gpu.queue.write_buffer(&ws.tokens, 0, bytemuck::cast_slice(tokens));
        self.gpu.queue.write_buffer(&ws.targets, 0, bytemuck::cast_slice(targets));
        program.submit(&self.gpu);
        let raw: Vec<[f32; 2]> = self.gpu.read(&ws.scores, rows)?;
        Ok(raw.into_iter().map(|[logprob, greedy]| TokenScore { logprob, greedy: greedy > 0.5 }).collect())
    }

    /// Records the forward pass for `windows` x `len` rows.
    fn record(&self, ws: &Workspace, windows: usize, len: usize) -> Program {
        let spec = &self.spec;
        let rows = windows * len;
        let d = spec.hidden;
        let w = &self.weights;
        let mut p = Program::builder(&self.gpu);

        for part in &w.embedding.parts {
            p.dispatch(
                KernelId::Embedding(w.embedding.dtype.format()),
                &[rows as u32, d as u32, part.first_row as u32, part.rows as u32, f32_bits(spec.embedding_scale), 0, len as u32, 0],
                &[&ws.tokens, &part.buffer, &ws.x],
                row_grid(d.div_ceil(64) as u32, rows),
            );
        }
        let qkv_width = spec.qkv_width();
        let q_width = spec.q_heads * spec.head_dim;
        let kv_width = spec.kv_heads * spec.head_dim;
        let f = spec.intermediate;
        let rope = self.rope_table(len);
        for layer in &w.layers {
            self.norm(&mut p, rows, &ws.x, &ws.h, &layer.attn_norm);
            let bias = layer.qkv_bias.as_ref();
            self.matmul(&mut p, rows, &ws.h, &layer.q, bias, &ws.qkv, 0, qkv_width, false);
            self.matmul(&mut p, rows, &ws.h, &layer.k, bias, &ws.qkv, q_width, qkv_width, false);
            self.matmul(&mut p, rows, &ws.h, &layer.v, bias, &ws.qkv, q_width + kv_width, qkv_width, false);
            if let Some(r) = &spec.rope {
                let half = r.rotary_dim / 2;
                let heads = spec.q_heads + spec.kv_heads;
                p.dispatch(
                    KernelId::Rope,
                    &[rows as u32, heads as u32, spec.head_dim as u32, half as u32, qkv_width as u32, len as u32, 0, 0],
                    &[&rope, &ws.qkv],
                    row_grid(half.div_ceil(64) as u32, rows * heads),
                );
            }
            p.dispatch(
                self.attention_kernel(),
                &[
                    rows as u32,
                    len as u32,
                    spec.q_heads as u32,
                    spec.kv_heads as u32,
                    qkv_width as u32,
                    f32_bits(spec.attention_scale),
                    f32_bits(0.0),
                    spec.sliding_window.unwrap_or(0) as u32,
                ],
                &[&ws.qkv, &ws.attn],
                [len.div_ceil(32) as u32, spec.q_heads as u32, windows as u32],
            );
            self.matmul(&mut p, rows, &ws.attn, &layer.o, layer.o_bias.as_ref(), &ws.x, 0, d, true);
            self.norm(&mut p, rows, &ws.x, &ws.h, &layer.ffn_norm);
            let up_offset = if let Some(gate) = &layer.gate {
                self.matmul(&mut p, rows, &ws.h, gate, layer.up_bias.as_ref(), &ws.ff, 0, 2 * f, false);
                f
            } else {
                0
            };
            let ff_stride = if spec.gated_mlp { 2 * f } else { f };
            self.matmul(&mut p, rows, &ws.h, &layer.up, layer.up_bias.as_ref(), &ws.ff, up_offset, ff_stride, false);
            p.dispatch(
                KernelId::Activation,
                &[rows as u32, f as u32, spec.activation.code(), spec.gated_mlp as u32],
                &[&ws.ff, &ws.act],
                row_grid(f.div_ceil(64) as u32, rows),
            );
            self.matmul(&mut p, rows, &ws.act, &layer.down, layer.down_bias.as_ref(), &ws.x, 0, d, true);
        }
        self.norm(&mut p, rows, &ws.x, &ws.h, &w.final_norm);

        let head = w.head();
        let tiles = self.vocab_tiles();
        for part in &head.parts {
            p.dispatch(
                KernelId::LmHeadLoss { format: head.dtype.format(), aligned: d % 4 == 0 },
                &[
                    rows as u32,
                    part.rows as u32,
                    d as u32,
                    part.first_row as u32,
                    tiles as u32,
                    0,
                    0,
                    (part.first_row / TILE_COLS) as u32,
                    f32_bits(0.0),
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

    fn attention_kernel(&self) -> KernelId {
        let head_dim = self.spec.head_dim as u32;
        let by_memory = self.gpu.max_workgroup_storage / (2 * head_dim.div_ceil(4) * 16);
        KernelId::Attention { head_dim, key_tile: by_memory.clamp(1, 32) }
    }

    fn norm(&self, p: &mut ProgramBuilder, rows: usize, input: &wgpu::Buffer, output: &wgpu::Buffer, weight: &wgpu::Buffer) {
        let s = &self.spec;
        let d = s.hidden as u32;
        p.dispatch(
            KernelId::Norm,
            &[
                rows as u32,
                d,
                1,
                d,
                0,
                (s.norm == NormKind::Layer) as u32,
                0,
                0,
                0,
                f32_bits(s.norm_eps),
                f32_bits(s.norm_weight_offset),
            ],
            &[input, weight, &self.dummy, output],
            row_grid(1, rows),
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
                KernelId::Matmul { format: weight.dtype.format(), aligned: weight.cols % 4 == 0 },
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
