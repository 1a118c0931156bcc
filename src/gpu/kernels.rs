//! The kernel registry: every compute pipeline, built once per device from `shaders/*.wgsl` and cached.
//!
//! Each kernel uses the same binding convention: binding 0 is a small uniform parameter block
//! (bound with a dynamic offset into one parameter buffer per program), the rest are storage
//! buffers. Weight-reading kernels get a weight-access snippet prepended for the checkpoint's
//! format, so one kernel source serves f32, f16 and bf16 weights.
//!
//! A module is a [`ShaderVariant`]: a [`KernelId`] and the device's read path and subgroup
//! sharing. Its source is shaders/*.wgsl put together with the parts generated here (bindings
//! for the read path, the unrolled block product, the head-vector helpers). [`all_variants`]
//! lists every one; `perplex devices --dump-shaders DIR` writes them out, and
//! `PERPLEX_DUMP_SHADERS=DIR` writes those a run builds.

use super::{Gpu, GROUP};
use crate::error::{Error, Result};
use crate::model::Activation;
use std::path::Path;
use std::sync::Arc;

/// How weights are stored in their GPU buffer (the snippet that defines `load_weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Int8Groups,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 4] = [WeightFormat::F32, WeightFormat::F16, WeightFormat::BF16, WeightFormat::Int8Groups];

    /// The format in shader file names.
    fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::BF16 => "bf16",
            WeightFormat::Int8Groups => "int8groups",
        }
    }

    /// The WGSL type of one word of the weight buffer as the snippet reads it (`weights_at`):
    /// 16 bytes, so that one fetch brings the most weights (four f32, eight f16 or bf16, the 16
    /// integers of a quantized group: see weights_int8_groups.wgsl).
    fn word(self) -> &'static str {
        match self {
            WeightFormat::F32 => "vec4<f32>",
            WeightFormat::F16 | WeightFormat::BF16 | WeightFormat::Int8Groups => "vec4<u32>",
        }
    }

    fn snippet(self) -> &'static str {
        match self {
            WeightFormat::F32 => include_str!("../../shaders/weights_f32.wgsl"),
            WeightFormat::F16 => concat!(include_str!("../../shaders/weights_f16.wgsl"), include_str!("../../shaders/weights_halves.wgsl")),
            WeightFormat::BF16 => concat!(include_str!("../../shaders/weights_bf16.wgsl"), include_str!("../../shaders/weights_halves.wgsl")),
            WeightFormat::Int8Groups => include_str!("../../shaders/weights_int8_groups.wgsl"),
        }
    }
}

/// How many consecutive values of a row the matrix kernels take per step of their loop over the
/// depth. Every output is still one running sum over k in increasing order, so the step changes
/// which loads bring the operands, never the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DepthStep {
    /// Four, read value by value and masked past the row's end: depths not a multiple of 4.
    Masked,
    /// Four, as whole vec4 reads: depths a multiple of 4.
    Four,
    /// Eight: f16 and bf16 depths a multiple of 8, one 16-byte word instead of two halves of
    /// one. Where fetches dominate, as on lavapipe, they are most of a matrix product's cost.
    /// f32 gains nothing (two words either way) and keeps steps of four.
    Eight,
    /// Sixteen: quantized groups, a whole group per step: its header and its integers, two
    /// fetches instead of eight for four steps of four.
    Sixteen,
    /// Thirty-two: quantized rows of whole pairs of groups, a pair per step: three fetches (the
    /// word of both headers, then each group's integers) instead of four for two steps of sixteen.
    ThirtyTwo,
}

impl DepthStep {
    /// The step for rows of `depth` weights in `format`.
    pub fn of(format: WeightFormat, depth: usize) -> DepthStep {
        match format {
            WeightFormat::Int8Groups if depth.is_multiple_of(32) => DepthStep::ThirtyTwo,
            WeightFormat::Int8Groups if depth.is_multiple_of(16) => DepthStep::Sixteen,
            WeightFormat::F16 | WeightFormat::BF16 if depth.is_multiple_of(8) => DepthStep::Eight,
            _ if depth.is_multiple_of(4) => DepthStep::Four,
            _ => DepthStep::Masked,
        }
    }

    /// Every step [`DepthStep::of`] gives rows in `format` (quantized rows are whole groups).
    pub fn all(format: WeightFormat) -> Vec<DepthStep> {
        let mut steps = Vec::new();
        for depth in (1..=2 * DepthStep::ThirtyTwo.values()).filter(|d| format != WeightFormat::Int8Groups || d.is_multiple_of(GROUP)) {
            let step = DepthStep::of(format, depth);
            if !steps.contains(&step) {
                steps.push(step);
            }
        }
        steps
    }

    /// The step in shader file names.
    fn name(self) -> &'static str {
        match self {
            DepthStep::Masked => "masked4",
            DepthStep::Four => "step4",
            DepthStep::Eight => "step8",
            DepthStep::Sixteen => "step16",
            DepthStep::ThirtyTwo => "step32",
        }
    }

    fn values(self) -> usize {
        match self {
            DepthStep::Masked | DepthStep::Four => 4,
            DepthStep::Eight => 8,
            DepthStep::Sixteen => 16,
            DepthStep::ThirtyTwo => 32,
        }
    }
}

/// Every kernel perplex dispatches, with what specialises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelId {
    Embedding(WeightFormat),
    /// The product of input rows with weight rows of some depth, `rows` input rows per register
    /// block (see [`KernelId::matmul`]).
    Matmul { format: WeightFormat, step: DepthStep, rows: u32 },
    LmHeadLoss { format: WeightFormat, step: DepthStep },
    LossCombine,
    /// Two models' final hidden rows as pairs of rows for [`KernelId::CompareHead`].
    StackRows,
    /// Both models' LM heads side by side (one matrix in `format`), reduced per row and tile to
    /// what the KL divergence and both losses need (perplex compare).
    CompareHead { format: WeightFormat, step: DepthStep },
    CompareCombine,
    Norm,
    Rope,
    Activation(Activation),
    Attention { head_dim: u32, key_tile: u32 },
    /// Greedy generation: a pass's keys and values into the KV cache.
    KvStore,
    /// Greedy generation: each sequence's new query over its keys in the KV cache, `group`
    /// query heads (sharing one key/value head) per workgroup.
    DecodeAttention { head_dim: u32, group: u32 },
    /// Greedy generation: the argmax of each row's logits from the LM head's tile summaries.
    GreedyCombine,
}

/// How a texture holds a storage buffer's bytes when a kernel reads it through one: consecutive
/// 16-byte words of the buffer (every operand's word: `vec4<u32>` or `vec4<f32>`) fill rows of
/// [`TEXTURE_WIDTH`] texels. An integer format, so every bit pattern (NaN, subnormal) reads back
/// exactly; the shader bitcasts.
pub const TEXEL_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba32Uint;
pub const TEXEL_BYTES: u64 = 16;

/// Texels per texture row when a buffer is read through a texture (a power of two, so the shader
/// splits a word index with a mask and a shift; 4096 x 16 bytes is a whole number of the 256-byte
/// rows that buffer-to-texture copies need).
pub const TEXTURE_WIDTH: u32 = 4096;

/// Where a kernel's large read-only operands come from. Storage buffers everywhere, except where
/// texture fetches are much cheaper: on lavapipe (Mesa's CPU Vulkan driver) every storage-buffer
/// load is a scalar loop over the SIMD lanes, about 10x the cost of a texel fetch (measured:
/// 15-18 ns vs 2 ns per vec4 on 2 cores; workgroup memory is as slow), so there the matrix
/// kernels read their weights from textures they were uploaded into at load (see
/// [`super::MatrixUse`]) and texture copies of their input, and attention texture copies of qkv
/// and positions, made by buffer-to-texture copies just before the dispatch (see
/// [`KernelId::texture_slots`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadPath {
    Buffers,
    Textures,
}

/// A storage binding of a kernel: its slot and whether the kernel writes it.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub binding: u32,
    pub writable: bool,
}

const fn read(binding: u32) -> Slot {
    Slot { binding, writable: false }
}
const fn write(binding: u32) -> Slot {
    Slot { binding, writable: true }
}

pub const PARAMS_SIZE: u64 = 64;

impl KernelId {
    /// The matrix product of `rows` input rows against weight rows of `depth` values in
    /// `format`, in register blocks of [`matmul_block_rows`] rows.
    pub fn matmul(format: WeightFormat, depth: usize, rows: usize) -> KernelId {
        KernelId::Matmul { format, step: DepthStep::of(format, depth), rows: matmul_block_rows(rows) }
    }

    /// The fused LM head and loss against vocabulary rows of `depth` values in `format`.
    pub fn lm_head_loss(format: WeightFormat, depth: usize) -> KernelId {
        KernelId::LmHeadLoss { format, step: DepthStep::of(format, depth) }
    }

    /// Both heads side by side against rows of `depth` values (both hidden sizes) in `format`.
    pub fn compare_head(format: WeightFormat, depth: usize) -> KernelId {
        KernelId::CompareHead { format, step: DepthStep::of(format, depth) }
    }

    /// The attention kernel for `head_dim`, with as many keys per tile (up to 32) as fit in the
    /// device's workgroup memory: per key, its k and v vectors and its position. On the texture
    /// path, key_tile 0: no tiles, keys read from a texture copy of qkv as whole vec4 words, so
    /// heads must start on a word (head_dim a multiple of 4; else the tiled kernel serves).
    pub fn attention(gpu: &Gpu, head_dim: u32) -> KernelId {
        KernelId::attention_on(gpu.read_path, gpu.max_workgroup_storage, head_dim)
    }

    /// [`KernelId::attention`] on a device reading through `path` with `workgroup_storage` bytes
    /// of workgroup memory.
    pub fn attention_on(path: ReadPath, workgroup_storage: u32, head_dim: u32) -> KernelId {
        if path == ReadPath::Textures && head_dim.is_multiple_of(4) {
            return KernelId::Attention { head_dim, key_tile: 0 };
        }
        let per_key = 2 * head_dim.div_ceil(4) * 16 + 4;
        KernelId::Attention { head_dim, key_tile: (workgroup_storage / per_key).clamp(1, 32) }
    }

    /// The kernel's name without its specialisation, for reports.
    pub fn family(self) -> &'static str {
        match self {
            KernelId::Embedding(_) => "embedding",
            KernelId::Matmul { .. } => "matmul",
            KernelId::LmHeadLoss { .. } => "lm_head_loss",
            KernelId::LossCombine => "loss_combine",
            KernelId::StackRows => "stack_rows",
            KernelId::CompareHead { .. } => "compare_head",
            KernelId::CompareCombine => "compare_combine",
            KernelId::Norm => "norm",
            KernelId::Rope => "rope",
            KernelId::Activation(_) => "activation",
            KernelId::Attention { .. } => "attention",
            KernelId::KvStore => "kv_store",
            KernelId::DecodeAttention { .. } => "decode_attention",
            KernelId::GreedyCombine => "greedy_combine",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            KernelId::Matmul { .. } => "matmul",
            KernelId::LmHeadLoss { .. } => "lm_head_loss",
            KernelId::LossCombine => "loss_combine",
            KernelId::CompareHead { .. } => "compare_head",
            KernelId::CompareCombine => "compare_combine",
            KernelId::GreedyCombine => "greedy_combine",
            KernelId::Embedding(_)
            | KernelId::StackRows
            | KernelId::Norm
            | KernelId::Rope
            | KernelId::Activation(_)
            | KernelId::Attention { .. }
            | KernelId::KvStore
            | KernelId::DecodeAttention { .. } => "main",
        }
    }

    /// Storage slots in the order callers pass buffers.
    pub fn slots(self) -> &'static [Slot] {
        // indices (token ids or positions), table -> output
        const EMBEDDING: &[Slot] = &[read(1), read(2), write(4)];
        // input, weights, bias -> output (norm: input, weight, bias -> output)
        const MATMUL: &[Slot] = &[read(1), read(2), read(3), write(4)];
        // input, weights, targets -> partials
        const LM_HEAD: &[Slot] = &[read(1), read(2), read(5), write(6)];
        // targets, partials -> output
        const COMBINE: &[Slot] = &[read(5), write(6), write(4)];
        // positions, cos/sin table -> qkv (in place)
        const ROPE: &[Slot] = &[read(1), read(2), write(4)];
        // qkv, positions, segments -> output
        const ATTENTION: &[Slot] = &[read(1), read(2), read(3), write(4)];
        // input -> output
        const UNARY: &[Slot] = &[read(1), write(4)];
        match self {
            KernelId::Embedding(_) => EMBEDDING,
            KernelId::Matmul { .. } | KernelId::Norm => MATMUL,
            KernelId::LmHeadLoss { .. } | KernelId::CompareHead { .. } => LM_HEAD,
            KernelId::LossCombine | KernelId::CompareCombine | KernelId::GreedyCombine => COMBINE,
            KernelId::Rope => ROPE,
            // qkv, cache rows -> cache
            KernelId::KvStore => EMBEDDING,
            // qkv, cache rows, cache -> output
            KernelId::DecodeAttention { .. } => ATTENTION,
            // a, b -> output
            KernelId::StackRows => EMBEDDING,
            KernelId::Attention { .. } => ATTENTION,
            KernelId::Activation(_) => UNARY,
        }
    }

    /// Whether the kernel sums products in the register block of matmul_block.wgsl, as [`Sums`]
    /// says.
    pub fn sums_products(self) -> bool {
        matches!(self, KernelId::Matmul { .. } | KernelId::LmHeadLoss { .. } | KernelId::CompareHead { .. })
    }

    /// The storage slots (indices into [`KernelId::slots`]) this kernel reads through textures on
    /// `path`.
    pub fn texture_slots(self, path: ReadPath) -> Vec<usize> {
        match (self, path) {
            // Input rows and weights.
            (KernelId::Matmul { .. } | KernelId::LmHeadLoss { .. } | KernelId::CompareHead { .. }, ReadPath::Textures) => vec![0, 1],
            // qkv and positions
            (KernelId::Attention { key_tile: 0, .. }, _) => vec![0, 1],
            _ => Vec::new(),
        }
    }
}

/// One WGSL module perplex builds: a kernel and the device choices that shape its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderVariant {
    pub kernel: KernelId,
    /// How its register block sums products (matrix kernels only; Plain for every other).
    pub sums: Sums,
    /// Its large operands come from texture copies (see [`ReadPath`], [`KernelId::texture_slots`]).
    pub textures: bool,
    /// Each operand a subgroup needs is fetched once and broadcast (input rows of the matrix
    /// kernels, keys of attention): texture path only, where subgroups have at least BLOCK_ROWS
    /// lanes (see [`block_product`], [`head_vector_helpers`]).
    pub share: bool,
}

/// `PERPLEX_DUMP_SHADERS=DIR` writes every module a device builds into DIR, as built.
pub const DUMP_SHADERS_ENV: &str = "PERPLEX_DUMP_SHADERS";

impl ShaderVariant {
    /// The module `kernel` gets on a device reading through `path`, sharing operands across
    /// subgroups where `share_rows`, summing a matrix kernel's products as `sums` says.
    pub fn of(kernel: KernelId, path: ReadPath, share_rows: bool, sums: Sums) -> ShaderVariant {
        let textures = !kernel.texture_slots(path).is_empty();
        let sums = if kernel.sums_products() { sums } else { Sums::Plain };
        ShaderVariant { kernel, sums, textures, share: share_rows && textures }
    }

    /// The module's WGSL, headed by a comment naming the variant.
    pub fn source(self) -> String {
        const MATMUL_BLOCK: &str = include_str!("../../shaders/matmul_block.wgsl");
        const LOSS_STATS: &str = include_str!("../../shaders/loss_stats.wgsl");
        const COMPARE_STATS: &str = include_str!("../../shaders/compare_stats.wgsl");
        const FOLD_TILES: &str = include_str!("../../shaders/fold_tiles.wgsl");
        const HEAD_TILES: &str = include_str!("../../shaders/head_tiles.wgsl");
        let ShaderVariant { kernel, sums, textures, share } = self;
        let with_weights = |format: WeightFormat, step: DepthStep, inputs: bool, body: &str| {
            let prelude = binding_prelude(format, inputs, textures);
            let aligned = step != DepthStep::Masked;
            format!("const ALIGNED: bool = {aligned};\n{prelude}{}\n{body}", format.snippet())
        };
        let with_block = |format: WeightFormat, step: DepthStep, rows: u32, entry: &str| {
            with_weights(format, step, true, &format!("{}{MATMUL_BLOCK}\n{entry}", block_product(share, step, rows as usize, sums)))
        };
        let body = match kernel {
            KernelId::Embedding(format) => with_weights(format, DepthStep::Masked, false, include_str!("../../shaders/embedding.wgsl")),
            KernelId::Matmul { format, step, rows } => with_block(format, step, rows, include_str!("../../shaders/matmul.wgsl")),
            KernelId::LmHeadLoss { format, step } => with_block(format, step, BLOCK_ROWS as u32, &format!("{LOSS_STATS}\n{HEAD_TILES}\n{}", include_str!("../../shaders/lm_head_loss.wgsl"))),
            KernelId::LossCombine | KernelId::GreedyCombine => {
                format!("const TILE_COLS: u32 = {TILE_COLS}u;\n{LOSS_STATS}\n{FOLD_TILES}\n{}", include_str!("../../shaders/loss_combine.wgsl"))
            }
            KernelId::StackRows => include_str!("../../shaders/stack_rows.wgsl").to_string(),
            KernelId::CompareHead { format, step } => {
                with_block(format, step, BLOCK_ROWS as u32, &format!("{LOSS_STATS}\n{COMPARE_STATS}\n{HEAD_TILES}\n{}", include_str!("../../shaders/compare_head.wgsl")))
            }
            KernelId::CompareCombine => format!(
                "const TILE_COLS: u32 = {TILE_COLS}u;\n{LOSS_STATS}\n{COMPARE_STATS}\n{FOLD_TILES}\n{}",
                include_str!("../../shaders/compare_combine.wgsl")
            ),
            KernelId::KvStore => include_str!("../../shaders/kv_store.wgsl").to_string(),
            KernelId::DecodeAttention { head_dim, group } => {
                let word = if head_dim.is_multiple_of(4) {
                    "alias Word = vec4<f32>;\nconst WORD_VALUES: u32 = 4u;\nfn word_dot(a: Word, b: Word) -> f32 { return dot(a, b); }"
                } else {
                    "alias Word = f32;\nconst WORD_VALUES: u32 = 1u;\nfn word_dot(a: Word, b: Word) -> f32 { return a * b; }"
                };
                format!("const HEAD_DIM: u32 = {head_dim}u;\nconst GROUP: u32 = {group}u;\n{word}\n{}", include_str!("../../shaders/decode_attention.wgsl"))
            }
            KernelId::Norm => include_str!("../../shaders/norm.wgsl").to_string(),
            KernelId::Rope => include_str!("../../shaders/rope.wgsl").to_string(),
            KernelId::Activation(activation) => format!(
                "fn activate(x: f32) -> f32 {{ return {}(x); }}\n{}",
                activation_function(activation),
                include_str!("../../shaders/activation.wgsl")
            ),
            KernelId::Attention { head_dim, key_tile } => format!(
                "const KEY_TILE: u32 = {key_tile}u;\n{}{}{}\n{}",
                attention_prelude(textures),
                invocation(share),
                head_vector_helpers(head_dim as usize, share),
                include_str!("../../shaders/attention.wgsl")
            ),
        };
        format!("{}\n{body}", self.header())
    }

    fn header(self) -> String {
        let reads = match (self.textures, self.share) {
            (false, _) => "storage buffers",
            (true, false) => "texture copies",
            (true, true) => "texture copies, each fetched once per subgroup and broadcast",
        };
        let sums = if self.kernel.sums_products() { format!("// products summed: {}\n", self.sums.name()) } else { String::new() };
        format!(
            "// perplex kernel {:?}, entry point `{}`\n// operands read from: {reads}\n{sums}\
             // assembled by src/gpu/kernels.rs from shaders/*.wgsl and generated code\n",
            self.kernel,
            self.kernel.entry()
        )
    }

    /// A file name saying what [`ShaderVariant::header`] says.
    pub fn file_name(self) -> String {
        let kernel = match self.kernel {
            KernelId::Embedding(format) => format!("embedding-{}", format.name()),
            KernelId::Matmul { format, step, rows } => format!("matmul-{}-{}-rows{rows}", format.name(), step.name()),
            KernelId::LmHeadLoss { format, step } => format!("lm_head_loss-{}-{}", format.name(), step.name()),
            KernelId::CompareHead { format, step } => format!("compare_head-{}-{}", format.name(), step.name()),
            KernelId::Activation(activation) => format!("activation-{}", activation_function(activation)),
            KernelId::Attention { head_dim, key_tile: 0 } => format!("attention-head{head_dim}-untiled"),
            KernelId::Attention { head_dim, key_tile } => format!("attention-head{head_dim}-tile{key_tile}"),
            KernelId::DecodeAttention { head_dim, group } => format!("decode_attention-head{head_dim}-group{group}"),
            KernelId::LossCombine
            | KernelId::StackRows
            | KernelId::CompareCombine
            | KernelId::Norm
            | KernelId::Rope
            | KernelId::KvStore
            | KernelId::GreedyCombine => self.kernel.family().to_string(),
        };
        let reads = match (self.textures, self.share) {
            (false, _) => "",
            (true, false) => "-textures",
            (true, true) => "-textures-subgroups",
        };
        let sums = match self.sums {
            Sums::Plain => "",
            Sums::Compensated => "-compensated",
        };
        format!("{kernel}{reads}{sums}.wgsl")
    }

    /// Writes the module into `dir` (created if missing) as [`ShaderVariant::file_name`].
    pub fn write_into(self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join(self.file_name()), self.source()))
            .map_err(|e| Error::bad_input(format!("{}: cannot write shaders: {e}", dir.display())))
    }
}

/// Most query heads one decode_attention workgroup serves (see [`decode_group`]).
pub const DECODE_GROUP_MAX: u32 = 8;

/// Query heads per decode_attention workgroup for `q_heads` query heads over `kv_heads`
/// key/value heads: as many heads of one key/value head as divide its share evenly, up to
/// [`DECODE_GROUP_MAX`] (each adds its query and accumulators to every invocation's registers).
pub fn decode_group(q_heads: u32, kv_heads: u32) -> u32 {
    let per_kv_head = (q_heads / kv_heads.max(1)).max(1);
    (1..=per_kv_head.min(DECODE_GROUP_MAX)).rev().find(|g| per_kv_head.is_multiple_of(*g)).unwrap_or(1)
}

/// Head sizes whose attention modules [`all_variants`] lists (a model's shape, not a device's
/// choice): those of common checkpoints, and one not a multiple of four.
pub const LISTED_HEAD_DIMS: [u32; 6] = [10, 64, 80, 96, 128, 256];

/// Every module the engine can build: each kernel in every weight format and depth step, each
/// activation, attention at [`LISTED_HEAD_DIMS`] (tiled to fit WebGPU's default workgroup
/// memory, or untiled), each on every read path with and without subgroup sharing where these
/// change the source, with either [`Sums`] where that changes it. No device needed.
pub fn all_variants() -> Vec<ShaderVariant> {
    let mut kernels = vec![
        KernelId::LossCombine,
        KernelId::StackRows,
        KernelId::CompareCombine,
        KernelId::Norm,
        KernelId::Rope,
        KernelId::KvStore,
        KernelId::GreedyCombine,
    ];
    kernels.extend(ACTIVATIONS.map(KernelId::Activation));
    for format in WeightFormat::ALL {
        kernels.push(KernelId::Embedding(format));
        for step in DepthStep::all(format) {
            kernels.extend(MATMUL_BLOCK_ROWS.map(|rows| KernelId::Matmul { format, step, rows }));
            kernels.extend([KernelId::LmHeadLoss { format, step }, KernelId::CompareHead { format, step }]);
        }
    }
    let workgroup_storage = wgpu::Limits::default().max_compute_workgroup_storage_size;
    for head_dim in LISTED_HEAD_DIMS {
        for group in [1, 3, DECODE_GROUP_MAX] {
            kernels.push(KernelId::DecodeAttention { head_dim, group });
        }
        for path in [ReadPath::Buffers, ReadPath::Textures] {
            kernels.push(KernelId::attention_on(path, workgroup_storage, head_dim));
        }
    }
    let mut variants = Vec::new();
    for kernel in kernels {
        for (path, share_rows) in [(ReadPath::Buffers, false), (ReadPath::Textures, false), (ReadPath::Textures, true)] {
            for sums in Sums::ALL {
                let variant = ShaderVariant::of(kernel, path, share_rows, sums);
                if !variants.contains(&variant) {
                    variants.push(variant);
                }
            }
        }
    }
    variants
}

/// Writes every module of [`all_variants`] into `dir`; returns how many.
pub fn dump_shaders(dir: &Path) -> Result<usize> {
    let variants = all_variants();
    for variant in &variants {
        variant.write_into(dir)?;
    }
    Ok(variants.len())
}

/// Every activation, for [`all_variants`].
const ACTIVATIONS: [Activation; 3] = [Activation::Silu, Activation::GeluTanh, Activation::GeluErf];

/// The function of activation.wgsl that computes `activation`.
fn activation_function(activation: Activation) -> &'static str {
    match activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_tanh",
        Activation::GeluErf => "gelu_erf",
    }
}

/// The declarations of the weights (binding 2, read with `weights_at(word)`) and, for the matrix
/// kernels, their input (binding 1, `input_at(word)`, vec4<f32> words), on the kernel's read path.
fn binding_prelude(format: WeightFormat, input: bool, textures: bool) -> String {
    let word = format.word();
    let mut s = if textures { texel_coords() } else { String::new() };
    if input {
        s += &word_binding(1, "input", "input_at", "vec4<f32>", textures);
    }
    s + &word_binding(2, "weights", "weights_at", word, textures)
}

/// Binding `binding`, named `name`, read a word at a time by `fn {reader}(word: u32) -> {word}`: a
/// storage buffer of such words, or (`textures`) a texture holding the buffer's words as texels
/// (see [`ReadPath`], [`TEXEL_FORMAT`]), whose integer texels are bitcast to float words.
fn word_binding(binding: u32, name: &str, reader: &str, word: &str, textures: bool) -> String {
    let (declaration, value) = if textures {
        let fetched = format!("textureLoad({name}, texel_coords(word), 0)");
        let value = if word.ends_with("<u32>") { fetched } else { format!("bitcast<{word}>({fetched})") };
        (format!("var {name}: texture_2d<u32>"), value)
    } else {
        (format!("var<storage, read> {name}: array<{word}>"), format!("{name}[word]"))
    };
    format!("@group(0) @binding({binding}) {declaration};\nfn {reader}(word: u32) -> {word} {{ return {value}; }}\n")
}

/// Texture coordinates of word `word` of a buffer copied into a texture (see [`TEXTURE_WIDTH`]).
fn texel_coords() -> String {
    format!(
        "fn texel_coords(word: u32) -> vec2<u32> {{ return vec2<u32>(word & {}u, word >> {}u); }}\n",
        TEXTURE_WIDTH - 1,
        TEXTURE_WIDTH.trailing_zeros()
    )
}

/// attention.wgsl's qkv (binding 1: values `qkv_at(i)` and vec4 words `qkv4_at(word)`) and
/// positions (binding 2, `position_at(row)`): the bindings, and the readers the read path derives
/// from them (attention_reads_*.wgsl).
fn attention_prelude(textures: bool) -> String {
    let (qkv_word, qkv_reader) = if textures { ("vec4<f32>", "qkv4_at") } else { ("f32", "qkv_at") };
    let (position_word, position_reader) = if textures { ("vec4<u32>", "position4_at") } else { ("u32", "position_at") };
    let mut s = if textures { texel_coords() } else { String::new() };
    s += &word_binding(1, "qkv", qkv_reader, qkv_word, textures);
    s += &word_binding(2, "positions", position_reader, position_word, textures);
    s + if textures {
        include_str!("../../shaders/attention_reads_textures.wgsl")
    } else {
        include_str!("../../shaders/attention_reads_buffers.wgsl")
    }
}

/// The generated part of attention.wgsl: a head vector as HEAD_DIM / 4 named vec4s (padded with
/// zeros when HEAD_DIM is not a multiple of 4) and the few operations the kernel applies to it,
/// unrolled so the vectors stay in registers.
///
/// The texture path folds keys KEY_STEP at a time (`fold_key_step`). `share_keys` (subgroups of
/// at least KEY_STEP_SHARED lanes): lane l of a subgroup fetches key k0 + l % KEY_STEP and
/// `subgroupBroadcast` hands key k0 + j to every lane, one fetch of each key per subgroup instead
/// of one per query (the matmul's row sharing, applied to keys; on lavapipe attention ran 2.7x
/// faster). The steps are unrolled: subgroupBroadcast takes a constant lane, and a switch over
/// the lane in a loop ran 2x slower than no sharing at all. Otherwise KEY_STEP is 1 and every
/// invocation uses the key it fetched itself.
fn head_vector_helpers(head_dim: usize, share_keys: bool) -> String {
    let n = head_dim.div_ceil(4);
    let all = |f: &dyn Fn(usize) -> String, sep: &str| (0..n).map(f).collect::<Vec<_>>().join(sep);
    // Element e of the head at flat index `base`, zero past HEAD_DIM.
    let element = |e: usize| if e < head_dim { format!("qkv_at(base + {e}u)") } else { "0.0".to_string() };
    let mut s = format!("const HEAD_DIM: u32 = {head_dim}u;\nconst HEAD_VEC4S: u32 = {n}u;\n");
    s += &format!("struct HeadVec {{ {} }}\n", all(&|i| format!("v{i}: vec4<f32>"), ", "));
    s += &format!(
        "fn load_head(base: u32) -> HeadVec {{ return HeadVec({}); }}\n",
        all(&|i| format!("vec4<f32>({}, {}, {}, {})", element(4 * i), element(4 * i + 1), element(4 * i + 2), element(4 * i + 3)), ", ")
    );
    s += &format!("fn dot_key(q: HeadVec, j: u32) -> f32 {{ return {}; }}\n", all(&|i| format!("dot(q.v{i}, tile_k[j][{i}])"), " + "));
    s += &format!(
        "fn add_value(acc: HeadVec, p: f32, j: u32) -> HeadVec {{ return HeadVec({}); }}\n",
        all(&|i| format!("fma(vec4<f32>(p), tile_v[j][{i}], acc.v{i})"), ", ")
    );
    // The same operations on a key and value held in registers (the texture path's), and what
    // brings them there.
    s += &format!("fn load_head_words(word: u32) -> HeadVec {{ return HeadVec({}); }}\n", all(&|i| format!("qkv4_at(word + {i}u)"), ", "));
    s += &format!("fn dot_head(q: HeadVec, k: HeadVec) -> f32 {{ return {}; }}\n", all(&|i| format!("dot(q.v{i}, k.v{i})"), " + "));
    s += &format!("fn add_head(acc: HeadVec, p: f32, v: HeadVec) -> HeadVec {{ return HeadVec({}); }}\n", all(&|i| format!("fma(vec4<f32>(p), v.v{i}, acc.v{i})"), ", "));
    // One step of keys: fold each into `running` where the query sees it.
    let step = if share_keys { KEY_STEP_SHARED } else { 1 };
    s += &format!(
        "const KEY_STEP: u32 = {step}u;\n\
         fn fold_key_step(running: ptr<function, Running>, q: HeadVec, own_k: HeadVec, own_v: HeadVec, own_position: u32, k0: u32, sees: QueryView) {{\n"
    );
    for j in 0..step {
        let (k, v, position) = if share_keys {
            (
                format!("HeadVec({})", all(&|i| format!("subgroupBroadcast(own_k.v{i}, {j}u)"), ", ")),
                format!("HeadVec({})", all(&|i| format!("subgroupBroadcast(own_v.v{i}, {j}u)"), ", ")),
                format!("subgroupBroadcast(own_position, {j}u)"),
            )
        } else {
            ("own_k".to_string(), "own_v".to_string(), "own_position".to_string())
        };
        s += &format!(
            "    {{\n        let k = {k};\n        let v = {v};\n        let position = {position};\n\
             \x20       if (sees_key(sees, k0 + {j}u, position)) {{\n\
             \x20           let p = fold_score(running, dot_head(q, k));\n\
             \x20           (*running).acc = add_head((*running).acc, p, v);\n        }}\n    }}\n"
        );
    }
    s += "}\n";
    s += &format!("fn scale_head(x: HeadVec, f: f32) -> HeadVec {{ return HeadVec({}); }}\n", all(&|i| format!("x.v{i} * f"), ", "));
    s += "fn store_head(x: HeadVec, base: u32) {\n";
    for e in 0..head_dim {
        s += &format!("    output[base + {e}u] = x.v{}[{}];\n", e / 4, e % 4);
    }
    s + "}\n"
}

/// The entry point's builtins as the generated `Invocation` struct, with the subgroup lane
/// (`subgroup_lane(invocation)`, else 0) only where subgroups are used: a shader that names a
/// subgroup builtin needs the device feature even where it never runs it.
fn invocation(subgroups: bool) -> String {
    format!(
        "struct Invocation {{ @builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>{} }}\n\
         fn subgroup_lane(invocation: Invocation) -> u32 {{ return {}; }}\n",
        if subgroups { ", @builtin(subgroup_invocation_id) lane: u32" } else { "" },
        if subgroups { "invocation.lane" } else { "0u" },
    )
}

/// Keys per step of the texture path's attention where subgroups share them (see
/// [`head_vector_helpers`]); subgroups must have at least this many lanes, as for the matmul's rows.
const KEY_STEP_SHARED: usize = BLOCK_ROWS;

/// How the matrix kernels (matmul, LM head, compare head) sum their products over the depth.
/// Either way each result is one invocation's sum in increasing order of k, so scores stay
/// batch-invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Sums {
    /// One f32 running sum of fused multiply-adds (shaders/sums_plain.wgsl).
    #[default]
    Plain,
    /// Each running sum carries its rounding errors (shaders/sums_compensated.wgsl): the products
    /// as if summed in twice f32's precision, for about twice the kernel time. For comparing
    /// models that differ by less than f32 sums resolve (an f32 checkpoint against its f16 export).
    Compensated,
}

impl Sums {
    pub const ALL: [Sums; 2] = [Sums::Plain, Sums::Compensated];

    /// The name `--sums` takes.
    pub fn name(self) -> &'static str {
        match self {
            Sums::Plain => "plain",
            Sums::Compensated => "compensated",
        }
    }

    /// The name where a record of the numbers (a resume log's header, a sweep's fingerprint) must
    /// say it: none for plain sums, the default, so that records made before `--sums` existed
    /// still match.
    pub fn recorded(self) -> Option<&'static str> {
        match self {
            Sums::Plain => None,
            other => Some(other.name()),
        }
    }

    /// The WGSL defining `Sum`, `add_product` and `sum_value` for the register block.
    fn snippet(self) -> &'static str {
        match self {
            Sums::Plain => include_str!("../../shaders/sums_plain.wgsl"),
            Sums::Compensated => include_str!("../../shaders/sums_compensated.wgsl"),
        }
    }
}

impl std::str::FromStr for Sums {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Sums, String> {
        Sums::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| format!("sums must be \"plain\" or \"compensated\", not {name:?}"))
    }
}

/// Rows and columns of the register block each matmul invocation computes (the matmul takes
/// fewer rows where it has fewer: [`MATMUL_BLOCK_ROWS`]).
pub const BLOCK_ROWS: usize = 8;
pub const BLOCK_COLS: usize = 8;
/// Invocations per matmul workgroup, side by side along the output columns.
pub const LANES: usize = 16;
/// Output columns per matmul workgroup: the LM head's vocabulary tile.
pub const TILE_COLS: usize = LANES * BLOCK_COLS;

/// The matmul's register-block heights (see [`matmul_block_rows`]).
pub const MATMUL_BLOCK_ROWS: [u32; 4] = [1, 2, 4, 8];

/// Rows per matmul register block for a product of `rows` input rows: [`BLOCK_ROWS`], or for
/// fewer rows (decoding a few sequences) the next power of two, so that padding rows cost no
/// multiply-adds. Every output is the same sum in the same order whatever the block, so the
/// choice changes no bit.
pub fn matmul_block_rows(rows: usize) -> u32 {
    rows.clamp(1, BLOCK_ROWS).next_power_of_two() as u32
}

/// The generated part of matmul_block.wgsl: `block_product(row0, col0, lane)` returns the `rows` x
/// BLOCK_COLS products of rows row0.. and columns col0 + LANES c, with every loop over the block
/// unrolled into named scalar accumulators (compilers keep those in registers; arrays they spill),
/// each one running sum over k (of fused multiply-adds, or compensated: [`Sums`]), taken `step`
/// values at a time.
///
/// `share_rows`: the BLOCK_ROWS input rows are fetched once per subgroup, lane r fetching row r,
/// and handed to every lane with `subgroupBroadcast`, instead of every lane fetching every row.
/// Where fetches dominate (lavapipe: 8 fetches instead of 16 per step, measured 1.2-1.4x) this
/// pays; it needs subgroups of at least BLOCK_ROWS lanes.
fn block_product(share_rows: bool, step: DepthStep, rows: usize, sums: Sums) -> String {
    let cols = BLOCK_COLS;
    // The step's values as vec4 quarters: quarter q holds k + 4q .. k + 4q + 3.
    let quarters = step.values() / 4;
    let mut s = format!(
        "const BLOCK_ROWS: u32 = {rows}u;\nconst BLOCK_COLS: u32 = {cols}u;\nconst LANES: u32 = {LANES}u;\n{}\
         {}\n\
         fn block_product(row0: u32, col0: u32, lane: u32) -> array<array<f32, {cols}>, {rows}> {{\n\
         \x20   let depth = params.depth;\n\
         \x20   let zero = depth >> 31u;  // 0, but not to the compiler (sums_compensated.wgsl)\n",
        invocation(share_rows),
        sums.snippet(),
    );
    if share_rows {
        s += &format!("    let own_row = min(row0 + (lane % {rows}u), params.rows - 1u) * depth;\n");
    } else {
        for r in 0..rows {
            s += &format!("    let a{r} = min(row0 + {r}u, params.rows - 1u) * depth;\n");
        }
    }
    for c in 0..cols {
        s += &format!("    let w{c} = min(col0 + {}u, params.cols - 1u) * depth;\n", LANES * c);
    }
    for r in 0..rows {
        for c in 0..cols {
            s += &format!("    var acc{r}_{c} = Sum();\n");
        }
    }
    s += &format!("    for (var k = 0u; k < depth; k += {}u) {{\n", step.values());
    // How a step brings column c's weights: one load per column (`wl{c}`), then quarter q as a
    // vec4 taken from it: the vec4 itself, a column of load_weight8's mat2x4, or a quarter of a
    // quantized group, dequantized just before the quarter's multiply-adds.
    type Load = fn(usize) -> String;
    type Quarter = fn(usize, usize) -> String;
    let (load, quarter): (Load, Quarter) = match step {
        DepthStep::Masked | DepthStep::Four => (|c| format!("load_row_weight4(w{c}, k)"), |c, _| format!("wl{c}")),
        DepthStep::Eight => (|c| format!("load_weight8(w{c} + k)"), |c, q| format!("wl{c}[{q}]")),
        DepthStep::Sixteen => (|c| format!("load_group16(w{c} + k)"), |c, q| format!("group16_quarter(wl{c}, {q}u)")),
        DepthStep::ThirtyTwo => (
            |c| format!("load_group_pair32(w{c} + k)"),
            |c, q| format!("group16_quarter(wl{c}.{}, {}u)", if q < 4 { "first" } else { "second" }, q % 4),
        ),
    };
    for c in 0..cols {
        s += &format!("        let wl{c} = {};\n", load(c));
    }
    for q in 0..quarters {
        if share_rows {
            s += &format!("        let own{q} = load_input4(own_row, k + {}u);\n", 4 * q);
        }
        for r in 0..rows {
            if share_rows {
                s += &format!("        let av{r}_{q} = subgroupBroadcast(own{q}, {r}u);\n");
            } else {
                s += &format!("        let av{r}_{q} = load_input4(a{r}, k + {}u);\n", 4 * q);
            }
        }
    }
    // Quarter by quarter: every accumulator still takes its depth in increasing order.
    for q in 0..quarters {
        for c in 0..cols {
            s += &format!("        let wv{c}_{q} = {};\n", quarter(c, q));
        }
        for r in 0..rows {
            for c in 0..cols {
                for e in ["x", "y", "z", "w"] {
                    s += &format!("        acc{r}_{c} = add_product(acc{r}_{c}, av{r}_{q}.{e}, wv{c}_{q}.{e}, zero);\n");
                }
            }
        }
    }
    s += &format!("    }}\n    var block: array<array<f32, {cols}>, {rows}>;\n");
    for r in 0..rows {
        for c in 0..cols {
            s += &format!("    block[{r}][{c}] = sum_value(acc{r}_{c});\n");
        }
    }
    s + "    return block;\n}\n"
}

pub struct Kernel {
    pub id: KernelId,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// Storage slots bound to a texture copy of their buffer (see [`ReadPath`]).
    pub texture_slots: Vec<usize>,
}

impl Gpu {
    /// The pipeline for `id`, compiled on first use and cached for the device's lifetime.
    pub fn kernel(&self, id: KernelId) -> Arc<Kernel> {
        if let Some(kernel) = self.kernels.lock().unwrap().get(&id) {
            return kernel.clone();
        }
        let kernel = Arc::new(self.build_kernel(id));
        self.kernels.lock().unwrap().insert(id, kernel.clone());
        kernel
    }

    fn build_kernel(&self, id: KernelId) -> Kernel {
        let label = format!("{id:?}");
        let texture_slots = id.texture_slots(self.read_path);
        let variant = ShaderVariant::of(id, self.read_path, self.share_rows, self.sums);
        if let Some(dir) = std::env::var_os(DUMP_SHADERS_ENV) {
            if let Err(e) = variant.write_into(Path::new(&dir)) {
                eprintln!("warning: {DUMP_SHADERS_ENV}: {}", e.message);
            }
        }
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(variant.source().into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(PARAMS_SIZE),
            },
            count: None,
        }];
        for (index, slot) in id.slots().iter().enumerate() {
            let ty = if texture_slots.contains(&index) {
                wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Uint,
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                }
            } else {
                wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: !slot.writable },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                }
            };
            entries.push(wgpu::BindGroupLayoutEntry { binding: slot.binding, visibility: wgpu::ShaderStages::COMPUTE, ty, count: None });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(id.entry()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Kernel { id, pipeline, layout, texture_slots }
    }
}
