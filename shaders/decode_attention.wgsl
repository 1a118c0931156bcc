// Greedy generation (src/generate): attention of each decoding sequence's newest query row over
// the keys and values its slot of the KV cache holds (kv_store.wgsl wrote them, this step's
// included). One workgroup per row and GROUP consecutive query heads that share one key/value
// head (grouped-query attention), so each key and value is loaded once for all of them. Keys are taken
// LANES at a time: each lane scores one key against every query of the group, held in its
// registers; the tile's maxima and sums are reduced in a fixed tree, all heads together; and each
// lane accumulates its own words of the weighted values in key order, with the online-softmax
// correction. A head's numbers are the same whatever the group (the same operations in the same
// order), a row reads nothing of any other row, and the order of every sum is fixed, so a
// sequence's numbers do not depend on which sequences decode beside it.
//
// Prepended at build time (src/gpu/kernels.rs): HEAD_DIM, GROUP, and the word the buffers are
// read in: `Word` (vec4<f32> where HEAD_DIM is a multiple of 4, so every head starts on a vec4: a
// quarter of the loads, which lavapipe pays per load; else f32), WORD_VALUES and `word_dot`.

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

// Per query head of the group, LANES values: the tile's weights, and the reduction's scratch.
var<workgroup> weights: array<f32, GROUP * LANES>;
var<workgroup> reduced: array<f32, GROUP * LANES>;
var<workgroup> own_row: u32;

// Per head of the group, the maximum (or, with `sum`, the sum) of every lane's value, folded in
// a fixed tree; `values` in, the result in reduced[g * LANES].
fn reduce_tile(lane: u32, values: array<f32, GROUP>, sum: bool) {
    for (var g = 0u; g < GROUP; g++) {
        reduced[g * LANES + lane] = values[g];
    }
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            for (var g = 0u; g < GROUP; g++) {
                let here = g * LANES + lane;
                let other = reduced[here + stride];
                reduced[here] = select(max(reduced[here], other), reduced[here] + other, sum);
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let lane = lid.x;
    let first_head = group.x * GROUP;
    let kv_head = first_head / (params.q_heads / params.kv_heads);
    let row = group.y + group.z * groups.y;
    if (row >= params.rows) { return; }
    // In words: a cache row is [k heads | v heads].
    let kv_words = params.kv_heads * HEAD_WORDS;
    let cache_stride = 2u * kv_words;
    var query: array<Word, GROUP * HEAD_WORDS>;
    let q_base = (row * params.qkv_stride + first_head * HEAD_DIM) / WORD_VALUES;
    for (var w = 0u; w < GROUP * HEAD_WORDS; w++) {
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

    var running_max: array<f32, GROUP>;
    var running_sum: array<f32, GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        running_max[g] = -3.0e38;
    }
    var acc: array<Word, GROUP * WORDS_PER_LANE>;
    for (var k0 = first_key; k0 <= position; k0 += LANES) {
        let key = k0 + lane;
        let visible = key <= position;
        var scores: array<f32, GROUP>;
        for (var g = 0u; g < GROUP; g++) {
            scores[g] = -3.0e38;
        }
        if (visible) {
            let base = (slot_start + key) * cache_stride + kv_head * HEAD_WORDS;
            var dots: array<f32, GROUP>;
            for (var w = 0u; w < HEAD_WORDS; w++) {
                let k = cache[base + w];
                for (var g = 0u; g < GROUP; g++) {
                    dots[g] += word_dot(query[g * HEAD_WORDS + w], k);
                }
            }
            for (var g = 0u; g < GROUP; g++) {
                var score = dots[g] * params.scale;
                if (params.softcap > 0.0) {
                    score = params.softcap * tanh(clamp(score / params.softcap, -15.0, 15.0));
                }
                scores[g] = score;
            }
        }
        reduce_tile(lane, scores, false);
        var corrections: array<f32, GROUP>;
        var ps: array<f32, GROUP>;
        for (var g = 0u; g < GROUP; g++) {
            let new_max = max(running_max[g], reduced[g * LANES]);
            corrections[g] = exp(running_max[g] - new_max);
            ps[g] = select(0.0, exp(scores[g] - new_max), visible);
            weights[g * LANES + lane] = ps[g];
            running_max[g] = new_max;
        }
        workgroupBarrier();
        reduce_tile(lane, ps, true);
        for (var g = 0u; g < GROUP; g++) {
            running_sum[g] = running_sum[g] * corrections[g] + reduced[g * LANES];
        }
        let count = min(LANES, position + 1u - k0);
        for (var i = 0u; i < WORDS_PER_LANE; i++) {
            let w = lane + i * LANES;
            if (w < HEAD_WORDS) {
                var values: array<Word, GROUP>;
                for (var g = 0u; g < GROUP; g++) {
                    values[g] = acc[g * WORDS_PER_LANE + i] * corrections[g];
                }
                for (var j = 0u; j < count; j++) {
                    let v = cache[(slot_start + k0 + j) * cache_stride + kv_words + kv_head * HEAD_WORDS + w];
                    for (var g = 0u; g < GROUP; g++) {
                        values[g] += weights[g * LANES + j] * v;
                    }
                }
                for (var g = 0u; g < GROUP; g++) {
                    acc[g * WORDS_PER_LANE + i] = values[g];
                }
            }
        }
        workgroupBarrier();
    }
    for (var g = 0u; g < GROUP; g++) {
        let out_base = (row * params.q_heads * HEAD_DIM + (first_head + g) * HEAD_DIM) / WORD_VALUES;
        for (var i = 0u; i < WORDS_PER_LANE; i++) {
            let w = lane + i * LANES;
            if (w < HEAD_WORDS) {
                output[out_base + w] = acc[g * WORDS_PER_LANE + i] / running_sum[g];
            }
        }
    }
}
