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
// The other buffers, soft-capping and the valid columns: head_tiles.wgsl.

var<workgroup> lane_stats: array<array<vec4<f32>, LANES>, BLOCK_ROWS>;

@compute @workgroup_size(LANES, 1, 1)
fn lm_head_loss(invocation: Invocation) {
    let lane = invocation.lid.x;
    let row0 = invocation.group.y * BLOCK_ROWS;
    let block = invocation_block(invocation);
    let valid = vocab_columns(invocation);
    for (var r = 0u; r < BLOCK_ROWS; r++) {
        let row = min(row0 + r, params.rows - 1u);
        let target_id = targets[row];
        // This invocation's columns, in increasing order: max and argmax, then the sum of exp.
        var logits: array<f32, BLOCK_COLS>;
        var stats = EMPTY_STATS;
        for (var c = 0u; c < valid; c++) {
            let index = vocab_index(invocation, c);
            let logit = capped(block[r][c], params.softcap);
            logits[c] = logit;
            if (logit > stats.x) { stats.x = logit; stats.w = f32(index); }
            if (index == target_id) { stats.z = logit; }
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
            partials[tile_slot(invocation, row)] = stats;
        }
    }
}
