// Rotary position embedding, applied in place to the query and key heads of the fused QKV buffer
// (layout per row: q heads, then k heads, then v heads). Rotate-half convention of Hugging Face:
// the first `rotary_half` dims pair with the next `rotary_half`; dims past 2 * rotary_half
// (partial rotary) are left alone. cos/sin come from a host-computed table indexed by
// [position][pair], so every frequency rule (default, linear, llama3, yarn) is data. Each row's
// position comes from `positions` (the row in its window, or its place in a packed segment).

struct Params {
    rows: u32,
    heads: u32,        // query heads + key heads, contiguous from column 0
    head_dim: u32,
    rotary_half: u32,
    stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> cos_sin: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> qkv: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let pair = gid.x;
    let flat = gid.y + gid.z * groups.y;   // row * heads + head
    if (pair >= params.rotary_half || flat >= params.rows * params.heads) { return; }
    let row = flat / params.heads;
    let head = flat % params.heads;
    let position = positions[row];
    let cs = cos_sin[position * params.rotary_half + pair];
    let base = row * params.stride + head * params.head_dim + pair;
    let x1 = qkv[base];
    let x2 = qkv[base + params.rotary_half];
    qkv[base] = x1 * cs.x - x2 * cs.y;
    qkv[base + params.rotary_half] = x2 * cs.x + x1 * cs.y;
}
