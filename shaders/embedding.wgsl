// Embedding gather: output[m, :] (+)= table[indices[m], :] * scale, where the indices are token
// ids (token embeddings) or row positions (learned absolute positions).
// Tables larger than one storage binding are split into row ranges: each dispatch covers one part
// and writes only the rows whose index falls inside it.
// Prepended at build time: the weight snippet of the table's format (src/gpu/kernels.rs), which defines `load_weight`.

struct Params {
    rows: u32,
    width: u32,
    first_row: u32,     // first table row held by this part
    part_rows: u32,
    scale: f32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let col = gid.x;
    let row = gid.y + gid.z * groups.y;
    if (col >= params.width || row >= params.rows) { return; }
    let index = indices[row];
    if (index < params.first_row || index >= params.first_row + params.part_rows) { return; }
    var value = load_weight((index - params.first_row) * params.width + col) * params.scale;
    let at = row * params.width + col;
    if (params.accumulate != 0u) { value += output[at]; }
    output[at] = value;
}
