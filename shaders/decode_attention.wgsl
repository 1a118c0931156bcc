// Greedy generation (src/generate): attention of each decoding sequence's newest query row over
// the keys and values its slot of the KV cache holds (kv_store.wgsl wrote them, this step's
// included). One workgroup per (row, query head). Keys are taken LANES at a time: each lane
// scores one key with the query held in its registers, the tile's maximum and sum are reduced in
// a fixed tree, and each lane accumulates its own words of the weighted values in key order,
// with the online-softmax correction. A row reads nothing of any other row, and the order of
// every sum is fixed, so a sequence's numbers do not depend on which sequences decode beside it.
//
// Prepended at build time (src/gpu/kernels.rs): HEAD_DIM, and the word the buffers are read in:
// `Word` (vec4<f32> where HEAD_DIM is a multiple of 4, so every head starts on a vec4: a quarter
// of the loads, which lavapipe pays per load; else f32), WORD_VALUES and `word_dot`.

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
@group(0) @binding(1) var<storage, read> qkv: array<Word>;
@group(0) @binding(2) var<storage, read> cache_rows: array<u32>;
@group(0) @binding(3) var<storage, read> cache: array<Word>;
@group(0) @binding(4) var<storage, read_write> output: array<Word>;

const LANES: u32 = 64u;
const HEAD_WORDS: u32 = HEAD_DIM / WORD_VALUES;
const WORDS_PER_LANE: u32 = (HEAD_WORDS + LANES - 1u) / LANES;

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
    // In words: a cache row is [k heads | v heads].
    let kv_words = params.kv_heads * HEAD_WORDS;
    let cache_stride = 2u * kv_words;
    var query: array<Word, HEAD_WORDS>;
    let q_base = (row * params.qkv_stride + head * HEAD_DIM) / WORD_VALUES;
    for (var w = 0u; w < HEAD_WORDS; w++) {
        query[w] = qkv[q_base + w];
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
    var acc: array<Word, WORDS_PER_LANE>;
    for (var k0 = first_key; k0 <= position; k0 += LANES) {
        let key = k0 + lane;
        let visible = key <= position;
        var score = -3.0e38;
        if (visible) {
            let base = (slot_start + key) * cache_stride + kv_head * HEAD_WORDS;
            var dot = 0.0;
            for (var w = 0u; w < HEAD_WORDS; w++) {
                dot += word_dot(query[w], cache[base + w]);
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
        for (var i = 0u; i < WORDS_PER_LANE; i++) {
            let w = lane + i * LANES;
            if (w < HEAD_WORDS) {
                var value = acc[i] * correction;
                for (var j = 0u; j < count; j++) {
                    value += weights[j] * cache[(slot_start + k0 + j) * cache_stride + kv_words + kv_head * HEAD_WORDS + w];
                }
                acc[i] = value;
            }
        }
        workgroupBarrier();
    }
    let out_base = (row * params.q_heads * HEAD_DIM + head * HEAD_DIM) / WORD_VALUES;
    for (var i = 0u; i < WORDS_PER_LANE; i++) {
        let w = lane + i * LANES;
        if (w < HEAD_WORDS) {
            output[out_base + w] = acc[i] / running_sum;
        }
    }
}
