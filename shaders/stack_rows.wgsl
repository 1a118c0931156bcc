// The input of compare_head.wgsl: the final hidden rows of two models side by side as pairs of
// rows of width_a + width_b values, row 2m = [a[m], 0] and row 2m + 1 = [0, b[m]]. Against the
// head [W_a | W_b] (rows of both models' vocabulary rows side by side), one block product then
// gives model a's logits in even rows and model b's in odd rows, each the same running sum of
// fused multiply-adds as the model's own head (the zeros add nothing), in one invocation's
// registers where compare_head.wgsl can pair them.

struct Params {
    rows: u32,      // rows of a and of b
    width_a: u32,
    width_b: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

// One workgroup per output row (spread over y and z), 64 columns per invocation step.
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let out_row = group.y + group.z * groups.y;
    if (out_row >= 2u * params.rows) { return; }
    let m = out_row / 2u;
    let second = (out_row & 1u) == 1u;
    let width = params.width_a + params.width_b;
    for (var col = lid.x; col < width; col += 64u) {
        var value = 0.0;
        if (!second && col < params.width_a) {
            value = a[m * params.width_a + col];
        } else if (second && col >= params.width_a) {
            value = b[m * params.width_b + col - params.width_a];
        }
        output[out_row * width + col] = value;
    }
}
