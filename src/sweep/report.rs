//! `perplex sweep report`: from a results file to, per task and metric, performance against loss
//! over all checkpoints and sizes (and against step, for contrast), its Spearman correlations,
//! the chance level and the emergence threshold ([`super::analysis`]); as a table and JSON.

use super::analysis::{self, Threshold};
use super::results::{sort_records, UnitRecord};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// What the loss axis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAxis {
    /// Mean negative log-likelihood per token, in nats (comparable across one tokenizer).
    Loss,
    /// Bits per UTF-8 byte (comparable across tokenizers).
    BitsPerByte,
}

impl LossAxis {
    pub fn label(self) -> &'static str {
        match self {
            LossAxis::Loss => "validation loss (nats/token)",
            LossAxis::BitsPerByte => "validation bits per byte",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub axis: LossAxis,
    /// Bootstrap resamples (and permutations) of the threshold estimate.
    pub resamples: usize,
    pub seed: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { axis: LossAxis::Loss, resamples: analysis::BOOTSTRAP, seed: analysis::SEED }
    }
}

/// One checkpoint's loss and task metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointRow {
    pub checkpoint: String,
    pub run: String,
    pub step: Option<u64>,
    pub parameters: u64,
    /// Pooled over the text measurements (None if one of them is missing).
    pub loss: Option<f64>,
    pub bits_per_byte: Option<f64>,
    /// task -> metric -> value.
    pub tasks: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One checkpoint in one metric's analysis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    pub checkpoint: String,
    pub run: String,
    pub step: Option<u64>,
    pub parameters: u64,
    /// The loss axis value.
    pub x: f64,
    pub value: f64,
    /// 0 at chance, 1 at the best value.
    pub normalised: Option<f64>,
}

/// One metric of one task against loss.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MetricAnalysis {
    pub task: String,
    pub metric: String,
    pub lower_is_better: bool,
    pub chance: Option<f64>,
    pub points: Vec<Point>,
    /// Spearman correlation of the metric with loss, and with step (checkpoints with a step).
    pub spearman_loss: Option<f64>,
    pub spearman_step: Option<f64>,
    /// Of the normalised metric against loss (metrics with a chance level).
    pub threshold: Option<Threshold>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub axis: LossAxis,
    pub axis_label: &'static str,
    /// The text measurements the loss is pooled over.
    pub text: Vec<String>,
    /// Distinct parameter counts, ascending.
    pub sizes: Vec<u64>,
    pub checkpoints: Vec<CheckpointRow>,
    pub metrics: Vec<MetricAnalysis>,
    pub notes: Vec<String>,
}

/// A parameter count for people: 238K, 2.2M, 135M, 1.7B.
pub fn size_label(parameters: u64) -> String {
    let p = parameters as f64;
    match p {
        p if p >= 1e9 => format!("{:.1}B", p / 1e9),
        p if p >= 1e8 => format!("{:.0}M", p / 1e6),
        p if p >= 1e6 => format!("{:.1}M", p / 1e6),
        p if p >= 1e3 => format!("{:.0}K", p / 1e3),
        p => format!("{p:.0}"),
    }
}

/// The most frequent value (ties: the first seen).
fn most_common(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(x, _)| *x == v) {
            Some(entry) => entry.1 += 1,
            None => counts.push((v, 1)),
        }
    }
    counts.iter().fold(None, |best: Option<(f64, usize)>, &(v, n)| match best {
        Some((_, m)) if m >= n => best,
        _ => Some((v, n)),
    }).map(|(v, _)| v)
}

/// Analyses the records of one or more sweeps.
pub fn analyse(records: &[UnitRecord], options: &ReportOptions) -> Result<Report> {
    let mut records = records.to_vec();
    sort_records(&mut records);
    let mut notes = Vec::new();
    let text: Vec<String> = records.iter().filter(|r| r.text.is_some()).map(|r| r.measurement.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let tasks: Vec<String> = records
        .iter()
        .filter(|r| r.text.is_none())
        .map(|r| r.measurement.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if text.is_empty() {
        return Err(Error::bad_input("the results hold no loss measurement (sweep with --data FILE to measure validation loss)"));
    }
    for key in text.iter().chain(&tasks) {
        let hashes: BTreeSet<&str> = records.iter().filter(|r| &r.measurement == key).map(|r| r.measurement_hash.as_str()).collect();
        if hashes.len() > 1 {
            notes.push(format!(
                "{key} was measured with {} different data files or settings across checkpoints; rerun the sweep to measure \
                 them all alike",
                hashes.len()
            ));
        }
    }

    // One row per checkpoint, in natural order.
    let mut rows: Vec<CheckpointRow> = Vec::new();
    for record in &records {
        if rows.last().is_none_or(|r| r.checkpoint != record.checkpoint) {
            rows.push(CheckpointRow {
                checkpoint: record.checkpoint.clone(),
                run: record.run.clone(),
                step: record.step,
                parameters: record.parameters,
                loss: None,
                bits_per_byte: None,
                tasks: BTreeMap::new(),
            });
        }
        let row = rows.last_mut().unwrap();
        if record.text.is_none() {
            let task = record.measurement.trim_start_matches("task:").to_string();
            row.tasks.insert(task, record.metrics.iter().map(|(k, m)| (k.clone(), m.value)).collect());
        }
    }
    for row in &mut rows {
        let counts: Vec<_> = records.iter().filter(|r| r.checkpoint == row.checkpoint).filter_map(|r| r.text).collect();
        if counts.len() == text.len() {
            let nll: f64 = counts.iter().map(|c| c.nll).sum();
            let tokens: usize = counts.iter().map(|c| c.tokens).sum();
            let bytes: usize = counts.iter().map(|c| c.bytes).sum();
            row.loss = Some(nll / tokens as f64);
            row.bits_per_byte = Some(nll / bytes as f64 / std::f64::consts::LN_2);
        } else {
            notes.push(format!("{}: has {} of the {} text measurements; left out of the loss axis", row.checkpoint, counts.len(), text.len()));
        }
    }
    let x_of = |row: &CheckpointRow| match options.axis {
        LossAxis::Loss => row.loss,
        LossAxis::BitsPerByte => row.bits_per_byte,
    };

    let mut metrics = Vec::new();
    for key in &tasks {
        let task = key.trim_start_matches("task:").to_string();
        let task_records: Vec<&UnitRecord> = records.iter().filter(|r| &r.measurement == key).collect();
        let names: BTreeSet<&String> = task_records.iter().flat_map(|r| r.metrics.keys()).collect();
        for name in names {
            let chance = most_common(task_records.iter().filter_map(|r| r.metrics.get(name)?.chance));
            let lower_is_better = task_records.iter().filter_map(|r| r.metrics.get(name)).any(|m| m.lower_is_better);
            let mut points = Vec::new();
            for row in &rows {
                let (Some(x), Some(&value)) = (x_of(row), row.tasks.get(&task).and_then(|m| m.get(name))) else { continue };
                points.push(Point {
                    checkpoint: row.checkpoint.clone(),
                    run: row.run.clone(),
                    step: row.step,
                    parameters: row.parameters,
                    x,
                    value,
                    normalised: chance.map(|c| analysis::normalised(value, c, lower_is_better)),
                });
            }
            let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
            let values: Vec<f64> = points.iter().map(|p| p.value).collect();
            let stepped: Vec<&Point> = points.iter().filter(|p| p.step.is_some()).collect();
            let spearman_step = analysis::spearman(
                &stepped.iter().map(|p| p.step.unwrap() as f64).collect::<Vec<_>>(),
                &stepped.iter().map(|p| p.value).collect::<Vec<_>>(),
            );
            let threshold = chance.and_then(|_| {
                let normalised: Vec<f64> = points.iter().map(|p| p.normalised.unwrap()).collect();
                analysis::emergence(&xs, &normalised, options.resamples, options.seed)
            });
            metrics.push(MetricAnalysis {
                task: task.clone(),
                metric: name.clone(),
                lower_is_better,
                chance,
                spearman_loss: analysis::spearman(&xs, &values),
                spearman_step,
                threshold,
                points,
            });
        }
    }
    let sizes: Vec<u64> = rows.iter().map(|r| r.parameters).collect::<BTreeSet<_>>().into_iter().collect();
    Ok(Report { axis: options.axis, axis_label: options.axis.label(), text, sizes, checkpoints: rows, metrics, notes })
}

fn number(value: Option<f64>, digits: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The human tables: one row per task and metric, then one per checkpoint.
pub fn table(report: &Report, main_metric: &str) -> String {
    let rows: Vec<Vec<String>> = report
        .metrics
        .iter()
        .map(|m| {
            let (lo, hi) = m.points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.value), hi.max(p.value)));
            let threshold = match &m.threshold {
                Some(Threshold { loss: Some(loss), ci, censored, .. }) => {
                    let ci = ci.map_or(String::new(), |[a, b]| format!(" [{a:.2}, {b:.2}]"));
                    format!("{}{loss:.2}{ci}", if *censored { ">= " } else { "" })
                }
                Some(_) => "none".into(),
                None => "-".into(),
            };
            vec![
                m.task.clone(),
                m.metric.clone(),
                number(m.chance, 3),
                if m.points.is_empty() { "-".into() } else { format!("{lo:.3}-{hi:.3}") },
                number(m.spearman_loss, 2),
                number(m.spearman_step, 2),
                threshold,
                number(m.threshold.as_ref().map(|t| t.p_value), 3),
            ]
        })
        .collect();
    let mut out = format!(
        "{} checkpoints, {} sizes ({}); loss pooled over {}\n\n",
        report.checkpoints.len(),
        report.sizes.len(),
        report.sizes.iter().map(|&s| size_label(s)).collect::<Vec<_>>().join(", "),
        report.text.iter().map(|t| t.trim_start_matches("text:")).collect::<Vec<_>>().join(", ")
    );
    let threshold_header = format!("emergence {} [95% CI]", if report.axis == LossAxis::Loss { "loss" } else { "bits/byte" });
    out += &crate::report::table(
        &["task", "metric", "chance", "range", "rho(loss)", "rho(step)", &threshold_header, "p"],
        &rows,
    );
    let task_names: Vec<&String> = report.checkpoints.iter().flat_map(|r| r.tasks.keys()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut header: Vec<String> = ["checkpoint", "params", "step", "loss", "bits/byte"].map(String::from).to_vec();
    // Generative tasks have no `acc`: their exact match (strict-match, else remove_whitespace, where
    // they have it) stands in; comparisons with a base model (sweep --base) show their KL divergence.
    let column_metric = |task: &str| -> String {
        let keys: BTreeSet<&String> = report.checkpoints.iter().filter_map(|r| r.tasks.get(task)).flat_map(|m| m.keys()).collect();
        if keys.iter().any(|k| *k == main_metric) {
            return main_metric.to_string();
        }
        let exact: Vec<&&String> = keys.iter().filter(|k| k.starts_with("exact_match")).collect();
        let preferred = [",strict-match", ",remove_whitespace"].iter().find_map(|f| exact.iter().find(|k| k.ends_with(f)));
        match preferred.or(exact.first()) {
            Some(k) => k.to_string(),
            None if keys.iter().any(|k| *k == "kld") => "kld".to_string(),
            None => main_metric.to_string(),
        }
    };
    let columns: Vec<String> = task_names.iter().map(|t| column_metric(t)).collect();
    header.extend(task_names.iter().zip(&columns).map(|(t, m)| format!("{t} {m}")));
    let rows: Vec<Vec<String>> = report
        .checkpoints
        .iter()
        .map(|r| {
            let mut row = vec![
                r.checkpoint.clone(),
                size_label(r.parameters),
                r.step.map_or("-".into(), |s| s.to_string()),
                number(r.loss, 4),
                number(r.bits_per_byte, 4),
            ];
            row.extend(task_names.iter().zip(&columns).map(|(t, c)| number(r.tasks.get(*t).and_then(|m| m.get(c)).copied(), 3)));
            row
        })
        .collect();
    out.push('\n');
    out += &crate::report::table(&header.iter().map(String::as_str).collect::<Vec<_>>(), &rows);
    for note in &report.notes {
        out += &format!("note: {note}\n");
    }
    out
}
