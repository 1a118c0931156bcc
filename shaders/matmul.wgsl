// Matrix product against a weight matrix stored row-major as [rows, depth] (a PyTorch Linear
// weight): product[m, n] = sum_k input[m, k] * weight[n, k].
// Prepended at build time: the binding prelude, a weight snippet (weights_*.wgsl, defining
// `load_weight4` and `load_weight8`) and the generated `block_product` (see src/gpu/kernels.rs),
// the register block of one invocation, stepping over k four or eight values at a time:
// BLOCK_ROWS consecutive rows x BLOCK_COLS columns spaced LANES apart, fully unrolled, because
// loops over private arrays are not unrolled by every driver's compiler (lavapipe's is 5x slower).
//
// Every result is one running sum of fused multiply-adds over k in increasing order, computed by
// one invocation whatever the tile, the number of rows, the batch or the read path: that is what
// makes scores batch-invariant (and identical whether operands come from buffers or textures).
//
// Two entry points share the block product:
//   `matmul`       stores (or adds into) the output, with an optional bias;
//   `lm_head_loss` never stores logits: it reduces each row of its tile to
//                  (max, sum of exp, target logit, argmax) for the fused log-softmax;
// and `loss_combine` folds those tile summaries into log p(target) per row.

struct Params {
    rows: u32,          // m: input rows
    cols: u32,          // n: weight rows in this part (output columns written by this dispatch)
    depth: u32,         // k
    col_offset: u32,    // first output column of this part
    out_stride: u32,    // output row stride (matmul); number of vocabulary tiles per row (loss)
    has_bias: u32,
    accumulate: u32,    // add into the output instead of overwriting it (residual connections)
    tile_offset: u32,   // loss: index of this part's first vocabulary tile
    softcap: f32,       // loss: logit soft-capping value, 0 = off
    vocab: u32,         // loss: logits at or beyond this index are not part of the distribution
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// bindings 1 (input, read with `input_at`) and 2 (weights, read with `weights_at`): see the
// generated prelude (src/gpu/kernels.rs): storage buffers, or textures where those read faster.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

const TILE_COLS: u32 = LANES * BLOCK_COLS;

// Four consecutive inputs of a row from flat index `i` (masked past the row's end when the rows
// are not ALIGNED to four).
fn load_input4(row_start: u32, k: u32) -> vec4<f32> {
    if (ALIGNED) { return input_at((row_start + k) >> 2u); }
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let i = row_start + k + j;
        v[j] = select(0.0, input_at(i >> 2u)[i & 3u], k + j < params.depth);
    }
    return v;
}

// Four consecutive weights of the row starting at flat index `row_start`, from its value k. Past
// the row's end (depths not ALIGNED to four), where the input is masked to zero, the row's last
// value stands in: the reads stay inside the matrix, whose padding a texture copy need not hold
// (a texel past the copy keeps what earlier copies left there, possibly a NaN that 0 x NaN would
// carry into the sum).
fn load_row_weight4(row_start: u32, k: u32) -> vec4<f32> {
    if (ALIGNED) { return load_weight4(row_start + k); }
    let last = params.depth - 1u;
    return vec4<f32>(
        load_weight(row_start + min(k, last)),
        load_weight(row_start + min(k + 1u, last)),
        load_weight(row_start + min(k + 2u, last)),
        load_weight(row_start + min(k + 3u, last)),
    );
}

// Output column of block column c for this invocation (before `col_offset`).
fn block_col(invocation: Invocation, c: u32) -> u32 {
    return invocation.group.x * TILE_COLS + invocation.lid.x + LANES * c;
}

// The first row of this invocation's block and the block's products.
fn invocation_block(invocation: Invocation) -> array<array<f32, BLOCK_COLS>, BLOCK_ROWS> {
    return block_product(invocation.group.y * BLOCK_ROWS, block_col(invocation, 0u), subgroup_lane(invocation));
}

@compute @workgroup_size(LANES, 1, 1)
fn matmul(invocation: Invocation) {
    let row0 = invocation.group.y * BLOCK_ROWS;
    let block = invocation_block(invocation);
    for (var r = 0u; r < BLOCK_ROWS; r++) {
        let row = row0 + r;
        if (row >= params.rows) { break; }
        for (var c = 0u; c < BLOCK_COLS; c++) {
            let col = block_col(invocation, c);
            if (col >= params.cols) { break; }
            let out_col = params.col_offset + col;
            var value = block[r][c];
            if (params.has_bias != 0u) { value += bias[out_col]; }
            let at = row * params.out_stride + out_col;
            if (params.accumulate != 0u) { value += output[at]; }
            output[at] = value;
        }
    }
}

var<workgroup> lane_stats: array<array<vec4<f32>, LANES>, BLOCK_ROWS>;

// Merge two (max, sum of exp relative to max, target logit, argmax) summaries. Ties in the
// maximum keep the lower vocabulary index, as torch.argmax does. An empty summary has max -3e38
// and sum 0, which merges away exactly. Only the summary holding the target has a non-zero
// target lane, so target lanes simply add.
fn combine_stats(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let m = max(a.x, b.x);
    let s = a.y * exp(a.x - m) + b.y * exp(b.x - m);
    let b_first = b.x > a.x || (b.x == a.x && b.w < a.w);
    return vec4<f32>(m, s, a.z + b.z, select(a.w, b.w, b_first));
}

// The argmax travels as an f32 (exact for vocabularies below 2^24); an empty summary has none.
const EMPTY_STATS: vec4<f32> = vec4<f32>(-3.0e38, 0.0, 0.0, 3.0e38);

@compute @workgroup_size(LANES, 1, 1)
fn lm_head_loss(invocation: Invocation) {
    let lane = invocation.lid.x;
    let row0 = invocation.group.y * BLOCK_ROWS;
    let block = invocation_block(invocation);
    for (var r = 0u; r < BLOCK_ROWS; r++) {
        let row = min(row0 + r, params.rows - 1u);
        let target_id = targets[row];
        // This invocation's columns, in increasing order: max and argmax, then the sum of exp.
        var logits: array<f32, BLOCK_COLS>;
        var valid = 0u;
        var stats = EMPTY_STATS;
        for (var c = 0u; c < BLOCK_COLS; c++) {
            let col = block_col(invocation, c);
            let vocab_index = params.col_offset + col;
            if (col >= params.cols || vocab_index >= params.vocab) { break; }
            var logit = block[r][c];
            if (params.softcap > 0.0) {
                logit = params.softcap * tanh(clamp(logit / params.softcap, -15.0, 15.0));
            }
            logits[c] = logit;
            valid = c + 1u;
            if (logit > stats.x) { stats.x = logit; stats.w = f32(vocab_index); }
            if (vocab_index == target_id) { stats.z = logit; }
        }
        for (var c = 0u; c < valid; c++) {
            stats.y += exp(logits[c] - stats.x);
        }
        lane_stats[r][lane] = stats;
    }
    workgroupBarrier();
    // One invocation per row folds the lanes' summaries in a fixed order.
    if (lane < BLOCK_ROWS) {
        let row = row0 + lane;
        if (row < params.rows) {
            var stats = lane_stats[lane][0];
            for (var l = 1u; l < LANES; l++) {
                stats = combine_stats(stats, lane_stats[lane][l]);
            }
            partials[row * params.out_stride + params.tile_offset + invocation.group.x] = stats;
        }
    }
}

// One invocation per row: fold the row's vocabulary tiles in order and emit
// (log p(target), target == argmax) as two floats.
@compute @workgroup_size(64, 1, 1)
fn loss_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= params.rows) { return; }
    let base = row * params.out_stride;
    var stats = partials[base];
    for (var t = 1u; t < params.out_stride; t++) {
        stats = combine_stats(stats, partials[base + t]);
    }
    let target_id = targets[row];
    let target_logit = partials[base + target_id / TILE_COLS].z;
    output[2u * row] = target_logit - (stats.x + log(stats.y));
    output[2u * row + 1u] = select(0.0, 1.0, stats.w == f32(target_id));
}
