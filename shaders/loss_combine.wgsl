// The LM head fused with log-softmax, second pass: folds the tile summaries lm_head_loss.wgsl
// left in `partials`, for scoring (`loss_combine`) and for greedy generation (`greedy_combine`).
// Prepended at build time: TILE_COLS, the vocabulary indices per tile, loss_stats.wgsl (how two
// summaries merge) and fold_tiles.wgsl (the parameters and buffers).

// A row's vocabulary tiles folded in order: its (max, sum of exp, target logit, argmax).
fn fold_row(row: u32) -> vec4<f32> {
    let base = row * params.tiles;
    var stats = partials[base];
    for (var t = 1u; t < params.tiles; t++) {
        stats = combine_stats(stats, partials[base + t]);
    }
    return stats;
}

// One invocation per row: log p(target) and the argmax (ties to the lowest token id; an f32,
// exact below 2^24), which the host compares with the target.
@compute @workgroup_size(64, 1, 1)
fn loss_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= params.rows) { return; }
    let stats = fold_row(row);
    let target_id = targets[row];
    let target_logit = partials[row * params.tiles + target_id / TILE_COLS].z;
    output[2u * row] = target_logit - (stats.x + log(stats.y));
    output[2u * row + 1u] = stats.w;
}

// One invocation per row: the argmax (ties to the lowest token id, as torch.argmax: see
// combine_stats) as an f32, exact below 2^24, and its log-probability. `targets` is not read.
@compute @workgroup_size(64, 1, 1)
fn greedy_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= params.rows) { return; }
    let stats = fold_row(row);
    output[2u * row] = stats.w;
    // The argmax's logit is the maximum: log p = -log(sum of exp(logit - max)).
    output[2u * row + 1u] = -log(stats.y);
}
