//! Typed kernel calls: per kernel, its parameter block as a `#[repr(C)]` struct whose fields
//! mirror the shader's `struct Params` by name, type and offset (tests/shaders.rs reflects every
//! module perplex builds and compares), and one function that records its dispatch, workgroup
//! grid included. Nothing outside this module lays out a parameter block.
//!
//! Flags travel as `u32` (0 or 1: `bool` is not `Pod`); buffers are passed in the kernel's slot
//! order (see [`KernelId::slots`]).

use super::kernels::{decode_group, matmul_block_rows, KernelId, WeightFormat, BLOCK_ROWS, TILE_COLS};
use super::program::{Binding, Operand, ProgramBuilder};
use super::tensor::{GpuMatrix, MatrixPart};
use crate::model;

/// A field of a parameter block as the layout check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    /// The WGSL scalar type: "u32" or "f32".
    pub scalar: &'static str,
}

/// The layout of a parameter block: its size in bytes and every field in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub size: usize,
    pub fields: &'static [Field],
}

/// A kernel's parameter block, bound as the shader's uniform `params`.
pub trait KernelParams: bytemuck::Pod {
    const LAYOUT: Layout;
}

/// Declares a parameter struct (`#[repr(C)]`, `Pod`) and its [`KernelParams::LAYOUT`].
macro_rules! kernel_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $scalar:ident,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $scalar,)*
        }

        impl KernelParams for $name {
            const LAYOUT: Layout = Layout {
                size: std::mem::size_of::<$name>(),
                fields: &[$(Field { name: stringify!($field), offset: std::mem::offset_of!($name, $field), scalar: stringify!($scalar) },)*],
            };
        }
    };
}

/// Invocations per workgroup of the kernels that give each invocation one value of a row
/// (their `@workgroup_size(64, 1, 1)`).
const ROW_LANES: u32 = 64;

/// Queries per attention workgroup (attention.wgsl's QUERY_TILE).
const QUERY_TILE: u32 = 32;

/// Workgroup counts for `count` independent rows spread over y and z (each at most 65535).
fn row_grid(x: u32, count: u32) -> [u32; 3] {
    let count = count.max(1);
    let y = count.min(65535);
    [x.max(1), y, count.div_ceil(y)]
}

/// One workgroup per `block_rows` rows and TILE_COLS columns: the matrix kernels' grid.
fn block_grid(rows: u32, cols: u32, block_rows: u32) -> [u32; 3] {
    [cols.div_ceil(TILE_COLS as u32), rows.div_ceil(block_rows), 1]
}

kernel_params! {
    /// embedding.wgsl: `output[m, :] (+)= table[indices[m], :] * scale` for the indices that
    /// fall in this part of the table.
    Embedding {
        rows: u32,
        width: u32,
        /// First table row held by this part.
        first_row: u32,
        part_rows: u32,
        scale: f32,
        accumulate: u32,
    }
}

/// Gathers rows of one part of a `format` table: indices -> output.
pub fn embedding(p: &mut ProgramBuilder, format: WeightFormat, params: Embedding, indices: Binding, table: Binding, output: Binding) {
    let grid = row_grid(params.width.div_ceil(ROW_LANES), params.rows);
    p.dispatch(KernelId::Embedding(format), params, &[indices, table, output], grid);
}

kernel_params! {
    /// matmul.wgsl: `output[m, col_offset + n] (+)= input[m, :] . weights[n, :] (+ bias)`.
    Matmul {
        /// Input rows.
        rows: u32,
        /// Weight rows in this part: the output columns this dispatch writes.
        cols: u32,
        depth: u32,
        /// First output column of this part.
        col_offset: u32,
        out_stride: u32,
        has_bias: u32,
        /// Add into the output instead of overwriting it (residual connections).
        accumulate: u32,
    }
}

/// The product of `input` rows with one part of a `format` weight matrix; `bias` is read (at
/// the output column) only where `has_bias`.
pub fn matmul(p: &mut ProgramBuilder, format: WeightFormat, params: Matmul, input: Binding, weights: &MatrixPart, bias: Binding, output: Binding) {
    let kernel = KernelId::matmul(format, params.depth as usize, params.rows as usize);
    let grid = block_grid(params.rows, params.cols, matmul_block_rows(params.rows as usize));
    let operands = vec![Operand::Buffer(input.clone()), weights.product_operand(), Operand::Buffer(bias.clone()), Operand::Buffer(output.clone())];
    p.dispatch_operands(kernel, params, operands, grid);
}

/// The parameters of a fused LM head kernel (lm_head_loss.wgsl, compare_head.wgsl): where this
/// part of the vocabulary matrix sits (as [`VocabSpan`] has it, plus the tiles per row), then the
/// kernel's own soft-capping fields, then the vocabulary size: the order of the shaders' Params.
macro_rules! head_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $scalar:ident,)* }) => {
        kernel_params! {
            $(#[$meta])*
            $name {
                /// Input rows.
                rows: u32,
                /// Vocabulary rows in this part.
                cols: u32,
                /// The vocabulary matrix's row length: the input width.
                depth: u32,
                /// First vocabulary index of this part.
                col_offset: u32,
                /// Vocabulary tiles per row of `partials`, over all parts.
                tiles: u32,
                /// Index of this part's first tile.
                tile_offset: u32,
                $($(#[$field_meta])* $field: $scalar,)*
                /// Logits at or beyond this index are not part of the distribution.
                vocab: u32,
            }
        }
    };
}

head_params! {
    /// lm_head_loss.wgsl: the logits of one part of the vocabulary, reduced per row and tile to
    /// (max, sum of exp, target logit, argmax) without being stored.
    LmHeadLoss {
        /// Logit soft-capping value, 0 = off.
        softcap: f32,
    }
}

/// The LM head as the loss kernels see it: the vocabulary matrix (split or not), how many of its
/// rows are the vocabulary, and the logit soft-capping value (0 = off).
#[derive(Clone, Copy)]
pub struct LmHead<'a> {
    pub matrix: &'a GpuMatrix,
    pub vocab: usize,
    pub softcap: f32,
}

impl LmHead<'_> {
    /// Vocabulary tiles per row: the row length of `partials` in summaries.
    pub fn tiles(&self) -> usize {
        vocab_tiles(self.vocab)
    }
}

/// Vocabulary tiles of TILE_COLS logits in a vocabulary of `vocab`.
pub fn vocab_tiles(vocab: usize) -> usize {
    vocab.div_ceil(TILE_COLS)
}

/// The fused LM head over every part of `head`'s matrix, one dispatch per part: input (`rows`
/// rows), targets -> partials (one summary per row and tile, [`LmHead::tiles`] per row). Parts
/// start at whole tiles (tensor.rs's ROW_ALIGN), so each writes its own tiles.
pub fn lm_head_loss(p: &mut ProgramBuilder, rows: usize, head: LmHead, input: Binding, targets: Binding, partials: Binding) {
    let matrix = head.matrix;
    let kernel = KernelId::lm_head_loss(matrix.dtype.format(), matrix.cols);
    for_each_vocab_part(matrix, rows, |part, span| {
        let params = LmHeadLoss {
            rows: span.rows,
            cols: span.cols,
            depth: span.depth,
            col_offset: span.col_offset,
            tiles: head.tiles() as u32,
            tile_offset: span.tile_offset,
            softcap: head.softcap,
            vocab: head.vocab as u32,
        };
        p.dispatch_operands(kernel, params, head_operands(input, part, targets, partials), span.grid);
    });
}

/// The operands of a head kernel: input rows, one part of the vocabulary matrix, targets and
/// the partial summaries it writes.
fn head_operands(input: Binding, part: &MatrixPart, targets: Binding, partials: Binding) -> Vec<Operand> {
    vec![Operand::Buffer(input.clone()), part.product_operand(), Operand::Buffer(targets.clone()), Operand::Buffer(partials.clone())]
}

/// Where one part of a vocabulary matrix sits, as the head kernels' parameters say it.
struct VocabSpan {
    rows: u32,
    cols: u32,
    depth: u32,
    col_offset: u32,
    tile_offset: u32,
    grid: [u32; 3],
}

/// Calls `record` for every part of a vocabulary matrix against `rows` input rows. Parts start
/// at whole tiles (tensor.rs's ROW_ALIGN), so each part's dispatch writes its own tiles.
fn for_each_vocab_part(matrix: &GpuMatrix, rows: usize, mut record: impl FnMut(&MatrixPart, VocabSpan)) {
    for part in &matrix.parts {
        let (rows, cols) = (rows as u32, part.rows as u32);
        let span = VocabSpan {
            rows,
            cols,
            depth: matrix.cols as u32,
            col_offset: part.first_row as u32,
            tile_offset: (part.first_row / TILE_COLS) as u32,
            grid: block_grid(rows, cols, BLOCK_ROWS as u32),
        };
        record(part, span);
    }
}

kernel_params! {
    /// loss_combine.wgsl and compare_combine.wgsl: each row's vocabulary tile summaries, folded
    /// in order.
    FoldTiles {
        rows: u32,
        /// Vocabulary tiles per row of `partials`.
        tiles: u32,
    }
}

/// One invocation per row of a fold over `tiles` summaries per row.
fn fold_tiles(p: &mut ProgramBuilder, kernel: KernelId, rows: usize, tiles: usize, targets: Binding, partials: Binding, output: Binding) {
    let params = FoldTiles { rows: rows as u32, tiles: tiles as u32 };
    p.dispatch(kernel, params, &[targets, partials, output], [params.rows.div_ceil(ROW_LANES), 1, 1]);
}

/// targets, partials (`tiles` per row, from [`lm_head_loss`]) -> output: two floats per row,
/// log p(target) and the argmax (ties to the lowest id).
pub fn loss_combine(p: &mut ProgramBuilder, rows: usize, tiles: usize, targets: Binding, partials: Binding, output: Binding) {
    fold_tiles(p, KernelId::LossCombine, rows, tiles, targets, partials, output);
}

/// targets, partials (`tiles` per row, from [`lm_head_loss`]) -> output: two floats per row,
/// the argmax (ties to the lowest id) and its log-probability. `targets` is not read.
pub fn greedy_combine(p: &mut ProgramBuilder, rows: usize, tiles: usize, targets: Binding, partials: Binding, output: Binding) {
    fold_tiles(p, KernelId::GreedyCombine, rows, tiles, targets, partials, output);
}

kernel_params! {
    /// stack_rows.wgsl: rows of two models' hidden states as pairs of rows `[a, 0]`, `[0, b]`.
    StackRows {
        rows: u32,
        width_a: u32,
        width_b: u32,
    }
}

/// a, b -> output (`2 * rows` rows of `width_a + width_b`).
pub fn stack_rows(p: &mut ProgramBuilder, params: StackRows, a: Binding, b: Binding, output: Binding) {
    let grid = row_grid(1, 2 * params.rows);
    p.dispatch(KernelId::StackRows, params, &[a, b, output], grid);
}

head_params! {
    /// compare_head.wgsl: two models' logits of one part of the vocabulary, reduced per row and
    /// tile to both loss summaries and the KL cross term without being stored. The input rows are
    /// stacked pairs (twice the compared rows) and the depth is both hidden sizes together.
    CompareHead {
        softcap_base: f32,
        softcap_model: f32,
    }
}

/// Both models' heads as one matrix: row v is `[base head row v | model head row v]`, against
/// [`stack_rows`]'s pairs of rows.
#[derive(Clone, Copy)]
pub struct PairedHead<'a> {
    pub matrix: &'a GpuMatrix,
    pub vocab: usize,
    pub softcap_base: f32,
    pub softcap_model: f32,
}

/// The paired head over every part of its matrix, one dispatch per part: stacked input (`2 *
/// rows` rows), targets (`rows`) -> partials (three vec4 summaries per row and tile). Parts start
/// at whole tiles, so each writes its own tiles.
pub fn compare_head(p: &mut ProgramBuilder, rows: usize, head: PairedHead, input: Binding, targets: Binding, partials: Binding) {
    let matrix = head.matrix;
    let kernel = KernelId::compare_head(matrix.dtype.format(), matrix.cols);
    let tiles = vocab_tiles(head.vocab) as u32;
    for_each_vocab_part(matrix, 2 * rows, |part, span| {
        let params = CompareHead {
            rows: span.rows,
            cols: span.cols,
            depth: span.depth,
            col_offset: span.col_offset,
            tiles,
            tile_offset: span.tile_offset,
            softcap_base: head.softcap_base,
            softcap_model: head.softcap_model,
            vocab: head.vocab as u32,
        };
        p.dispatch_operands(kernel, params, head_operands(input, part, targets, partials), span.grid);
    });
}

/// targets, partials (`tiles` per row, from [`compare_head`]) -> output: five floats per row,
/// KL(base || model), log p_base(target), log p_model(target), argmax of base, argmax of model.
pub fn compare_combine(p: &mut ProgramBuilder, rows: usize, tiles: usize, targets: Binding, partials: Binding, output: Binding) {
    fold_tiles(p, KernelId::CompareCombine, rows, tiles, targets, partials, output);
}

kernel_params! {
    /// norm.wgsl: RMSNorm or LayerNorm over segments of `width` values, `segments` per row from
    /// column `offset`.
    Norm {
        /// rows * segments
        segments_total: u32,
        width: u32,
        /// Segments per row.
        segments: u32,
        /// Row stride of input and output.
        stride: u32,
        /// Column of the first segment.
        offset: u32,
        layer_norm: u32,
        has_bias: u32,
        /// Read `output` instead of `input`.
        in_place: u32,
        /// Add the result into `output` (post-norm residual).
        accumulate: u32,
        eps: f32,
        /// 1.0 for Gemma's (1 + weight).
        weight_offset: f32,
    }
}

/// input, weight, bias -> output (`bias` read only where `has_bias`, `input` only where not
/// `in_place`).
pub fn norm(p: &mut ProgramBuilder, params: Norm, input: Binding, weight: Binding, bias: Binding, output: Binding) {
    let grid = row_grid(1, params.segments_total);
    p.dispatch(KernelId::Norm, params, &[input, weight, bias, output], grid);
}

kernel_params! {
    /// rope.wgsl: rotary embedding in place on the query and key heads of the fused QKV rows.
    Rope {
        rows: u32,
        /// Query heads + key heads, contiguous from column 0.
        heads: u32,
        head_dim: u32,
        rotary_half: u32,
        stride: u32,
    }
}

/// positions, cos/sin table -> qkv (in place).
pub fn rope(p: &mut ProgramBuilder, params: Rope, positions: Binding, table: Binding, qkv: Binding) {
    let grid = row_grid(params.rotary_half.div_ceil(ROW_LANES), params.rows * params.heads);
    p.dispatch(KernelId::Rope, params, &[positions, table, qkv], grid);
}

kernel_params! {
    /// attention.wgsl: causal self-attention over windows of `window_len` rows.
    Attention {
        /// Windows * window_len.
        rows: u32,
        window_len: u32,
        q_heads: u32,
        kv_heads: u32,
        qkv_stride: u32,
        /// Multiplies q.k (1/sqrt(head_dim) or the config's scalar).
        scale: f32,
        /// Attention logit soft-capping, 0 = off.
        softcap: f32,
        /// Keys older than this many positions are masked, 0 = none.
        sliding_window: u32,
        /// Some window of the pass is packed, so positions are not rows.
        packed: u32,
    }
}

/// qkv, positions, segments -> output, for heads of `head_dim` values (a constant of the
/// shader, see [`KernelId::attention`]).
pub fn attention(p: &mut ProgramBuilder, head_dim: u32, params: Attention, qkv: Binding, positions: Binding, segments: Binding, output: Binding) {
    let windows = params.rows.checked_div(params.window_len).unwrap_or(0);
    let grid = [params.window_len.div_ceil(QUERY_TILE), params.q_heads, windows];
    let id = KernelId::attention(p.gpu(), head_dim);
    p.dispatch(id, params, &[qkv, positions, segments, output], grid);
}

kernel_params! {
    /// kv_store.wgsl: the keys and values of a pass's rows into one layer's KV cache.
    KvStore {
        rows: u32,
        /// kv_heads * head_dim.
        kv_width: u32,
        qkv_stride: u32,
        /// Column of the first key head in qkv; the values follow the keys.
        k_offset: u32,
    }
}

/// qkv, cache rows (per row its cache row, or [`NO_CACHE_ROW`]) -> cache.
pub fn kv_store(p: &mut ProgramBuilder, params: KvStore, qkv: Binding, cache_rows: Binding, cache: Binding) {
    let grid = row_grid((2 * params.kv_width).div_ceil(ROW_LANES), params.rows);
    p.dispatch(KernelId::KvStore, params, &[qkv, cache_rows, cache], grid);
}

/// The cache row of a pass row whose keys and values are not kept (kv_store.wgsl's NO_ROW).
pub const NO_CACHE_ROW: u32 = u32::MAX;

kernel_params! {
    /// decode_attention.wgsl: each row's query over the keys of its KV-cache slot.
    DecodeAttention {
        rows: u32,
        q_heads: u32,
        kv_heads: u32,
        qkv_stride: u32,
        /// Cache rows per sequence: a row's cache row is slot * slot_len + position.
        slot_len: u32,
        /// Multiplies q.k (1/sqrt(head_dim) or the config's scalar).
        scale: f32,
        /// Attention logit soft-capping, 0 = off.
        softcap: f32,
        /// Keys older than this many positions are masked, 0 = none.
        sliding_window: u32,
    }
}

/// qkv, cache rows, cache -> output, for heads of `head_dim` values: one workgroup per row and
/// group of query heads sharing a key/value head (see [`decode_group`]).
pub fn decode_attention(p: &mut ProgramBuilder, head_dim: u32, params: DecodeAttention, qkv: Binding, cache_rows: Binding, cache: Binding, output: Binding) {
    let group = decode_group(params.q_heads, params.kv_heads);
    let grid = row_grid(params.q_heads / group, params.rows);
    let kernel = KernelId::DecodeAttention { head_dim, group };
    p.dispatch(kernel, params, &[qkv, cache_rows, cache, output], grid);
}

kernel_params! {
    /// activation.wgsl: `output[m, i] = act(input[m, i])`, times `input[m, width + i]` where
    /// `gated` (the gate and up projections side by side).
    Activation {
        rows: u32,
        width: u32,
        gated: u32,
    }
}

/// input -> output through `activation` (a constant of the shader).
pub fn activation(p: &mut ProgramBuilder, activation: model::Activation, params: Activation, input: Binding, output: Binding) {
    let grid = row_grid(params.width.div_ceil(ROW_LANES), params.rows);
    p.dispatch(KernelId::Activation(activation), params, &[input, output], grid);
}

impl KernelId {
    /// The layout of the kernel's parameter block, for the check against its shader.
    pub fn params_layout(self) -> Layout {
        match self {
            KernelId::Embedding(_) => Embedding::LAYOUT,
            KernelId::Matmul { .. } => Matmul::LAYOUT,
            KernelId::LmHeadLoss { .. } => LmHeadLoss::LAYOUT,
            KernelId::LossCombine | KernelId::CompareCombine | KernelId::GreedyCombine => FoldTiles::LAYOUT,
            KernelId::KvStore => KvStore::LAYOUT,
            KernelId::DecodeAttention { .. } => DecodeAttention::LAYOUT,
            KernelId::StackRows => StackRows::LAYOUT,
            KernelId::CompareHead { .. } => CompareHead::LAYOUT,
            KernelId::Norm => Norm::LAYOUT,
            KernelId::Rope => Rope::LAYOUT,
            KernelId::Activation(_) => Activation::LAYOUT,
            KernelId::Attention { .. } => Attention::LAYOUT,
        }
    }
}
