// The per-tile summaries of perplex compare (compare_head.wgsl, compare_combine.wgsl): each
// model's loss summary (loss_stats.wgsl, prepended) and the cross term U of the KL divergence,
// relative to both models' maxima (see compare_head.wgsl). Three vec4s per row and tile in
// `partials`: base, model, (U, 0, 0, 0).

struct CompareStats {
    base: vec4<f32>,
    model: vec4<f32>,
    cross: f32,
}

const EMPTY_COMPARE: CompareStats = CompareStats(EMPTY_STATS, EMPTY_STATS, 0.0);

// Merging moves each side's U to the merged maxima: every term's weight scales by
// exp(max_b - M_b) and its value shifts by (max_b - M_b) - (max_m - M_m). An empty side has a sum
// of 0 and U of 0, so it merges away exactly.
fn combine_compare(a: CompareStats, b: CompareStats) -> CompareStats {
    let base = combine_stats(a.base, b.base);
    let model = combine_stats(a.model, b.model);
    let shift_a = (a.base.x - base.x) - (a.model.x - model.x);
    let shift_b = (b.base.x - base.x) - (b.model.x - model.x);
    let cross = exp(a.base.x - base.x) * (a.cross + a.base.y * shift_a) + exp(b.base.x - base.x) * (b.cross + b.base.y * shift_b);
    return CompareStats(base, model, cross);
}

fn store_compare(index: u32, stats: CompareStats) {
    partials[3u * index] = stats.base;
    partials[3u * index + 1u] = stats.model;
    partials[3u * index + 2u] = vec4<f32>(stats.cross, 0.0, 0.0, 0.0);
}

fn load_compare(index: u32) -> CompareStats {
    return CompareStats(partials[3u * index], partials[3u * index + 1u], partials[3u * index + 2u].x);
}
