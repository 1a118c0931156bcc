// Greedy generation (src/generate): appends the keys and values of a pass's rows to the KV cache
// of one layer. The cache holds, per cache row, [k heads | v heads] (2 * kv_width values); a
// sequence owns `slot_len` consecutive cache rows, one per position. `cache_rows` gives each row
// of the pass its cache row (slot * slot_len + position), or NO_ROW for rows that are not kept
// (padding). The keys are stored after RoPE, exactly as attention reads them.

struct Params {
    rows: u32,
    kv_width: u32,     // kv_heads * head_dim
    qkv_stride: u32,
    k_offset: u32,     // column of the first key head in qkv (q_heads * head_dim); values follow the keys
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> cache_rows: array<u32>;
@group(0) @binding(4) var<storage, read_write> cache: array<f32>;

const NO_ROW: u32 = 0xffffffffu;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let col = gid.x;
    let row = gid.y + gid.z * groups.y;
    if (col >= 2u * params.kv_width || row >= params.rows) { return; }
    let dest = cache_rows[row];
    if (dest == NO_ROW) { return; }
    cache[dest * 2u * params.kv_width + col] = qkv[row * params.qkv_stride + params.k_offset + col];
}
