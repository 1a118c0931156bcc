// Causal self-attention over a batch of windows, flash-attention style: each workgroup takes
// QUERY_TILE consecutive queries of one head of one window and streams the keys and values in
// tiles through workgroup memory with an online softmax, so no score matrix is ever stored.
// Each query folds its keys in increasing order in one invocation: results do not depend on the
// batch. Prepended at build time (src/gpu/kernels.rs): HEAD_DIM, KEY_TILE, the bindings of qkv
// and positions (read with `qkv_at`, `position_at`), and the generated head-vector helpers
// (`HeadVec`, `load_head`, `dot_key`, `add_value`, `scale_head`, `store_head`), unrolled over
// HEAD_DIM / 4 vec4s so the vectors stay in registers.
//
// KEY_TILE 0 is the texture path (src/gpu/kernels.rs, ReadPath): qkv and positions are texture
// copies, and the invocations read keys and values straight from them into registers, because on
// lavapipe workgroup memory is as slow to read as a storage buffer and a texel fetch is several
// times cheaper. Keys come KEY_STEP at a time, each fetched once per subgroup and broadcast where
// subgroups allow (`fold_key_step`), else fetched by every invocation itself. Every invocation of the
// workgroup runs every step over the tile's key range (broadcasts need uniform control flow) and
// skips the keys its query does not see: same keys, same order, same arithmetic.
//
// Input: the fused QKV buffer, per row [q heads | k heads | v heads] of HEAD_DIM each; rows are
// window * window_len + row-in-window. Output: [rows, q_heads * HEAD_DIM].
//
// A window may be packed (shared-prefix scoring, src/score/loglik.rs): its first rows are a prefix
// shared by several segments that follow it, each segment continuing the prefix on its own. Per
// row, `positions` is the token position (RoPE and sliding windows count in it) and `segments` is
// (shared_end, segment_start), both rows of the window: query q sees key j <= q when
// j < shared_end or j >= segment_start. Plain rows have (0, 0) and see every earlier row, and their
// position is their row in the window, so plain windows fold exactly the keys they always did.

struct Params {
    rows: u32,
    window_len: u32,
    q_heads: u32,
    kv_heads: u32,
    qkv_stride: u32,
    scale: f32,          // multiplies q.k (1/sqrt(head_dim) or the config's scalar)
    softcap: f32,        // attention logit soft-capping, 0 = off
    sliding_window: u32, // keys older than this many positions are masked, 0 = none
    packed: u32,         // 1: some window of the pass is packed, so positions are not rows
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> segments: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const QUERY_TILE: u32 = 32u;

const TILE_SLOTS: u32 = max(KEY_TILE, 1u);
var<workgroup> tile_k: array<array<vec4<f32>, HEAD_VEC4S>, TILE_SLOTS>;
var<workgroup> tile_v: array<array<vec4<f32>, HEAD_VEC4S>, TILE_SLOTS>;
var<workgroup> tile_position: array<u32, TILE_SLOTS>;
// The range of keys the tiled path walks (see main).
var<workgroup> key_range: vec2<u32>;

// One query's online softmax: the running maximum and sum of exp, and the weighted values.
struct Running {
    acc: HeadVec,
    max: f32,
    sum: f32,
}

// Whether a query sees key `key` (rows of the window), given the query's row, (shared_end,
// segment_start) and position, and the key's position.
fn visible(key: u32, query: u32, q_segment: vec2<u32>, q_position: u32, key_position: u32) -> bool {
    return key <= query && (key < q_segment.x || key >= q_segment.y)
        && (params.sliding_window == 0u || q_position - key_position < params.sliding_window);
}

// What decides which keys a query sees.
struct QueryView {
    in_window: bool,
    query: u32,
    segment: vec2<u32>,
    position: u32,
}

fn sees_key(view: QueryView, key: u32, key_position: u32) -> bool {
    return view.in_window && visible(key, view.query, view.segment, view.position, key_position);
}

// Folds one key's score into `running` (its values scaled by the correction) and returns the
// weight p of its value, which the caller adds.
fn fold_score(running: ptr<function, Running>, dot: f32) -> f32 {
    var score = dot * params.scale;
    if (params.softcap > 0.0) {
        score = params.softcap * tanh(clamp(score / params.softcap, -15.0, 15.0));
    }
    let new_max = max((*running).max, score);
    let correction = exp((*running).max - new_max);
    let p = exp(score - new_max);
    (*running).sum = (*running).sum * correction + p;
    (*running).acc = scale_head((*running).acc, correction);
    (*running).max = new_max;
    return p;
}

@compute @workgroup_size(32, 1, 1)
fn main(invocation: Invocation) {
    let group = invocation.group;
    let lid = invocation.lid;
    let first_query = group.x * QUERY_TILE;
    let head = group.y;
    let window = group.z;
    let kv_head = head / (params.q_heads / params.kv_heads);
    let query = first_query + lid.x;
    let in_window = query < params.window_len;
    let row0 = window * params.window_len;
    let k_col = (params.q_heads + kv_head) * HEAD_DIM;
    let v_col = (params.q_heads + params.kv_heads + kv_head) * HEAD_DIM;

    let q_row = row0 + min(query, params.window_len - 1u);
    let q = load_head(q_row * params.qkv_stride + head * HEAD_DIM);
    let q_position = position_at(q_row);
    let q_segment = segments[q_row];
    var running = Running(HeadVec(), -3.0e38, 0.0);

    // Keys any query of this tile may see: [first_key, last_key].
    let last_key = min(first_query + QUERY_TILE, params.window_len) - 1u;
    // In a packed window a segment's position is below its row, so the sliding window bounds
    // keys by row only in plain passes.
    var first_key = 0u;
    if (params.packed == 0u && params.sliding_window > 0u && first_query + 1u > params.sliding_window) {
        first_key = first_query + 1u - params.sliding_window;
    }
    if (KEY_TILE == 0u) {
        // Texture path: no tiles, no barriers.
        let lane = subgroup_lane(invocation);
        let sees = QueryView(in_window, query, q_segment, q_position);
        // Shared keys need every lane at every step; a lane alone stops at its own query.
        let end_key = select(last_key, min(query, last_key), KEY_STEP == 1u);
        for (var k0 = first_key; k0 <= end_key; k0 += KEY_STEP) {
            let own_row = row0 + min(k0 + lane % KEY_STEP, last_key);
            let own_base = own_row * params.qkv_stride;
            let own_k = load_head_words((own_base + k_col) >> 2u);
            let own_v = load_head_words((own_base + v_col) >> 2u);
            let own_position = position_at(own_row);
            fold_key_step(&running, q, own_k, own_v, own_position, k0, sees);
        }
    } else {
        // The key range is the workgroup's, but compilers that check that barriers sit in uniform
        // control flow (WebGPU's Tint) cannot see that through the Invocation struct: loading it
        // through workgroup memory says so.
        if (lid.x == 0u) {
            key_range = vec2<u32>(first_key, last_key);
        }
        let range = workgroupUniformLoad(&key_range);
        for (var k0 = (range.x / TILE_SLOTS) * TILE_SLOTS; k0 <= range.y; k0 += TILE_SLOTS) {
            for (var e = lid.x; e < TILE_SLOTS * HEAD_VEC4S; e += QUERY_TILE) {
                let j = e / HEAD_VEC4S;
                let d = (e % HEAD_VEC4S) * 4u;
                let key = min(k0 + j, last_key);
                let base = (row0 + key) * params.qkv_stride;
                tile_k[j][e % HEAD_VEC4S] = vec4<f32>(qkv_at(base + k_col + d), qkv_at(base + k_col + d + 1u), qkv_at(base + k_col + d + 2u), qkv_at(base + k_col + d + 3u));
                tile_v[j][e % HEAD_VEC4S] = vec4<f32>(qkv_at(base + v_col + d), qkv_at(base + v_col + d + 1u), qkv_at(base + v_col + d + 2u), qkv_at(base + v_col + d + 3u));
                if (d == 0u) { tile_position[j] = position_at(row0 + key); }
            }
            workgroupBarrier();
            if (in_window) {
                for (var j = 0u; j < TILE_SLOTS; j++) {
                    if (!visible(k0 + j, query, q_segment, q_position, tile_position[j])) { continue; }
                    let p = fold_score(&running, dot_key(q, j));
                    running.acc = add_value(running.acc, p, j);
                }
            }
            workgroupBarrier();
        }
    }
    if (in_window) {
        store_head(scale_head(running.acc, 1.0 / running.sum), (row0 + query) * params.q_heads * HEAD_DIM + head * HEAD_DIM);
    }
}
