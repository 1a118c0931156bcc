// The LM head fused with log-softmax, second pass: folds the tile summaries lm_head_loss.wgsl
// left in `partials`. Prepended at build time: TILE_COLS, the vocabulary indices per tile,
// loss_stats.wgsl (how two summaries merge) and fold_tiles.wgsl (the parameters and buffers).

// One invocation per row: fold the row's vocabulary tiles in order and emit
// (log p(target), target == argmax) as two floats.
@compute @workgroup_size(64, 1, 1)
fn loss_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= params.rows) { return; }
    let base = row * params.tiles;
    var stats = partials[base];
    for (var t = 1u; t < params.tiles; t++) {
        stats = combine_stats(stats, partials[base + t]);
    }
    let target_id = targets[row];
    let target_logit = partials[base + target_id / TILE_COLS].z;
    output[2u * row] = target_logit - (stats.x + log(stats.y));
    output[2u * row + 1u] = select(0.0, 1.0, stats.w == f32(target_id));
}
