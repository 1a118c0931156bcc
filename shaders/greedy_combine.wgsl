// Greedy generation's second pass over the LM head (src/generate): folds each row's vocabulary
// tile summaries that lm_head_loss.wgsl left in `partials`, in order, and emits the argmax (ties
// to the lowest token id, as torch.argmax: see combine_stats) and its log-probability. Prepended
// at build time: TILE_COLS, loss_stats.wgsl and fold_tiles.wgsl (the parameters and buffers;
// `targets` is not read).

// One invocation per row: (argmax as an f32, exact below 2^24; log p(argmax)).
@compute @workgroup_size(64, 1, 1)
fn greedy_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= params.rows) { return; }
    let base = row * params.tiles;
    var stats = partials[base];
    for (var t = 1u; t < params.tiles; t++) {
        stats = combine_stats(stats, partials[base + t]);
    }
    output[2u * row] = stats.w;
    // The argmax's logit is the maximum: log p = -log(sum of exp(logit - max)).
    output[2u * row + 1u] = -log(stats.y);
}
