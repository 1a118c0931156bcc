//! `perplex sweep`: validation loss and task performance of many checkpoints (every step of
//! several model sizes), to relate pre-training loss to downstream performance and find where
//! an ability emerges.
//!
//! The work is split into units, one per (checkpoint, measurement): a measurement is the loss on
//! one text file, the metrics of one task, or (with a base model) `perplex compare`'s statistics
//! against the base on one text file. Each finished unit is appended to the results file
//! at once ([`results`]), with fingerprints of the checkpoint's files and of the measurement's
//! data and settings ([`fingerprint`]); a rerun skips every unit whose fingerprints still match,
//! so a killed sweep resumes where it stopped and a changed file is measured again alone.
//! A results file is written by one sweep at a time; a rerun takes over the lock a dead sweep
//! left behind ([`lock`]). `--shard K/N` runs a deterministic share of the checkpoints
//! ([`shard`]); `merge` combines the shards' files; `report` analyses them ([`report`],
//! [`analysis`], [`plot`]); `status` tells, unit by unit, what is left to do ([`status`]).

pub mod analysis;
pub mod checkpoints;
pub mod lock;
pub mod plot;
pub mod report;
pub mod results;
pub mod shard;
pub mod status;

pub use checkpoints::{discover, CheckpointRef};
pub use report::{analyse, Report, ReportOptions};
pub use results::{merge, read_all_units, read_results, read_units, Metric, ResultsFile, TextCounts, UnitFailure, UnitRecord, Units};
pub use shard::Shard;

use crate::compare::{self, CompareOptions, Pair};
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::{Gpu, Sums};
use crate::model::hub;
use crate::data::{self, Document};
use crate::score::{self, PplOptions, WindowMode};
use crate::tasks::{self, EvalOptions, OutputType, Suite, TaskSpec};
use crate::Model;
use crate::fingerprint::{self, Hasher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Scoring settings shared by every unit.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Window length for text and longest input for tasks; None = each model's default.
    pub ctx: Option<usize>,
    /// Windows per GPU pass (the scores do not depend on it).
    pub batch: crate::forward::Batch,
    /// Record field holding the text of data files (see [`data::read_documents`]).
    pub field: String,
    /// How the matrix kernels sum (`--sums`): it changes the numbers in their last digits, so it
    /// is part of every measurement's fingerprint, and the GPU the sweep opens must use it.
    pub sums: Sums,
}

impl SweepOptions {
    /// Adds the settings every measurement shares to its fingerprint (plain sums add nothing:
    /// [`Sums::recorded`]).
    fn fingerprint_settings(&self, hash: &mut Hasher) {
        hash.field(&self.ctx.map_or("default".into(), |c| c.to_string()));
        if let Some(sums) = self.sums.recorded() {
            hash.field(&format!("sums {sums}"));
        }
    }
}

/// A task as `--task` names it: `NAME=PATH` (a built-in task of `perplex eval`, or `mc` / `loglik`
/// for generic JSONL), or a `.jsonl` path alone for a generic multiple-choice file.
#[derive(Debug, Clone)]
pub struct TaskArg {
    /// The name results and plots use: the file stem for generic tasks, else the task name.
    pub label: String,
    pub spec: TaskSpec,
}

impl TaskArg {
    /// `num_fewshot` None = the task's own default (its yaml's `num_fewshot`).
    pub fn parse(text: &str, num_fewshot: Option<usize>, limit: Option<usize>, max_gen_toks: Option<usize>) -> Result<TaskArg> {
        let (name, data) = match text.split_once('=') {
            Some((name, path)) => (name.to_string(), PathBuf::from(path)),
            None if text.ends_with(".jsonl") => ("mc".to_string(), PathBuf::from(text)),
            None => {
                return Err(Error::bad_input(format!(
                    "--task {text}: expected NAME=PATH (e.g. hellaswag=DIR, mc=FILE.jsonl) or a multiple-choice .jsonl file"
                )))
            }
        };
        let label = if name == "mc" || name == "loglik" || name == "gen" {
            data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| name.clone())
        } else {
            name.clone()
        };
        let num_fewshot = num_fewshot.unwrap_or_else(|| tasks::default_fewshot(&name));
        Ok(TaskArg { label, spec: TaskSpec { name, data, fewshot_data: None, num_fewshot, limit, max_gen_toks } })
    }
}

enum Kind {
    Text(Vec<Document>),
    /// KL divergence and the rest of `perplex compare`'s statistics against the base model.
    Comparison { base: String, documents: Vec<Document> },
    Task { spec: TaskSpec, suite: Suite, chance: BTreeMap<String, f64> },
}

/// One measurement taken on every checkpoint.
pub struct Measurement {
    /// `text:<path>` or `task:<label>`: its name in results.
    pub key: String,
    /// Fingerprint of its data and settings.
    pub hash: String,
    kind: Kind,
}

impl Measurement {
    /// Loss and bits per byte on the documents of a data path (see [`data::read_documents`]).
    pub fn text(path: &Path, options: &SweepOptions) -> Result<Measurement> {
        let documents = data::read_documents(path, &options.field)?;
        let mut hash = Hasher::default();
        hash.field("text").field(&fingerprint::data_file(path)?).field(&options.field).field(WindowMode::Rolling.name());
        options.fingerprint_settings(&mut hash);
        Ok(Measurement { key: format!("text:{}", path.display()), hash: hash.hex(), kind: Kind::Text(documents) })
    }

    /// `perplex compare`'s statistics of each checkpoint against `base` (a path or hub id, whose
    /// files' fingerprint is `base_hash`) on the documents of `text`, the [`Measurement::text`]
    /// of `path`, over the same rolling windows: its documents and fingerprint are reused, not
    /// read again.
    fn comparison(text: &Measurement, path: &Path, base: &str, base_hash: &str) -> Measurement {
        let Kind::Text(documents) = &text.kind else { unreachable!("a comparison is made from a text measurement") };
        let mut hash = Hasher::default();
        hash.field("compare").field(base_hash).field(&text.hash);
        Measurement {
            key: format!("compare:{}", path.display()),
            hash: hash.hex(),
            kind: Kind::Comparison { base: base.to_string(), documents: documents.clone() },
        }
    }

    /// Whether the unit runs the checkpoint beside the base model (it opens both itself).
    fn compares(&self) -> bool {
        matches!(self.kind, Kind::Comparison { .. })
    }

    /// The statistics of a comparison unit: KL divergence, same top token and Δp with their
    /// standard errors, and both perplexities' ratio; with the checkpoint's parameter count.
    fn compare(&self, checkpoint: &CheckpointRef, gpu: Arc<Gpu>, options: &SweepOptions) -> Result<(BTreeMap<String, Metric>, usize)> {
        let Kind::Comparison { base, documents } = &self.kind else {
            unreachable!("compare() is called on comparison units only")
        };
        let pair = Pair::open_revision(base, &checkpoint.model, checkpoint.revision.as_deref(), None, gpu)?;
        let compare_options = CompareOptions { mode: WindowMode::Rolling, ctx: options.ctx, batch: options.batch, per_token: false, progress: None, resume: None };
        let stats = compare::compare(&pair, documents, &compare_options)?.stats;
        let metric = |estimate: compare::Estimate, lower_is_better: bool| Metric { value: estimate.value, stderr: Some(estimate.uncertainty), chance: None, lower_is_better };
        let metrics = [
            ("kld".to_string(), metric(stats.kld_mean, true)),
            ("same_top".to_string(), metric(stats.same_top, false)),
            ("delta_p_rms".to_string(), metric(stats.delta_p_rms, true)),
            ("ppl_ratio".to_string(), metric(stats.ppl_ratio, true)),
        ];
        Ok((metrics.into(), pair.model.spec.parameter_count()))
    }

    /// A task's metrics, with the chance level of each (from the number of choices).
    pub fn task(task: &TaskArg, options: &SweepOptions) -> Result<Measurement> {
        let spec = &task.spec;
        let suite = tasks::load(std::slice::from_ref(spec))?;
        let chance = chance_levels(&suite)?;
        let mut hash = Hasher::default();
        hash.field("task").field(&spec.name).field(&fingerprint::data_file(&spec.data)?);
        if let Some(path) = &spec.fewshot_data {
            hash.field(&fingerprint::data_file(path)?);
        }
        hash.field(&spec.num_fewshot.to_string()).field(&format!("{:?}", spec.limit));
        if suite.tasks.iter().any(|t| t.formulation.output == OutputType::GenerateUntil) {
            // Only generative tasks depend on it: other tasks' fingerprints stay as they were.
            hash.field(&format!("max_gen_toks {:?}", spec.max_gen_toks));
        }
        options.fingerprint_settings(&mut hash);
        Ok(Measurement { key: format!("task:{}", task.label), hash: hash.hex(), kind: Kind::Task { spec: spec.clone(), suite, chance } })
    }

    fn measure(&self, model: &Model, options: &SweepOptions) -> Result<(BTreeMap<String, Metric>, Option<TextCounts>)> {
        let metric = |value: f64| Metric { value, stderr: None, chance: None, lower_is_better: true };
        match &self.kind {
            Kind::Text(documents) => {
                let ppl = PplOptions { mode: WindowMode::Rolling, ctx: options.ctx, batch: options.batch, per_token: false, progress: None };
                let t = score::perplexity(model, documents, &ppl)?.total;
                let metrics = [
                    ("loss".to_string(), metric(t.nll / t.tokens as f64)),
                    ("bits_per_byte".to_string(), metric(t.bits_per_byte)),
                    ("token_perplexity".to_string(), metric(t.token_perplexity)),
                ];
                Ok((metrics.into(), Some(TextCounts { nll: t.nll, tokens: t.tokens, bytes: t.bytes, words: t.words })))
            }
            Kind::Comparison { .. } => unreachable!("comparison units open their own models (Measurement::compare)"),
            Kind::Task { spec, suite, chance } => {
                let eval = EvalOptions { max_length: options.ctx, batch: options.batch, progress: None };
                let result = tasks::evaluate(model, suite, &eval)?;
                let values = match result.groups.iter().find(|g| g.name == spec.name) {
                    Some(group) => &group.metrics,
                    None => &result.tasks[0].metrics,
                };
                let metrics = values
                    .iter()
                    .map(|m| {
                        let metric = Metric {
                            value: m.value,
                            stderr: m.stderr.value(),
                            chance: chance.get(&m.key()).copied(),
                            lower_is_better: !m.higher_is_better,
                        };
                        (m.key(), metric)
                    })
                    .collect();
                Ok((metrics, None))
            }
        }
    }
}

/// The expected metrics of guessing uniformly at random, over every document of the suite:
/// accuracy and probability of the correct choice 1/k, Brier score (k-1)/k for k choices;
/// greedy accuracy of a cloze task 0, exact match of a generated answer 0.
fn chance_levels(suite: &Suite) -> Result<BTreeMap<String, f64>> {
    let (mut pick, mut brier, mut docs, mut cloze) = (0.0, 0.0, 0usize, false);
    let mut generated = Vec::new();
    for task in &suite.tasks {
        match task.formulation.output {
            OutputType::MultipleChoice => {
                for instance in task.instances()? {
                    let k = instance.choices.len() as f64;
                    pick += 1.0 / k;
                    brier += (k - 1.0) / k;
                    docs += 1;
                }
            }
            OutputType::Loglikelihood => cloze = true,
            OutputType::GenerateUntil => {
                let config = task.formulation.generation.as_ref().expect("a generative task has a generation config");
                generated.extend(config.filters.iter().map(|f| format!("exact_match,{}", f.name)));
            }
        }
    }
    let mut chance = BTreeMap::new();
    for key in generated {
        chance.insert(key, 0.0);
    }
    if cloze {
        chance.insert("acc".to_string(), 0.0);
    } else if docs > 0 {
        for name in ["acc", "acc_norm", "acc_bytes", "prob_correct"] {
            chance.insert(name.to_string(), pick / docs as f64);
        }
        chance.insert("brier_score".to_string(), brier / docs as f64);
    }
    Ok(chance)
}

/// What happened to a unit, for progress output.
pub enum Event<'a> {
    /// Already in the results with matching fingerprints.
    Skipped { checkpoint: &'a str, measurement: &'a str },
    Finished(&'a UnitRecord),
    Failed { checkpoint: &'a str, measurement: &'a str, error: &'a Error },
}

/// A sweep's outcome.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Checkpoints in this shard, of all.
    pub checkpoints: usize,
    pub all_checkpoints: usize,
    pub skipped: usize,
    pub finished: usize,
    /// (checkpoint, measurement, error) of each unit that failed.
    pub failed: Vec<(String, String, String)>,
}

/// Where a checkpoint's files are: its path, or its snapshot in the hub cache.
fn checkpoint_path(checkpoint: &CheckpointRef) -> Result<PathBuf> {
    let path = PathBuf::from(&checkpoint.model);
    if path.exists() {
        return Ok(path);
    }
    hub::resolve_in(&hub::cache_dir(), &checkpoint.model, checkpoint.revision.as_deref())
}

/// The fingerprint of a checkpoint's files, wherever they are.
pub fn checkpoint_hash(checkpoint: &CheckpointRef) -> Result<String> {
    checkpoint_path(checkpoint).and_then(|path| fingerprint::checkpoint(&path))
}

/// Reports units of `checkpoint` that failed, and keeps them in the results for `sweep status`
/// (a rerun tries them again).
fn record_failures(
    checkpoint: &CheckpointRef,
    model_hash: Option<&str>,
    measurements: &[&Measurement],
    error: &Error,
    summary: &mut Summary,
    results: &mut ResultsFile,
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    for m in measurements {
        on_event(Event::Failed { checkpoint: &checkpoint.id, measurement: &m.key, error });
        summary.failed.push((checkpoint.id.clone(), m.key.clone(), error.to_string()));
        results.append_failure(UnitFailure {
            checkpoint: checkpoint.id.clone(),
            measurement: m.key.clone(),
            model_hash: model_hash.map(str::to_string),
            measurement_hash: m.hash.clone(),
            error: error.to_string(),
        })?;
    }
    Ok(())
}

/// Measures every unit of `shard` not yet in `results`, appending each as it finishes. The GPU
/// is opened (by `open_gpu`) only if some unit needs it. A checkpoint or unit that fails is
/// reported and skipped; the others go on.
pub fn run(
    checkpoints: &[CheckpointRef],
    measurements: &[Measurement],
    options: &SweepOptions,
    shard: Shard,
    results: &mut ResultsFile,
    open_gpu: &mut dyn FnMut() -> Result<Arc<Gpu>>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let mut summary = Summary { all_checkpoints: checkpoints.len(), ..Summary::default() };
    let mut gpu: Option<Arc<Gpu>> = None;
    for checkpoint in checkpoints.iter().enumerate().filter(|(i, _)| shard.takes(*i)).map(|(_, c)| c) {
        summary.checkpoints += 1;
        let model_hash = match checkpoint_hash(checkpoint) {
            Ok(hash) => hash,
            Err(error) => {
                record_failures(checkpoint, None, &measurements.iter().collect::<Vec<_>>(), &error, &mut summary, results, on_event)?;
                continue;
            }
        };
        let mut pending = Vec::new();
        for m in measurements {
            match results.get(&checkpoint.id, &m.key) {
                Some(record) if record.matches(&model_hash, &m.hash) => {
                    summary.skipped += 1;
                    on_event(Event::Skipped { checkpoint: &checkpoint.id, measurement: &m.key });
                }
                _ => pending.push(m),
            }
        }
        if pending.is_empty() {
            continue;
        }
        let gpu = match &gpu {
            Some(gpu) => gpu.clone(),
            None => {
                let opened = open_gpu()?;
                if opened.sums != options.sums {
                    return Err(Error::internal(format!(
                        "the sweep's fingerprints are of {} sums but its GPU sums {}",
                        options.sums.name(),
                        opened.sums.name()
                    )));
                }
                gpu.insert(opened).clone()
            }
        };
        let mut unit = UnitRun { checkpoint, model_hash: &model_hash, summary: &mut summary, results, on_event };
        let (comparisons, direct): (Vec<&Measurement>, Vec<&Measurement>) = pending.into_iter().partition(|m| m.compares());
        if !direct.is_empty() {
            match Model::open_revision(&checkpoint.model, checkpoint.revision.as_deref(), gpu.clone()) {
                Ok(model) => {
                    let parameters = model.spec.parameter_count();
                    for m in direct {
                        unit.run(m, || m.measure(&model, options).map(|(metrics, text)| (metrics, text, parameters)))?;
                    }
                }
                Err(error) => unit.fail(&direct, &error)?,
            }
        }
        // The checkpoint's model is freed by now: comparisons open it again beside the base.
        for m in comparisons {
            unit.run(m, || m.compare(checkpoint, gpu.clone(), options).map(|(metrics, parameters)| (metrics, None, parameters)))?;
        }
    }
    Ok(summary)
}

/// What a measurement yields: its metrics, the text counts of a loss measurement, and the
/// checkpoint's parameter count.
type Measured = (BTreeMap<String, Metric>, Option<TextCounts>, usize);

/// Runs the units of one checkpoint: each is measured, appended to the results and reported as it
/// finishes; one that fails is reported and kept as a failure, and the others go on.
struct UnitRun<'a> {
    checkpoint: &'a CheckpointRef,
    model_hash: &'a str,
    summary: &'a mut Summary,
    results: &'a mut ResultsFile,
    on_event: &'a mut dyn FnMut(Event),
}

impl UnitRun<'_> {
    /// Measures `m` with `measure`; an error only where the sweep must stop (Ctrl-C, or the
    /// results file cannot be written).
    fn run(&mut self, m: &Measurement, measure: impl FnOnce() -> Result<Measured>) -> Result<()> {
        if score::stop_requested() {
            return Err(interrupted(self.summary, self.results));
        }
        let start = web_time::Instant::now();
        match measure() {
            Ok((metrics, text, parameters)) => {
                let checkpoint = self.checkpoint;
                let record = UnitRecord {
                    checkpoint: checkpoint.id.clone(),
                    revision: checkpoint.revision.clone(),
                    run: checkpoint.run.clone(),
                    step: checkpoint.step,
                    parameters: parameters as u64,
                    measurement: m.key.clone(),
                    model_hash: self.model_hash.to_string(),
                    measurement_hash: m.hash.clone(),
                    metrics,
                    text,
                    seconds: start.elapsed().as_secs_f64(),
                };
                self.results.append(record.clone())?;
                self.summary.finished += 1;
                (self.on_event)(Event::Finished(&record));
                Ok(())
            }
            Err(error) if error.kind == ErrorKind::Interrupted => Err(interrupted(self.summary, self.results)),
            Err(error) => self.fail(&[m], &error),
        }
    }

    fn fail(&mut self, measurements: &[&Measurement], error: &Error) -> Result<()> {
        record_failures(self.checkpoint, Some(self.model_hash), measurements, error, self.summary, self.results, self.on_event)
    }
}

fn interrupted(summary: &Summary, results: &ResultsFile) -> Error {
    Error::interrupted(format!(
        "interrupted: {} units finished in this run and kept in {}; rerun the same command to continue",
        summary.finished,
        results.path().display()
    ))
}

/// The measurements of a sweep: per text file its loss and, with a `base` model, the comparison
/// with it; then one per task. Names must be distinct.
pub fn measurements(data: &[PathBuf], tasks: &[TaskArg], base: Option<&str>, options: &SweepOptions) -> Result<Vec<Measurement>> {
    if base.is_some() && data.is_empty() {
        return Err(Error::bad_input("--base compares every checkpoint with the base model on the --data texts: give at least one --data file"));
    }
    // The base model's files are fingerprinted once, for every comparison.
    let base = match base {
        Some(base) => {
            let reference = CheckpointRef { id: base.to_string(), model: base.to_string(), revision: None, run: base.to_string(), step: None };
            let hash = checkpoint_hash(&reference).map_err(|e| Error { message: format!("--base {base}: {}", e.message), ..e })?;
            Some((base, hash))
        }
        None => None,
    };
    let mut all = Vec::new();
    for path in data {
        let text = Measurement::text(path, options)?;
        let comparison = base.as_ref().map(|(base, base_hash)| Measurement::comparison(&text, path, base, base_hash));
        all.push(text);
        all.extend(comparison);
    }
    for task in tasks {
        all.push(Measurement::task(task, options)?);
    }
    let mut keys: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
    keys.sort();
    if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::bad_input(format!(
            "two measurements are both named {}: give each --data file and --task file a distinct name",
            pair[0]
        )));
    }
    if all.is_empty() {
        return Err(Error::bad_input("nothing to measure: give --data text files and/or --task tasks"));
    }
    Ok(all)
}
