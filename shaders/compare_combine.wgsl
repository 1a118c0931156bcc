// perplex compare, second pass: folds the tile summaries compare_head.wgsl left in `partials`
// into five numbers per compared row. Prepended at build time: TILE_COLS, loss_stats.wgsl,
// compare_stats.wgsl and fold_tiles.wgsl (the parameters and buffers).

// One invocation per row: fold the row's tiles in order and emit (KL(base || model) in nats,
// log p_base(target), log p_model(target), argmax of base, argmax of model). The log-probabilities
// are computed as loss_combine.wgsl computes them, from summaries folded in the same order, so
// each equals what `perplex ppl` gives that model.
@compute @workgroup_size(64, 1, 1)
fn compare_combine(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= params.rows) { return; }
    let first = row * params.tiles;
    var stats = load_compare(first);
    for (var t = 1u; t < params.tiles; t++) {
        stats = combine_compare(stats, load_compare(first + t));
    }
    let target_id = targets[row];
    let target_tile = load_compare(first + target_id / TILE_COLS);
    let kl = stats.cross / stats.base.y + log1p_(stats.spread / stats.base.y);
    output[5u * row] = kl;
    output[5u * row + 1u] = target_tile.base.z - (stats.base.x + log(stats.base.y));
    output[5u * row + 2u] = target_tile.model.z - (stats.model.x + log(stats.model.y));
    output[5u * row + 3u] = stats.base.w;
    output[5u * row + 4u] = stats.model.w;
}
