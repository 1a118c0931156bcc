// The LM head fused with log-softmax, first pass: the logits of a tile of the vocabulary (the
// block product of matmul_block.wgsl) are never stored; each row of the tile is reduced to
// (max, sum of exp, target logit, argmax) in `partials`, which loss_combine.wgsl folds into
// log p(target) per row. The summaries and how two merge: loss_stats.wgsl.

struct Params {
    rows: u32,          // input rows
    cols: u32,          // vocabulary rows in this part
    depth: u32,         // hidden size
    col_offset: u32,    // first vocabulary index of this part
    tiles: u32,         // vocabulary tiles per row of `partials`, over all parts
    tile_offset: u32,   // index of this part's first tile
    softcap: f32,       // logit soft-capping value, 0 = off
    vocab: u32,         // logits at or beyond this index are not part of the distribution
}

@group(0) @binding(0) var<uniform> params: Params;
// bindings 1 (input, read with `input_at`) and 2 (weights, read with `weights_at`): see the
// generated prelude (src/gpu/kernels.rs).
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;

var<workgroup> lane_stats: array<array<vec4<f32>, LANES>, BLOCK_ROWS>;

@compute @workgroup_size(LANES, 1, 1)
fn lm_head_loss(invocation: Invocation) {
    let lane = invocation.lid.x;
    let row0 = invocation.group.y * BLOCK_ROWS;
    let block = invocation_block(invocation);
    for (var r = 0u; r < BLOCK_ROWS; r++) {
        let row = min(row0 + r, params.rows - 1u);
        let target_id = targets[row];
        // This invocation's columns, in increasing order: max and argmax, then the sum of exp.
        var logits: array<f32, BLOCK_COLS>;
        var valid = 0u;
        var stats = EMPTY_STATS;
        for (var c = 0u; c < BLOCK_COLS; c++) {
            let col = block_col(invocation, c);
            let vocab_index = params.col_offset + col;
            if (col >= params.cols || vocab_index >= params.vocab) { break; }
            var logit = block[r][c];
            if (params.softcap > 0.0) {
                logit = params.softcap * tanh(clamp(logit / params.softcap, -15.0, 15.0));
            }
            logits[c] = logit;
            valid = c + 1u;
            if (logit > stats.x) { stats.x = logit; stats.w = f32(vocab_index); }
            if (vocab_index == target_id) { stats.z = logit; }
        }
        for (var c = 0u; c < valid; c++) {
            stats.y += exp(logits[c] - stats.x);
        }
        lane_stats[r][lane] = stats;
    }
    workgroupBarrier();
    // One invocation per row folds the lanes' summaries in a fixed order.
    if (lane < BLOCK_ROWS) {
        let row = row0 + lane;
        if (row < params.rows) {
            var stats = lane_stats[lane][0];
            for (var l = 1u; l < LANES; l++) {
                stats = combine_stats(stats, lane_stats[lane][l]);
            }
            partials[row * params.tiles + params.tile_offset + invocation.group.x] = stats;
        }
    }
}
