// The register block shared by the matrix kernels (matmul.wgsl, lm_head_loss.wgsl), each of
// which declares `params` with at least `rows`, `cols` and `depth`.
// Prepended at build time (src/gpu/kernels.rs): the binding prelude (`input_at`, `weights_at`),
// a weight snippet (weights_*.wgsl, defining `load_weight4` and `load_weight8`) and the generated
// `block_product`, the register block of one invocation, stepping over k several values at a time
// (`DepthStep`): BLOCK_ROWS consecutive rows x BLOCK_COLS columns spaced LANES apart, fully
// unrolled, because loops over private arrays are not unrolled by every driver's compiler
// (lavapipe's is 5x slower). `perplex devices --dump-shaders DIR` writes every variant out whole.
//
// Every result is one running sum over k in increasing order (`Sum` and `add_product`: fused
// multiply-adds, sums_plain.wgsl, or compensated sums, sums_compensated.wgsl, prepended with the
// generated part), computed by one invocation whatever the tile, the number of rows, the batch or
// the read path: that is what makes scores batch-invariant (and identical whether operands come
// from buffers or textures).

const TILE_COLS: u32 = LANES * BLOCK_COLS;

// Four consecutive inputs of a row from flat index `i` (masked past the row's end when the rows
// are not ALIGNED to four).
fn load_input4(row_start: u32, k: u32) -> vec4<f32> {
    if (ALIGNED) { return input_at((row_start + k) >> 2u); }
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let i = row_start + k + j;
        v[j] = select(0.0, input_at(i >> 2u)[i & 3u], k + j < params.depth);
    }
    return v;
}

// Four consecutive weights of the row starting at flat index `row_start`, from its value k. Past
// the row's end (depths not ALIGNED to four), where the input is masked to zero, the row's last
// value stands in: the reads stay inside the matrix, whose padding a texture copy need not hold
// (a texel past the copy keeps what earlier copies left there, possibly a NaN that 0 x NaN would
// carry into the sum).
fn load_row_weight4(row_start: u32, k: u32) -> vec4<f32> {
    if (ALIGNED) { return load_weight4(row_start + k); }
    let last = params.depth - 1u;
    return vec4<f32>(
        load_weight(row_start + min(k, last)),
        load_weight(row_start + min(k + 1u, last)),
        load_weight(row_start + min(k + 2u, last)),
        load_weight(row_start + min(k + 3u, last)),
    );
}

// Output column of block column c for this invocation (before `col_offset`).
fn block_col(invocation: Invocation, c: u32) -> u32 {
    return invocation.group.x * TILE_COLS + invocation.lid.x + LANES * c;
}

// The first row of this invocation's block and the block's products.
fn invocation_block(invocation: Invocation) -> array<array<f32, BLOCK_COLS>, BLOCK_ROWS> {
    return block_product(invocation.group.y * BLOCK_ROWS, block_col(invocation, 0u), subgroup_lane(invocation));
}
