// The interface of the second passes that fold each row's vocabulary tile summaries in order
// (loss_combine.wgsl, compare_combine.wgsl): one parameter block and three buffers. Prepended to
// both at build time.

struct Params {
    rows: u32,
    tiles: u32,         // vocabulary tiles per row of `partials`
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;
