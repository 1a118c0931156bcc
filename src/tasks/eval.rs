//! `perplex eval`: every task's requests scored in one pass over the model (sorted by length and
//! batched by `score_windows`), then per-task metrics and group aggregates.

use super::metrics::{self, MetricValue, Stderr};
use super::{Instance, OutputType, Suite, Task};
use crate::error::Result;
use crate::forward::Batch;
use crate::score::{loglikelihood_resumable, LoglikOptions, Loglikelihood, Progress, Request};
use crate::Model;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Longest model input; None = the model's maximum positions.
    pub max_length: Option<usize>,
    pub batch: Batch,
    pub progress: Option<std::sync::Arc<dyn Progress>>,
}

/// One task's metrics.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub name: String,
    pub alias: String,
    pub num_fewshot: usize,
    /// Documents evaluated and in the split.
    pub docs: usize,
    pub original: usize,
    pub requests: usize,
    /// Requests whose context was cut on the left to fit the maximum length.
    pub truncated: usize,
    pub metrics: Vec<MetricValue>,
}

/// A group's size-weighted metrics over its tasks.
#[derive(Debug, Clone)]
pub struct GroupResult {
    pub name: String,
    pub alias: String,
    pub version: f64,
    /// Its direct members (tasks or groups).
    pub members: Vec<String>,
    /// The few-shot count, where all its tasks share one.
    pub num_fewshot: Option<usize>,
    pub docs: usize,
    pub metrics: Vec<MetricValue>,
}

/// One scored request, for `--samples`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub task: String,
    pub doc_id: usize,
    /// Which choice (or context, for partial scoring) of the document; 0 for cloze tasks.
    pub choice: usize,
    pub context: String,
    pub continuation: String,
    pub ll: f64,
    pub is_greedy: bool,
    pub tokens: usize,
}

#[derive(Debug, Clone)]
pub struct EvalResult {
    pub tasks: Vec<TaskResult>,
    pub groups: Vec<GroupResult>,
    pub samples: Vec<Sample>,
    pub requests: usize,
    pub truncated: usize,
    /// Continuation tokens scored.
    pub tokens: usize,
    pub max_length: usize,
    /// Windows actually run per pass.
    pub batch: usize,
    pub seconds: f64,
}

/// Builds every task's requests, scores them, and computes the metrics.
pub fn evaluate(model: &Model, suite: &Suite, options: &EvalOptions) -> Result<EvalResult> {
    evaluate_resumable(model, suite, options, None)
}

/// [`evaluate`] with an optional resume log (`--resume`): requests already in it are not scored
/// again, and each is appended to it as soon as its pass finishes; the metrics are bit-identical
/// to an uninterrupted run's (see `score::loglikelihood_resumable`).
pub fn evaluate_resumable(model: &Model, suite: &Suite, options: &EvalOptions, resume: Option<&std::path::Path>) -> Result<EvalResult> {
    // All documents are checked before the (slow) scoring starts.
    let instances: Vec<Vec<Instance>> = suite.tasks.iter().map(Task::instances).collect::<Result<_>>()?;
    let requests: Vec<Request> = instances.iter().flatten().flat_map(|i| i.requests.iter().cloned()).collect();
    let output = loglikelihood_resumable(
        model,
        &requests,
        &LoglikOptions { max_length: options.max_length, batch: options.batch, progress: options.progress.clone() },
        resume,
    )?;
    let mut answers = output.results.iter();
    let mut tasks = Vec::new();
    let mut samples = Vec::with_capacity(requests.len());
    for (task, instances) in suite.tasks.iter().zip(&instances) {
        let scored: Vec<Vec<Loglikelihood>> =
            instances.iter().map(|i| answers.by_ref().take(i.requests.len()).copied().collect()).collect();
        for (instance, results) in instances.iter().zip(&scored) {
            for (choice, (request, result)) in instance.requests.iter().zip(results).enumerate() {
                samples.push(Sample {
                    task: task.name.clone(),
                    doc_id: instance.doc_id,
                    choice,
                    context: request.context.clone(),
                    continuation: request.continuation.clone(),
                    ll: result.ll,
                    is_greedy: result.is_greedy,
                    tokens: result.tokens,
                });
            }
        }
        tasks.push(task_result(task, instances, &scored));
    }
    let groups = group_results(suite, &tasks);
    Ok(EvalResult {
        tasks,
        groups,
        samples,
        requests: requests.len(),
        truncated: output.truncated,
        tokens: output.results.iter().map(|r| r.tokens).sum(),
        max_length: output.max_length,
        batch: output.batch,
        seconds: output.seconds,
    })
}

fn task_result(task: &Task, instances: &[Instance], scored: &[Vec<Loglikelihood>]) -> TaskResult {
    let metric = |name: &'static str, (value, stderr): (f64, Stderr)| MetricValue {
        name,
        value,
        stderr,
        higher_is_better: metrics::higher_is_better(name),
    };
    let values = match task.formulation.output {
        OutputType::MultipleChoice => {
            let per_doc: Vec<[f64; 5]> = instances
                .iter()
                .zip(scored)
                .map(|(instance, results)| {
                    let lls: Vec<f64> = results.iter().map(|r| r.ll).collect();
                    metrics::choice_scores(
                        &lls,
                        &instance.choices,
                        instance.gold.expect("checked: multiple choice has a gold index"),
                    )
                })
                .collect();
            metrics::MULTIPLE_CHOICE
                .iter()
                .enumerate()
                .map(|(m, &name)| metric(name, metrics::mean(&per_doc.iter().map(|d| d[m]).collect::<Vec<_>>())))
                .collect()
        }
        OutputType::Loglikelihood => {
            let results: Vec<(f64, bool)> = scored.iter().map(|r| (r[0].ll, r[0].is_greedy)).collect();
            metrics::CLOZE.iter().zip(metrics::cloze(&results)).map(|(&name, value)| metric(name, value)).collect()
        }
    };
    TaskResult {
        name: task.name.clone(),
        alias: task.alias.clone(),
        num_fewshot: task.num_fewshot,
        docs: instances.len(),
        original: task.original,
        requests: scored.iter().map(Vec::len).sum(),
        truncated: scored.iter().flatten().filter(|r| r.truncated).count(),
        metrics: values,
    }
}

/// Groups aggregate over all their leaf tasks (as lm-evaluation-harness 0.4 does), for every
/// metric the leaves share.
fn group_results(suite: &Suite, tasks: &[TaskResult]) -> Vec<GroupResult> {
    let leaves = |name: &str| -> Vec<&TaskResult> {
        let mut out = Vec::new();
        let mut stack = vec![name.to_string()];
        while let Some(name) = stack.pop() {
            match suite.groups.iter().find(|g| g.name == name) {
                Some(group) => stack.extend(group.members.iter().rev().cloned()),
                None => out.extend(tasks.iter().filter(|t| t.name == name)),
            }
        }
        out
    };
    suite
        .groups
        .iter()
        .map(|group| {
            let members = leaves(&group.name);
            let first = members[0];
            let metrics = first
                .metrics
                .iter()
                .filter(|m| metrics::is_mean(m.name))
                .filter_map(|m| {
                    let parts: Vec<(f64, Stderr, usize)> = members
                        .iter()
                        .filter_map(|t| t.metrics.iter().find(|x| x.name == m.name).map(|x| (x.value, x.stderr, t.docs)))
                        .collect();
                    (parts.len() == members.len()).then(|| {
                        let (value, stderr) = metrics::pooled(&parts);
                        MetricValue { name: m.name, value, stderr, higher_is_better: m.higher_is_better }
                    })
                })
                .collect();
            let shots: std::collections::BTreeSet<usize> = members.iter().map(|t| t.num_fewshot).collect();
            GroupResult {
                name: group.name.clone(),
                alias: group.alias.clone(),
                version: group.version,
                members: group.members.clone(),
                num_fewshot: (shots.len() == 1).then(|| *shots.first().unwrap()),
                docs: members.iter().map(|t| t.docs).sum(),
                metrics,
            }
        })
        .collect()
}
