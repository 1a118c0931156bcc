//! Statistics of performance against loss: normalised performance, Spearman correlation, and the
//! emergence threshold with its bootstrap confidence interval and a permutation p-value.
//!
//! **Normalised performance** is 0 at chance and 1 at the best value:
//! `(perf - chance) / (best - chance)`, with best = 1 (accuracy, probability of the correct
//! choice) or 0 (Brier score, where lower is better). For accuracy this is
//! `(acc - chance) / (1 - chance)`.
//!
//! **Emergence threshold** (estimator): a hinge is fitted to normalised performance y against
//! loss x over all checkpoints of all sizes,
//!
//! ```text
//!     y = slope * max(0, threshold - x),   slope >= 0
//! ```
//!
//! flat at chance (0) for losses above the threshold and rising linearly below it. For each of
//! [`GRID`] candidate thresholds evenly spaced from the lowest to the highest loss, the slope is the
//! least-squares one (clamped at 0); the threshold with the smallest sum of squared residuals wins.
//! A threshold at the highest loss means performance is already above chance at every checkpoint
//! (the threshold is censored: it lies at or above that loss). The 95% confidence interval is the
//! 2.5th to 97.5th percentile of the thresholds fitted to [`BOOTSTRAP`] resamples of the
//! checkpoints (drawn with replacement, seeded, so the interval is reproducible); resamples whose
//! fit is flat (no departure from chance) do not contribute, and their share is reported. The
//! p-value asks whether performance depends on loss at all: the share of [`BOOTSTRAP`] random
//! permutations of the performances over the checkpoints whose hinge explains at least as much of
//! the squared deviation from chance as the real data's. A threshold is reported only where that
//! p-value is below [`ALPHA`]; otherwise performance is not shown to depart from chance (the
//! fitted value is still given, as `fitted`).

/// Candidate thresholds per fit.
pub const GRID: usize = 1000;
/// Bootstrap resamples and permutations.
pub const BOOTSTRAP: usize = 1000;
/// The default seed of the resampling.
pub const SEED: u64 = 0x5eed_2024;
/// Significance level of the permutation test below which a threshold is reported.
pub const ALPHA: f64 = 0.05;

/// `(perf - chance) / (best - chance)` with best = 1, or 0 where lower is better.
pub fn normalised(value: f64, chance: f64, lower_is_better: bool) -> f64 {
    let best = if lower_is_better { 0.0 } else { 1.0 };
    (value - chance) / (best - chance)
}

/// SplitMix64: a small, fast generator with a fixed, documented sequence for a given seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0; the modulo bias is below 2^-40 for the sizes used here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal deviate (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Ranks from 1, ties sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman's rank correlation (Pearson's on ranks, ties averaged); None below 3 points or when
/// either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    pearson(&ranks(x), &ranks(y))
}

/// A fitted hinge `y = slope * max(0, threshold - x)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hinge {
    pub threshold: f64,
    pub slope: f64,
    /// Sum of squared residuals.
    pub sse: f64,
    /// Sum of squared y: the residual of the flat fit at chance.
    pub sse_flat: f64,
}

impl Hinge {
    /// Whether performance departs from chance anywhere in the data's range.
    pub fn departs(&self) -> bool {
        self.slope > 0.0 && self.sse < self.sse_flat
    }

    /// Share of the squared deviation from chance the hinge explains.
    pub fn explained(&self) -> f64 {
        if self.sse_flat > 0.0 {
            1.0 - self.sse / self.sse_flat
        } else {
            0.0
        }
    }
}

/// The least-squares hinge (see the module documentation); None without two distinct losses.
pub fn fit_hinge(x: &[f64], y: &[f64]) -> Option<Hinge> {
    let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let spread = hi - lo;
    if x.len() < 2 || !spread.is_finite() || spread <= 0.0 {
        return None;
    }
    let sse_flat: f64 = y.iter().map(|v| v * v).sum();
    let mut best = Hinge { threshold: lo, slope: 0.0, sse: sse_flat, sse_flat };
    for g in 1..GRID {
        let threshold = lo + (hi - lo) * g as f64 / (GRID - 1) as f64;
        let (mut suu, mut suy) = (0.0, 0.0);
        for (&xi, &yi) in x.iter().zip(y) {
            let u = (threshold - xi).max(0.0);
            suu += u * u;
            suy += u * yi;
        }
        let slope = if suu > 0.0 { (suy / suu).max(0.0) } else { 0.0 };
        let sse = sse_flat - 2.0 * slope * suy + slope * slope * suu;
        if sse < best.sse {
            best = Hinge { threshold, slope, sse, sse_flat };
        }
    }
    Some(best)
}

/// The emergence threshold of one metric.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Threshold {
    /// The loss below which performance departs from chance (None: not shown to, p >= [`ALPHA`]).
    pub loss: Option<f64>,
    /// The hinge's threshold, significant or not (None: the best fit is flat at chance).
    pub fitted: Option<f64>,
    /// Normalised performance gained per unit of loss below the threshold.
    pub slope: f64,
    /// 95% bootstrap interval of the threshold.
    pub ci: Option<[f64; 2]>,
    /// Share of bootstrap resamples whose fit departs from chance.
    pub support: f64,
    /// Share of the squared deviation from chance the hinge explains.
    pub explained: f64,
    /// Permutation p-value of "performance does not depend on loss".
    pub p_value: f64,
    /// The threshold is the highest loss measured: performance is above chance everywhere.
    pub censored: bool,
    pub points: usize,
    pub resamples: usize,
    pub seed: u64,
}

/// Percentile (0..=100) of sorted values, interpolated linearly (numpy's default).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Fits the hinge to (loss, normalised performance) and estimates its uncertainty with
/// `resamples` bootstrap resamples and as many permutations, from `seed`.
pub fn emergence(x: &[f64], y: &[f64], resamples: usize, seed: u64) -> Option<Threshold> {
    let fit = fit_hinge(x, y)?;
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut rng = SplitMix64::new(seed);
    let n = x.len();
    let mut thresholds = Vec::with_capacity(resamples);
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..resamples {
        for j in 0..n {
            let i = rng.below(n);
            bx[j] = x[i];
            by[j] = y[i];
        }
        if let Some(h) = fit_hinge(&bx, &by).filter(Hinge::departs) {
            thresholds.push(h.threshold);
        }
    }
    thresholds.sort_by(f64::total_cmp);
    let mut as_extreme = 0;
    let mut permuted = y.to_vec();
    for _ in 0..resamples {
        for i in (1..n).rev() {
            permuted.swap(i, rng.below(i + 1));
        }
        if fit_hinge(x, &permuted).is_some_and(|h| h.explained() >= fit.explained()) {
            as_extreme += 1;
        }
    }
    let departs = fit.departs();
    let p_value = (1 + as_extreme) as f64 / (1 + resamples) as f64;
    Some(Threshold {
        loss: (departs && p_value < ALPHA).then_some(fit.threshold),
        fitted: departs.then_some(fit.threshold),
        slope: fit.slope,
        ci: (departs && !thresholds.is_empty()).then(|| [percentile(&thresholds, 2.5), percentile(&thresholds, 97.5)]),
        support: thresholds.len() as f64 / resamples.max(1) as f64,
        explained: fit.explained(),
        p_value,
        censored: departs && fit.threshold >= hi,
        points: n,
        resamples,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_with_ties() {
        // scipy.stats.spearmanr([1, 2, 2, 3, 5], [5, 6, 7, 8, 7]).statistic = 0.7631578947368421
        let r = spearman(&[1.0, 2.0, 2.0, 3.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]).unwrap();
        assert!((r - 0.7631578947368421).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]), None);
    }

    #[test]
    fn normalisation_is_zero_at_chance_and_one_at_best() {
        assert_eq!(normalised(0.25, 0.25, false), 0.0);
        assert_eq!(normalised(1.0, 0.25, false), 1.0);
        assert_eq!(normalised(0.0, 0.75, true), 1.0);
        assert_eq!(normalised(0.75, 0.75, true), 0.0);
    }

    #[test]
    fn exact_hinge_is_recovered() {
        let x: Vec<f64> = (0..41).map(|i| 2.0 + 0.075 * i as f64).collect();
        let y: Vec<f64> = x.iter().map(|&v| 0.5 * (3.5 - v).max(0.0)).collect();
        let h = fit_hinge(&x, &y).unwrap();
        assert!((h.threshold - 3.5).abs() < 0.005 && (h.slope - 0.5).abs() < 0.01, "{h:?}");
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], 2.5) = 1.075
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 2.5) - 1.075).abs() < 1e-12);
    }
}
