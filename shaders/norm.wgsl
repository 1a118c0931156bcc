// RMSNorm and LayerNorm over segments of rows, one workgroup per segment.
// A segment is `width` consecutive values; each input row holds `segments` of them starting at
// `offset` (so the same kernel normalises hidden states, and per-head queries/keys for QK-norm).
//   rms:   y = x / sqrt(mean(x^2) + eps) * (weight + weight_offset)
//   layer: y = (x - mean) / sqrt(var + eps) * weight + bias
// Sums are reduced in a fixed tree order, so a row's result never depends on the batch.

struct Params {
    segments_total: u32,  // rows * segments
    width: u32,
    segments: u32,        // segments per row
    stride: u32,          // row stride of input and output
    offset: u32,          // column of the first segment
    layer_norm: u32,
    has_bias: u32,
    in_place: u32,        // read `output` instead of `input`
    accumulate: u32,      // add the result into `output` (post-norm residual)
    eps: f32,
    weight_offset: f32,   // 1.0 for Gemma's (1 + weight)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const THREADS: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn read_value(i: u32) -> f32 {
    if (params.in_place != 0u) { return output[i]; }
    return input[i];
}

// Sum of `v` over the workgroup; every invocation gets the same value.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = THREADS / 2u; half > 0u; half /= 2u) {
        if (lid < half) { partial[lid] += partial[lid + half]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let segment = group.y + group.z * groups.y;
    if (segment >= params.segments_total) { return; }
    let lid = lid3.x;
    let row = segment / params.segments;
    let base = row * params.stride + params.offset + (segment % params.segments) * params.width;
    let n = f32(params.width);

    var mean = 0.0;
    if (params.layer_norm != 0u) {
        var s = 0.0;
        for (var i = lid; i < params.width; i += THREADS) { s += read_value(base + i); }
        mean = workgroup_sum(s, lid) / n;
    }
    var sq = 0.0;
    for (var i = lid; i < params.width; i += THREADS) {
        let d = read_value(base + i) - mean;
        sq += d * d;
    }
    let inv = inverseSqrt(workgroup_sum(sq, lid) / n + params.eps);
    for (var i = lid; i < params.width; i += THREADS) {
        var y = (read_value(base + i) - mean) * inv * (weight[i] + params.weight_offset);
        if (params.has_bias != 0u) { y += bias[i]; }
        if (params.accumulate != 0u) { y += output[base + i]; }
        output[base + i] = y;
    }
}
