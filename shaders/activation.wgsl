// Feed-forward activation. Gated (SwiGLU / GeGLU): output[m, i] = act(input[m, i]) * input[m, width + i]
// where the gate and up projections were written side by side; plain (GELU MLPs):
// output[m, i] = act(input[m, i]).

struct Params {
    rows: u32,
    width: u32,
    gated: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

// erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit), as WGSL has no erf.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

// The activations; the kernel's `activate` (prepended at build time, src/gpu/kernels.rs) calls
// the one its variant names.
fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// The tanh approximation.
fn gelu_tanh(x: f32) -> f32 {
    let inner = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + tanh(clamp(inner, -15.0, 15.0)));  // clamped: some drivers' tanh overflows
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let col = gid.x;
    let row = gid.y + gid.z * groups.y;
    if (col >= params.width || row >= params.rows) { return; }
    let in_stride = select(params.width, 2u * params.width, params.gated != 0u);
    let x = input[row * in_stride + col];
    var y = activate(x);
    if (params.gated != 0u) { y *= input[row * in_stride + params.width + col]; }
    output[row * params.width + col] = y;
}
