//! `perplex eval`: every task's requests scored in one pass over the model (sorted by length and
//! batched by `score_windows`), then per-task metrics and group aggregates.

use super::generative::apply_filters;
use super::metrics::{self, MetricValue, Stderr};
use super::{Instance, OutputType, Suite, Task};
use crate::error::{Error, Result};
use crate::generate::{GenOptions, GenRequest, Generation, Stop};
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

/// One generative document, for `--samples`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenSample {
    pub task: String,
    pub doc_id: usize,
    /// The prompt the model continued.
    pub prompt: String,
    pub until: Vec<String>,
    pub max_gen_toks: usize,
    /// The generated text, cut before the first `until` string.
    pub generation: String,
    /// Tokens generated.
    pub tokens: usize,
    pub stop: Stop,
    /// The prompt lost tokens on the left.
    pub truncated: bool,
    /// The right answer(s).
    pub target: Vec<String>,
    /// Per filter pipeline: the filtered answer and its exact match.
    pub filters: Vec<FilteredAnswer>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FilteredAnswer {
    pub filter: &'static str,
    pub answer: String,
    pub exact_match: f64,
}

#[derive(Debug, Clone)]
pub struct EvalResult {
    pub tasks: Vec<TaskResult>,
    pub groups: Vec<GroupResult>,
    pub samples: Vec<Sample>,
    /// Generative tasks' documents.
    pub generations: Vec<GenSample>,
    /// Log-likelihood and generation requests.
    pub requests: usize,
    pub truncated: usize,
    /// Continuation tokens scored, and tokens generated.
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
/// to an uninterrupted run's (see `score::loglikelihood_resumable`). Generated answers are kept in
/// `<resume>.gen` the same way (see `gen_resume`).
pub fn evaluate_resumable(model: &Model, suite: &Suite, options: &EvalOptions, resume: Option<&std::path::Path>) -> Result<EvalResult> {
    // All documents are checked before the (slow) scoring starts.
    let instances: Vec<Vec<Instance>> = suite.tasks.iter().map(Task::instances).collect::<Result<_>>()?;
    let requests: Vec<Request> = instances.iter().flatten().flat_map(|i| i.requests.iter().cloned()).collect();
    let gen_requests: Vec<GenRequest> =
        instances.iter().flatten().filter_map(|i| i.generation.as_ref().map(|g| g.request.clone())).collect();
    let mut max_length = 0;
    let mut batch = 0;
    let mut seconds = 0.0;
    let (scores, truncated_scored) = if requests.is_empty() {
        (Vec::new(), 0)
    } else {
        let output = loglikelihood_resumable(
            model,
            &requests,
            &LoglikOptions { max_length: options.max_length, batch: options.batch, progress: options.progress.clone() },
            resume,
        )?;
        (max_length, batch, seconds) = (output.max_length, output.batch, output.seconds);
        (output.results, output.truncated)
    };
    // Generated answers are kept in a log of their own beside the resume log (see gen_resume).
    let generated = if gen_requests.is_empty() {
        Vec::new()
    } else {
        let output = super::gen_resume::generate_resumable(
            model,
            &gen_requests,
            &GenOptions { max_length: options.max_length, batch: options.batch, progress: options.progress.clone() },
            resume,
        )?;
        max_length = max_length.max(output.max_length);
        batch = batch.max(output.slots);
        seconds += output.seconds;
        output.results
    };
    let mut answers = scores.iter();
    let mut generations_left = generated.iter();
    let mut tasks = Vec::new();
    let mut samples = Vec::with_capacity(requests.len());
    let mut gen_samples = Vec::with_capacity(gen_requests.len());
    for (task, instances) in suite.tasks.iter().zip(&instances) {
        if task.formulation.output == OutputType::GenerateUntil {
            let answers: Vec<&Generation> = generations_left.by_ref().take(instances.len()).collect();
            let (result, task_samples) = generative_result(task, instances, &answers)?;
            tasks.push(result);
            gen_samples.extend(task_samples);
            continue;
        }
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
        generations: gen_samples,
        requests: requests.len() + gen_requests.len(),
        truncated: truncated_scored + generated.iter().filter(|g| g.truncated).count(),
        tokens: scores.iter().map(|r| r.tokens).sum::<usize>() + generated.iter().map(|g| g.tokens.len()).sum::<usize>(),
        max_length,
        batch,
        seconds,
    })
}

/// A generative task's `exact_match` per filter pipeline (the harness's `exact_match,<filter>`),
/// and its documents for `--samples`.
fn generative_result(task: &Task, instances: &[Instance], answers: &[&Generation]) -> Result<(TaskResult, Vec<GenSample>)> {
    let config = task.formulation.generation.as_ref().expect("a generative task has a generation config");
    // `gen` reports its regex filter only when some document has a regex.
    let any_regex = instances.iter().any(|i| i.generation.as_ref().is_some_and(|g| g.regex.is_some()));
    let pipelines: Vec<&super::FilterPipeline> =
        config.filters.iter().filter(|p| any_regex || !p.steps.contains(&super::FilterStep::DocRegex)).collect();
    let mut per_filter: Vec<Vec<f64>> = vec![Vec::with_capacity(instances.len()); pipelines.len()];
    let mut samples = Vec::with_capacity(instances.len());
    for (instance, answer) in instances.iter().zip(answers) {
        let doc = instance.generation.as_ref().expect("a generative document has a request");
        let mut filters = Vec::with_capacity(pipelines.len());
        for (pipeline, scores) in pipelines.iter().zip(&mut per_filter) {
            let fail = |e: String| Error::bad_input(format!("{}: filter {}: {e}", task.name, pipeline.name));
            let filtered = apply_filters(pipeline.steps, &answer.text, doc.regex.as_ref()).map_err(fail)?;
            let exact_match = config.metric.score(&filtered, &doc.references).map_err(fail)?;
            scores.push(exact_match);
            filters.push(FilteredAnswer { filter: pipeline.name, answer: filtered, exact_match });
        }
        samples.push(GenSample {
            task: task.name.clone(),
            doc_id: instance.doc_id,
            prompt: doc.request.context.clone(),
            until: doc.request.until.clone(),
            max_gen_toks: doc.request.max_gen_toks,
            generation: answer.text.clone(),
            tokens: answer.tokens.len(),
            stop: answer.stop,
            truncated: answer.truncated,
            target: doc.references.clone(),
            filters,
        });
    }
    let metrics = pipelines
        .iter()
        .zip(&per_filter)
        .map(|(pipeline, scores)| {
            let (value, stderr) = metrics::mean(scores);
            MetricValue { name: "exact_match", filter: pipeline.name, value, stderr, higher_is_better: true }
        })
        .collect();
    let result = TaskResult {
        name: task.name.clone(),
        alias: task.alias.clone(),
        num_fewshot: task.num_fewshot,
        docs: instances.len(),
        original: task.original,
        requests: instances.len(),
        truncated: answers.iter().filter(|a| a.truncated).count(),
        metrics,
    };
    Ok((result, samples))
}

fn task_result(task: &Task, instances: &[Instance], scored: &[Vec<Loglikelihood>]) -> TaskResult {
    let metric = |name: &'static str, (value, stderr): (f64, Stderr)| MetricValue {
        name,
        filter: "none",
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
        OutputType::GenerateUntil => unreachable!("generative tasks are scored by generative_result"),
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
                        .filter_map(|t| {
                            t.metrics.iter().find(|x| x.name == m.name && x.filter == m.filter).map(|x| (x.value, x.stderr, t.docs))
                        })
                        .collect();
                    (parts.len() == members.len()).then(|| {
                        let (value, stderr) = metrics::pooled(&parts);
                        MetricValue { name: m.name, filter: m.filter, value, stderr, higher_is_better: m.higher_is_better }
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
