// Greedy generation (src/generate): attention of each decoding sequence's newest query row over
// the keys and values its slot of the KV cache holds (kv_store.wgsl wrote them, this step's
// included). One workgroup per (row, query head). Keys are taken LANES at a time: each lane
// scores one key, the tile's maximum and sum are reduced in a fixed tree, and each lane
// accumulates its own dims of the weighted values in key order, with the online-softmax
// correction. A row reads nothing of any other row, and the order of every sum is fixed, so a
// sequence's numbers do not depend on which sequences decode beside it.
// Prepended at build time (src/gpu/kernels.rs): HEAD_DIM.

struct Params {
    rows: u32,
    q_heads: u32,
    kv_heads: u32,
    qkv_stride: u32,
    slot_len: u32,       // cache rows per sequence: its cache row is slot * slot_len + position
    scale: f32,          // multiplies q.k (1/sqrt(head_dim) or the config's scalar)
    softcap: f32,        // attention logit soft-capping, 0 = off
    sliding_window: u32, // keys older than this many positions are masked, 0 = none
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> cache_rows: array<u32>;
@group(0) @binding(3) var<storage, read> cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const LANES: u32 = 64u;
const DIMS_PER_LANE: u32 = (HEAD_DIM + LANES - 1u) / LANES;

var<workgroup> query: array<f32, HEAD_DIM>;
var<workgroup> weights: array<f32, LANES>;
var<workgroup> reduced: array<f32, LANES>;
var<workgroup> own_row: u32;

// The maximum (or, with `sum`, the sum) of every lane's value, folded in a fixed tree.
fn reduce_tile(lane: u32, value: f32, sum: bool) -> f32 {
    reduced[lane] = value;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            let other = reduced[lane + stride];
            reduced[lane] = select(max(reduced[lane], other), reduced[lane] + other, sum);
        }
        workgroupBarrier();
    }
    let total = reduced[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let lane = lid.x;
    let head = group.x;
    let row = group.y + group.z * groups.y;
    if (row >= params.rows) { return; }
    let kv_head = head / (params.q_heads / params.kv_heads);
    let kv_width = params.kv_heads * HEAD_DIM;
    let cache_stride = 2u * kv_width;
    for (var d = lane; d < HEAD_DIM; d += LANES) {
        query[d] = qkv[row * params.qkv_stride + head * HEAD_DIM + d];
    }
    if (lane == 0u) { own_row = cache_rows[row]; }
    let cache_row = workgroupUniformLoad(&own_row);
    let position = cache_row % params.slot_len;
    let slot_start = cache_row - position;
    var first_key = 0u;
    if (params.sliding_window > 0u && position + 1u > params.sliding_window) {
        first_key = position + 1u - params.sliding_window;
    }

    var running_max = -3.0e38;
    var running_sum = 0.0;
    var acc: array<f32, DIMS_PER_LANE>;
    for (var k0 = first_key; k0 <= position; k0 += LANES) {
        let key = k0 + lane;
        let visible = key <= position;
        var score = -3.0e38;
        if (visible) {
            let base = (slot_start + key) * cache_stride + kv_head * HEAD_DIM;
            var dot = 0.0;
            for (var d = 0u; d < HEAD_DIM; d++) {
                dot += query[d] * cache[base + d];
            }
            score = dot * params.scale;
            if (params.softcap > 0.0) {
                score = params.softcap * tanh(clamp(score / params.softcap, -15.0, 15.0));
            }
        }
        let new_max = max(running_max, reduce_tile(lane, score, false));
        let correction = exp(running_max - new_max);
        let p = select(0.0, exp(score - new_max), visible);
        weights[lane] = p;
        running_sum = running_sum * correction + reduce_tile(lane, p, true);
        running_max = new_max;
        let count = min(LANES, position + 1u - k0);
        for (var i = 0u; i < DIMS_PER_LANE; i++) {
            let d = lane + i * LANES;
            if (d < HEAD_DIM) {
                var value = acc[i] * correction;
                for (var j = 0u; j < count; j++) {
                    value += weights[j] * cache[(slot_start + k0 + j) * cache_stride + kv_width + kv_head * HEAD_DIM + d];
                }
                acc[i] = value;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < DIMS_PER_LANE; i++) {
        let d = lane + i * LANES;
        if (d < HEAD_DIM) {
            output[row * params.q_heads * HEAD_DIM + head * HEAD_DIM + d] = acc[i] / running_sum;
        }
    }
}
