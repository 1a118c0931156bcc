//! Metrics as lm-evaluation-harness computes them (`ConfigurableTask.process_results`,
//! `lm_eval.api.metrics`), so values and standard errors can be compared with its results files.
//!
//! Multiple choice, per document: `acc` = argmax of the log-likelihoods is gold; `acc_norm` =
//! argmax of ll / characters of the choice; `acc_bytes` = argmax of ll / UTF-8 bytes of the choice;
//! `prob_correct` = softmax of the log-likelihoods at gold; `brier_score` = sum over choices of
//! (softmax - one-hot(gold))^2. Cloze (loglikelihood) tasks: `acc` = the target is the greedy
//! continuation, `perplexity` = exp(-mean ll). Task values are means over documents with the sample
//! standard error of the mean; groups are size-weighted means with the pooled standard error.

/// A metric's value over a task or group.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MetricValue {
    pub name: &'static str,
    /// The filter pipeline of a generative task's metric (`strict-match`); "none" otherwise, as
    /// the harness keys its results (`exact_match,strict-match`, `acc,none`).
    pub filter: &'static str,
    pub value: f64,
    pub stderr: Stderr,
    pub higher_is_better: bool,
}

/// A standard error, or why there is none (the harness writes "N/A").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Stderr {
    Value(f64),
    /// Fewer than two documents.
    NotAvailable,
}

impl Stderr {
    pub fn value(self) -> Option<f64> {
        match self {
            Stderr::Value(v) => Some(v),
            Stderr::NotAvailable => None,
        }
    }
}

/// The multiple-choice metrics, in the order [`choice_scores`] returns them.
pub const MULTIPLE_CHOICE: [&str; 5] = ["acc", "acc_norm", "acc_bytes", "prob_correct", "brier_score"];
/// The cloze metrics, in the order [`cloze`] returns them.
pub const CLOZE: [&str; 2] = ["perplexity", "acc"];

impl MetricValue {
    /// The name with its filter where it has one (`exact_match,strict-match`): how tables and
    /// sweeps tell a generative task's metrics apart.
    pub fn key(&self) -> String {
        if self.filter == "none" {
            self.name.to_string()
        } else {
            format!("{},{}", self.name, self.filter)
        }
    }
}

pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "brier_score" | "perplexity")
}

/// Whether a task's value is a mean over documents (everything but perplexity), which is what
/// groups can aggregate.
pub fn is_mean(metric: &str) -> bool {
    metric != "perplexity"
}

/// numpy's `argmax`: the first maximum, where a NaN counts as the maximum.
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.enumerate() {
        match best {
            Some((_, b)) if b.is_nan() => {}
            Some((_, b)) if !(v > b || v.is_nan()) => {}
            _ => best = Some((i, v)),
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// The harness's `utils.softmax`: exp(x - max) / sum.
pub fn softmax(values: &[f64]) -> Vec<f64> {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = values.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// One document's multiple-choice metrics (see [`MULTIPLE_CHOICE`]). `choices` are the texts whose
/// lengths normalise: the choices without the target delimiter (for partial scoring, the contexts).
pub fn choice_scores(lls: &[f64], choices: &[String], gold: usize) -> [f64; 5] {
    let hit = |pred: usize| (pred == gold) as u8 as f64;
    let acc = hit(argmax(lls.iter().copied()));
    let acc_norm = hit(argmax(lls.iter().zip(choices).map(|(ll, c)| ll / c.chars().count() as f64)));
    let acc_bytes = hit(argmax(lls.iter().zip(choices).map(|(ll, c)| ll / c.len() as f64)));
    let probs = softmax(lls);
    let brier = probs.iter().enumerate().map(|(i, p)| (p - (i == gold) as u8 as f64).powi(2)).sum();
    [acc, acc_norm, acc_bytes, probs[gold], brier]
}

/// Mean and its standard error (`mean_stderr`: sample standard deviation / sqrt(n)).
pub fn mean(values: &[f64]) -> (f64, Stderr) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, Stderr::NotAvailable);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Stderr::Value((variance / n).sqrt()))
}

/// Cloze metrics over documents' (ll, is_greedy) (see [`CLOZE`]). The harness estimates the
/// perplexity's standard error by bootstrap; this is the delta-method value it converges to,
/// perplexity x stderr(mean ll).
pub fn cloze(results: &[(f64, bool)]) -> [(f64, Stderr); 2] {
    let lls: Vec<f64> = results.iter().map(|r| r.0).collect();
    let greedy: Vec<f64> = results.iter().map(|r| r.1 as u8 as f64).collect();
    let (mean_ll, ll_stderr) = mean(&lls);
    let perplexity = (-mean_ll).exp();
    let stderr = match ll_stderr {
        Stderr::Value(s) => Stderr::Value(perplexity * s),
        Stderr::NotAvailable => Stderr::NotAvailable,
    };
    [(perplexity, stderr), mean(&greedy)]
}

/// A group's value from its tasks' (value, stderr, documents): the size-weighted mean and the
/// harness's `pooled_sample_stderr` (N/A if any task's is).
pub fn pooled(parts: &[(f64, Stderr, usize)]) -> (f64, Stderr) {
    let total: usize = parts.iter().map(|p| p.2).sum();
    let value = parts.iter().map(|(v, _, n)| v * *n as f64).sum::<f64>() / total as f64;
    let mut variance = 0.0;
    for (_, stderr, n) in parts {
        match stderr {
            Stderr::Value(s) => variance += (*n as f64 - 1.0) * s * s * *n as f64,
            Stderr::NotAvailable => return (value, Stderr::NotAvailable),
        }
    }
    let variance = variance / (total - parts.len()) as f64;
    (value, Stderr::Value((variance / total as f64).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_like_numpy() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), 1);
        assert_eq!(argmax([1.0, f64::NAN, 5.0].into_iter()), 1);
        assert_eq!(argmax([f64::NEG_INFINITY, -1.0].into_iter()), 1);
    }

    #[test]
    fn choice_metrics() {
        let choices = vec!["ab".to_string(), "abcdef".to_string(), "é".to_string()];
        let lls = [-2.0, -3.0, -2.5];
        let [acc, acc_norm, acc_bytes, prob, brier] = choice_scores(&lls, &choices, 1);
        assert_eq!(acc, 0.0); // -2.0 is the largest
        assert_eq!(acc_norm, 1.0); // -0.5 per character beats -1.0 and -2.5
        assert_eq!(acc_bytes, 1.0); // "é" is 2 bytes: -1.25
        let z: f64 = lls.iter().map(|l| l.exp()).sum();
        assert!((prob - (-3.0f64).exp() / z).abs() < 1e-15);
        let p: Vec<f64> = lls.iter().map(|l| l.exp() / z).collect();
        assert!((brier - (p[0].powi(2) + (p[1] - 1.0).powi(2) + p[2].powi(2))).abs() < 1e-15);
    }

    #[test]
    fn standard_errors() {
        // Python: statistics.stdev([1, 0, 1, 1]) / 2 = 0.25
        let (m, s) = mean(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(m, 0.75);
        assert!((s.value().unwrap() - 0.25).abs() < 1e-15);
        assert_eq!(mean(&[1.0]).1, Stderr::NotAvailable);
        // pooled_sample_stderr([0.1, 0.2], [10, 30]) = sqrt((9*0.01*10 + 29*0.04*30) / 38 / 40)
        let (v, s) = pooled(&[(0.5, Stderr::Value(0.1), 10), (0.7, Stderr::Value(0.2), 30)]);
        assert!((v - 0.65).abs() < 1e-15);
        let want = ((9.0 * 0.01 * 10.0 + 29.0 * 0.04 * 30.0) / 38.0 / 40.0f64).sqrt();
        assert!((s.value().unwrap() - want).abs() < 1e-15);
    }
}
