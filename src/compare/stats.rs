//! The statistics of llama.cpp's `llama-perplexity --kl-divergence` (tools/perplexity), with its
//! definitions: means with the standard error of the mean (zero at ten values or fewer), the
//! delta method for the perplexities and their ratio, the log-perplexities' covariance for the
//! ratio and difference, percentiles by linear interpolation between sorted values, and the
//! binomial standard error of the same-top rate. Δp is p_model(token) − p_base(token).

use super::PositionScore;

/// A value with its uncertainty (one standard error), where llama.cpp prints one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub value: f64,
    pub uncertainty: f64,
}

/// Sorted values at the fractions llama.cpp prints, with the extremes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Distribution {
    pub max: f64,
    /// (fraction, value), the fraction as a percentage: 99.9, 99, ..., 0.1.
    pub percentiles: Vec<(f64, f64)>,
    pub median: f64,
    pub min: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CompareStats {
    /// Scored positions.
    pub count: usize,
    /// exp(mean nll) of the model and of the base.
    pub ppl_model: Estimate,
    pub ppl_base: Estimate,
    /// Correlation of the per-token log-probabilities of the two models.
    pub logprob_correlation: f64,
    /// mean ln(PPL(model)/PPL(base)), PPL(model)/PPL(base) and PPL(model) − PPL(base).
    pub ln_ppl_ratio: Estimate,
    pub ppl_ratio: Estimate,
    pub ppl_difference: Estimate,
    /// KL(base ‖ model), nats per position.
    pub kld_mean: Estimate,
    pub kld: Distribution,
    /// Δp = p_model − p_base of the actual next token.
    pub delta_p_mean: Estimate,
    pub delta_p_rms: Estimate,
    pub delta_p: Distribution,
    /// Share of positions where both models rank the same token first.
    pub same_top: Estimate,
}

/// The percentiles llama.cpp prints for the KL divergence.
pub const KLD_PERCENTILES: [f64; 9] = [99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1];

/// The percentiles llama.cpp prints for Δp (the quartiles as well).
pub const DELTA_P_PERCENTILES: [f64; 11] = [99.9, 99.0, 95.0, 90.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0, 0.1];

/// Mean and its standard error from a sum and a sum of squares, as llama.cpp's
/// `mean_and_uncertainty`: no uncertainty at ten values or fewer.
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> Estimate {
    if count == 0 {
        return Estimate { value: 0.0, uncertainty: 0.0 };
    }
    let n = count as f64;
    let mean = sum / n;
    let variance = sum2 / n - mean * mean;
    let uncertainty = if variance > 0.0 && count > 10 { (variance / (n - 1.0)).sqrt() } else { 0.0 };
    Estimate { value: mean, uncertainty }
}

/// The covariance of the two means, as llama.cpp's `covariance` (zero under ten values).
fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1.0)
}

/// The value at `percent` of sorted `values`, linearly interpolated between neighbours.
pub fn percentile(sorted: &[f64], percent: f64) -> f64 {
    let fraction = percent / 100.0;
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let at = fraction * (sorted.len() - 1) as f64;
    let low = at as usize;
    let weight = at - low as f64;
    (1.0 - weight) * sorted[low] + weight * sorted[(low + 1).min(sorted.len() - 1)]
}

impl Distribution {
    fn of(mut values: Vec<f64>, percents: &[f64]) -> Distribution {
        values.sort_by(f64::total_cmp);
        Distribution {
            max: values[values.len() - 1],
            percentiles: percents.iter().map(|&p| (p, percentile(&values, p))).collect(),
            median: percentile(&values, 50.0),
            min: values[0],
        }
    }
}

impl CompareStats {
    /// The statistics of a non-empty list of scored positions.
    pub fn of(tokens: &[PositionScore]) -> CompareStats {
        assert!(!tokens.is_empty());
        let count = tokens.len();
        let (mut nll, mut nll2, mut nll_base, mut nll_base2, mut nll_cross) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut kld, mut kld2, mut dp, mut dp2, mut dp4) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut same_top = 0usize;
        for t in tokens {
            let (a, b) = (-(t.logprob_model as f64), -(t.logprob_base as f64));
            nll += a;
            nll2 += a * a;
            nll_base += b;
            nll_base2 += b * b;
            nll_cross += a * b;
            let k = t.kld as f64;
            kld += k;
            kld2 += k * k;
            let d = t.p_model() - t.p_base();
            dp += d;
            dp2 += d * d;
            dp4 += d * d * d * d;
            same_top += t.same_top() as usize;
        }
        let log_ppl = mean_and_uncertainty(nll, nll2, count);
        let log_ppl_base = mean_and_uncertainty(nll_base, nll_base2, count);
        let cov = covariance(nll, nll_base, nll_cross, count);
        let ppl_model = Estimate { value: log_ppl.value.exp(), uncertainty: log_ppl.value.exp() * log_ppl.uncertainty };
        let ppl_base = Estimate { value: log_ppl_base.value.exp(), uncertainty: log_ppl_base.value.exp() * log_ppl_base.uncertainty };
        let ratio_uncertainty = (log_ppl.uncertainty.powi(2) + log_ppl_base.uncertainty.powi(2) - 2.0 * cov).max(0.0).sqrt();
        let ln_ppl_ratio = Estimate { value: log_ppl.value - log_ppl_base.value, uncertainty: ratio_uncertainty };
        let ppl_ratio = Estimate { value: ln_ppl_ratio.value.exp(), uncertainty: ln_ppl_ratio.value.exp() * ratio_uncertainty };
        let ppl_cov = ppl_model.value * ppl_base.value * cov;
        let ppl_difference = Estimate {
            value: ppl_model.value - ppl_base.value,
            uncertainty: (ppl_model.uncertainty.powi(2) + ppl_base.uncertainty.powi(2) - 2.0 * ppl_cov).max(0.0).sqrt(),
        };
        let mse = mean_and_uncertainty(dp2, dp4, count);
        let rms = mse.value.sqrt();
        let same = same_top as f64 / count as f64;
        CompareStats {
            count,
            ppl_model,
            ppl_base,
            logprob_correlation: cov / (log_ppl.uncertainty * log_ppl_base.uncertainty),
            ln_ppl_ratio,
            ppl_ratio,
            ppl_difference,
            kld_mean: mean_and_uncertainty(kld, kld2, count),
            kld: Distribution::of(tokens.iter().map(|t| t.kld as f64).collect(), &KLD_PERCENTILES),
            delta_p_mean: mean_and_uncertainty(dp, dp2, count),
            delta_p_rms: Estimate { value: rms, uncertainty: if rms > 0.0 { 0.5 / rms * mse.uncertainty } else { 0.0 } },
            delta_p: Distribution::of(tokens.iter().map(|t| t.p_model() - t.p_base()).collect(), &DELTA_P_PERCENTILES),
            same_top: Estimate {
                value: same,
                uncertainty: if count > 1 { (same * (1.0 - same) / (count - 1) as f64).sqrt() } else { 0.0 },
            },
        }
    }
}
