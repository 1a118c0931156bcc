// The per-tile summaries of perplex compare (compare_head.wgsl, compare_combine.wgsl): each
// model's loss summary (loss_stats.wgsl, prepended) and the cross term U of the KL divergence,
// relative to both models' maxima (see compare_head.wgsl). Three vec4s per row and tile in
// `partials`: base, model, (U, V, 0, 0).

struct CompareStats {
    base: vec4<f32>,
    model: vec4<f32>,
    // U = sum of w (d_b - d_m) and V = sum of (exp(d_m) - w), where d_b = lb - max_b,
    // d_m = lm - max_m and w = exp(d_b): KL = U / S_b + log1p(V / S_b). V is S_m - S_b computed
    // term by term, so a model close to the base loses no precision to the difference of two
    // nearly equal sums (nor to the device's exp error, which the two share).
    cross: f32,
    spread: f32,
}

const EMPTY_COMPARE: CompareStats = CompareStats(EMPTY_STATS, EMPTY_STATS, 0.0, 0.0);

// exp(x) - exp(y) for x, y <= 0, accurate when x and y are close (a Taylor polynomial of expm1
// below 1e-2, where its truncation error is under 1e-14 relative).
fn exp_difference(x: f32, y: f32) -> f32 {
    let d = x - y;
    if (abs(d) < 1e-2) {
        return exp(y) * (d * (1.0 + d * (0.5 + d * (1.0 / 6.0 + d * (1.0 / 24.0 + d / 120.0)))));
    }
    return exp(x) - exp(y);
}

// log(1 + x), accurate for small x (WGSL has no log1p).
fn log1p_(x: f32) -> f32 {
    if (abs(x) < 1e-2) {
        return x * (1.0 - x * (0.5 - x * (1.0 / 3.0 - x * (0.25 - x / 5.0))));
    }
    return log(1.0 + x);
}

// Merging moves each side's U and V to the merged maxima M_b, M_m. U's weights scale by
// exp(max_b - M_b) and its values shift by (max_b - M_b) - (max_m - M_m); V's model terms scale
// by exp(max_m - M_m), its base terms by exp(max_b - M_b). An empty side has sums and U, V of 0,
// so it merges away exactly.
fn combine_compare(a: CompareStats, b: CompareStats) -> CompareStats {
    let base = combine_stats(a.base, b.base);
    let model = combine_stats(a.model, b.model);
    return CompareStats(base, model, moved_cross(a, base, model) + moved_cross(b, base, model), moved_spread(a, base, model) + moved_spread(b, base, model));
}

fn moved_cross(s: CompareStats, base: vec4<f32>, model: vec4<f32>) -> f32 {
    let shift = (s.base.x - base.x) - (s.model.x - model.x);
    return exp(s.base.x - base.x) * (s.cross + s.base.y * shift);
}

fn moved_spread(s: CompareStats, base: vec4<f32>, model: vec4<f32>) -> f32 {
    return exp(s.model.x - model.x) * s.spread + s.base.y * exp_difference(s.model.x - model.x, s.base.x - base.x);
}

fn store_compare(index: u32, stats: CompareStats) {
    partials[3u * index] = stats.base;
    partials[3u * index + 1u] = stats.model;
    partials[3u * index + 2u] = vec4<f32>(stats.cross, stats.spread, 0.0, 0.0);
}

fn load_compare(index: u32) -> CompareStats {
    let extra = partials[3u * index + 2u];
    return CompareStats(partials[3u * index], partials[3u * index + 1u], extra.x, extra.y);
}
