// Matrix product against a weight matrix stored row-major as [rows, depth] (a PyTorch Linear
// weight): product[m, n] = sum_k input[m, k] * weight[n, k], stored into (or added to) the
// output with an optional bias. The block product comes from matmul_block.wgsl.

struct Params {
    rows: u32,          // m: input rows
    cols: u32,          // n: weight rows in this part (output columns written by this dispatch)
    depth: u32,         // k
    col_offset: u32,    // first output column of this part
    out_stride: u32,    // output row stride
    has_bias: u32,
    accumulate: u32,    // add into the output instead of overwriting it (residual connections)
}

@group(0) @binding(0) var<uniform> params: Params;
// bindings 1 (input, read with `input_at`) and 2 (weights, read with `weights_at`): see the
// generated prelude (src/gpu/kernels.rs): storage buffers, or textures where those read faster.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(LANES, 1, 1)
fn matmul(invocation: Invocation) {
    let row0 = invocation.group.y * BLOCK_ROWS;
    let block = invocation_block(invocation);
    for (var r = 0u; r < BLOCK_ROWS; r++) {
        let row = row0 + r;
        if (row >= params.rows) { break; }
        for (var c = 0u; c < BLOCK_COLS; c++) {
            let col = block_col(invocation, c);
            if (col >= params.cols) { break; }
            let out_col = params.col_offset + col;
            var value = block[r][c];
            if (params.has_bias != 0u) { value += bias[out_col]; }
            let at = row * params.out_stride + out_col;
            if (params.accumulate != 0u) { value += output[at]; }
            output[at] = value;
        }
    }
}
