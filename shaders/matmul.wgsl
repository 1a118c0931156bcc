// Tiled matrix product against a weight matrix stored row-major as [rows, k] (a PyTorch Linear
// weight): product[m, n] = sum_k input[m, k] * weight[n, k].
// Prepended at build time: one of weights_{f32,f16,bf16}.wgsl, which defines `load_weight`.
//
// Each workgroup computes a 64 x 64 output tile with 16 x 16 invocations holding 4 x 4 results.
// Every result is summed over k in increasing order by one invocation, whatever the tile, the
// number of rows or the batch: that is what makes scores batch-invariant.
//
// Two entry points share the tile product:
//   `matmul`       stores (or adds into) the output, with an optional bias;
//   `lm_head_loss` never stores logits: it reduces each row of the tile to
//                  (max, sum of exp, target logit, argmax) for the fused log-softmax.

struct Params {
    rows: u32,          // m: input rows
    cols: u32,          // n: weight rows in this part (output columns written by this dispatch)
    depth: u32,         // k
    col_offset: u32,    // first output column of this part
    out_stride: u32,    // output row stride (matmul); number of partial tiles per row (loss)
    has_bias: u32,
    accumulate: u32,    // add into the output instead of overwriting it (residual connections)
    tile_offset: u32,   // loss: index of this part's first vocabulary tile
    softcap: f32,       // loss: logit soft-capping value, 0 = off
    vocab: u32,         // loss: logits at or beyond this index are not part of the distribution
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
// binding 2: weights (see the prepended weight snippet)
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

const TILE: u32 = 64u;
const STEP: u32 = 16u;

var<workgroup> tile_in: array<array<f32, 17>, 64>;
var<workgroup> tile_w: array<array<f32, 17>, 64>;

// Accumulators of one invocation: acc[i][j] is row (lid.y + 16 i), column (lid.x + 16 j).
fn tile_product(group: vec3<u32>, lid: vec3<u32>) -> array<vec4<f32>, 4> {
    let row0 = group.y * TILE;
    let col0 = group.x * TILE;
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < params.depth; k0 += STEP) {
        for (var e = 0u; e < 4u; e++) {
            let flat = tid + e * 256u;
            let r = flat / STEP;
            let c = flat % STEP;
            let kk = k0 + c;
            var a = 0.0;
            if (row0 + r < params.rows && kk < params.depth) {
                a = input[(row0 + r) * params.depth + kk];
            }
            tile_in[r][c] = a;
            var w = 0.0;
            if (col0 + r < params.cols && kk < params.depth) {
                w = load_weight((col0 + r) * params.depth + kk);
            }
            tile_w[r][c] = w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < STEP; kk++) {
            var a: vec4<f32>;
            var w: vec4<f32>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tile_in[lid.y + 16u * i][kk];
                w[i] = tile_w[lid.x + 16u * i][kk];
            }
            for (var i = 0u; i < 4u; i++) {
                acc[i] = fma(vec4<f32>(a[i]), w, acc[i]);
            }
        }
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let acc = tile_product(group, lid);
    for (var i = 0u; i < 4u; i++) {
        let row = group.y * TILE + lid.y + 16u * i;
        if (row >= params.rows) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = group.x * TILE + lid.x + 16u * j;
            if (col >= params.cols) { continue; }
            let out_col = params.col_offset + col;
            var value = acc[i][j];
            if (params.has_bias != 0u) { value += bias[out_col]; }
            let at = row * params.out_stride + out_col;
            if (params.accumulate != 0u) { value += output[at]; }
            output[at] = value;
        }
    }
}

// Per-row partial reduction of the tile's logits, combined by loss.wgsl.
var<workgroup> row_stats: array<array<vec4<f32>, 16>, 64>;

@compute @workgroup_size(16, 16, 1)
fn lm_head_loss(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let acc = tile_product(group, lid);
    let col0 = group.x * TILE;
    let first_vocab = params.col_offset + col0;
    for (var i = 0u; i < 4u; i++) {
        let row = group.y * TILE + lid.y + 16u * i;
        let target_id = select(0xffffffffu, targets[min(row, params.rows - 1u)], row < params.rows);
        // (max, sum exp(l - max), target logit, argmax) over this invocation's 4 columns, in column order.
        var best = -3.0e38;
        var best_index = 0xffffffffu;
        var target_logit = 0.0;
        var logits: vec4<f32>;
        var valid: vec4<bool>;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            let vocab_index = params.col_offset + col;
            valid[j] = col < params.cols && vocab_index < params.vocab;
            var l = acc[i][j];
            if (params.softcap > 0.0) { l = params.softcap * tanh(clamp(l / params.softcap, -15.0, 15.0)); }
            logits[j] = l;
            if (valid[j] && l > best) { best = l; best_index = vocab_index; }
            if (valid[j] && vocab_index == target_id) { target_logit = l; }
        }
        var sum = 0.0;
        for (var j = 0u; j < 4u; j++) {
            if (valid[j]) { sum += exp(logits[j] - best); }
        }
        // The argmax index rides in the w lane as raw bits.
        row_stats[lid.y + 16u * i][lid.x] = vec4<f32>(best, sum, target_logit, bitcast<f32>(best_index));
    }
    workgroupBarrier();
    // One invocation per row folds the 16 column groups in a fixed order.
    if (lid.y == 0u) {
        for (var rr = 0u; rr < 4u; rr++) {
            let local_row = lid.x * 4u + rr;
            let row = group.y * TILE + local_row;
            if (row >= params.rows) { continue; }
            var stats = row_stats[local_row][0];
            for (var c = 1u; c < 16u; c++) {
                stats = combine_stats(stats, row_stats[local_row][c]);
            }
            partials[row * params.out_stride + params.tile_offset + group.x] = stats;
        }
    }
}

// Merge two (max, sum of exp, target logit, argmax) summaries; `a` covers lower vocabulary indices
// than `b`, so ties in the maximum keep `a`'s (lower) index, as torch.argmax does. An empty summary
// has max -3e38 and sum 0, which merges away exactly. Only the tile holding the target has a
// non-zero target lane, so the lanes simply add.
fn combine_stats(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let m = max(a.x, b.x);
    let s = a.y * exp(a.x - m) + b.y * exp(b.x - m);
    return vec4<f32>(m, s, a.z + b.z, select(a.w, b.w, b.x > a.x));
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
    let target_logit = partials[base + target_id / TILE].z;
    output[2u * row] = target_logit - (stats.x + log(stats.y));
    output[2u * row + 1u] = select(0.0, 1.0, bitcast<u32>(stats.w) == target_id);
}
