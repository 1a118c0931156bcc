// Causal self-attention over a batch of windows, flash-attention style: each workgroup takes
// QUERY_TILE consecutive queries of one head of one window and streams the keys and values in
// tiles through workgroup memory with an online softmax, so no score matrix is ever stored.
// Each query folds its keys in increasing order in one invocation: results do not depend on the
// batch. Prepended at build time: `const HEAD_DIM` and `const KEY_TILE` for this model.
//
// Input: the fused QKV buffer, per row [q heads | k heads | v heads] of HEAD_DIM each; rows are
// window * window_len + position. Output: [rows, q_heads * HEAD_DIM].

struct Params {
    rows: u32,
    window_len: u32,
    q_heads: u32,
    kv_heads: u32,
    qkv_stride: u32,
    scale: f32,          // multiplies q.k (1/sqrt(head_dim) or the config's scalar)
    softcap: f32,        // attention logit soft-capping, 0 = off
    sliding_window: u32, // keys older than this many positions are masked, 0 = none
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const QUERY_TILE: u32 = 32u;

var<workgroup> tile_k: array<array<f32, HEAD_DIM>, KEY_TILE>;
var<workgroup> tile_v: array<array<f32, HEAD_DIM>, KEY_TILE>;

@compute @workgroup_size(32, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let first_query = group.x * QUERY_TILE;
    let head = group.y;
    let window = group.z;
    let kv_head = head / (params.q_heads / params.kv_heads);
    let query = first_query + lid.x;
    let in_window = query < params.window_len;
    let row0 = window * params.window_len;
    let q_col = head * HEAD_DIM;
    let k_col = (params.q_heads + kv_head) * HEAD_DIM;
    let v_col = (params.q_heads + params.kv_heads + kv_head) * HEAD_DIM;

    var q: array<f32, HEAD_DIM>;
    var acc: array<f32, HEAD_DIM>;
    if (in_window) {
        let base = (row0 + query) * params.qkv_stride + q_col;
        for (var d = 0u; d < HEAD_DIM; d++) { q[d] = qkv[base + d]; }
    }
    var running_max = -3.0e38;
    var running_sum = 0.0;

    // Keys any query of this tile may see: [first_key, last_key].
    let last_key = min(first_query + QUERY_TILE, params.window_len) - 1u;
    var first_key = 0u;
    if (params.sliding_window > 0u && first_query + 1u > params.sliding_window) {
        first_key = first_query + 1u - params.sliding_window;
    }
    let tile_start = (first_key / KEY_TILE) * KEY_TILE;
    for (var k0 = tile_start; k0 <= last_key; k0 += KEY_TILE) {
        for (var e = lid.x; e < KEY_TILE * HEAD_DIM; e += QUERY_TILE) {
            let j = e / HEAD_DIM;
            let d = e % HEAD_DIM;
            let key = k0 + j;
            var kv = vec2<f32>(0.0, 0.0);
            if (key <= last_key) {
                let base = (row0 + key) * params.qkv_stride;
                kv = vec2<f32>(qkv[base + k_col + d], qkv[base + v_col + d]);
            }
            tile_k[j][d] = kv.x;
            tile_v[j][d] = kv.y;
        }
        workgroupBarrier();
        if (in_window) {
            for (var j = 0u; j < KEY_TILE; j++) {
                let key = k0 + j;
                let visible = key <= query && (params.sliding_window == 0u || query - key < params.sliding_window);
                if (!visible) { continue; }
                var score = 0.0;
                for (var d = 0u; d < HEAD_DIM; d++) { score = fma(q[d], tile_k[j][d], score); }
                score *= params.scale;
                if (params.softcap > 0.0) {
                    score = params.softcap * tanh(clamp(score / params.softcap, -15.0, 15.0));
                }
                let new_max = max(running_max, score);
                let correction = exp(running_max - new_max);
                let p = exp(score - new_max);
                running_sum = running_sum * correction + p;
                for (var d = 0u; d < HEAD_DIM; d++) { acc[d] = fma(p, tile_v[j][d], acc[d] * correction); }
                running_max = new_max;
            }
        }
        workgroupBarrier();
    }
    if (in_window) {
        let base = (row0 + query) * params.q_heads * HEAD_DIM + q_col;
        let inv = 1.0 / running_sum;
        for (var d = 0u; d < HEAD_DIM; d++) { output[base + d] = acc[d] * inv; }
    }
}
