//! Benchmark tasks formulated exactly as lm-evaluation-harness 0.4.x formulates them (its task
//! yamls and utils.py files), so that perplex's accuracies are comparable with published ones.
//!
//! A task turns each document (a [`Record`]) into a [`Doc`] — the harness's `doc_to_text`,
//! `doc_to_choice` and `doc_to_target` — and this module turns docs into `loglikelihood`
//! requests the harness's way: the context is the task description, then k few-shot examples
//! (`question + target_delimiter + answer + "\n\n"` each), then the question; a multiple-choice
//! document asks for `target_delimiter + choice` after that context, one request per choice; a
//! partial-scoring document (WinoGrande: "multiple input") puts each choice into its own context
//! and scores one shared continuation; a loglikelihood (cloze) document scores its target verbatim.

mod builtin;
mod eval;
mod fewshot;
mod gen_resume;
mod generative;
mod metrics;

pub use builtin::{known_tasks, MMLU_SUBJECTS};
pub use builtin::{default_fewshot, CEVAL_SUBJECTS};
pub use eval::{evaluate, evaluate_resumable, EvalOptions, EvalResult, GenSample, GroupResult, Sample, TaskResult};
pub use generative::{apply_filters, ExactMatch, FilterPipeline, FilterStep, GenerationConfig, PyRegex, INVALID};
pub use gen_resume::gen_log_path;
pub use fewshot::{PyRandom, SamplerKind, HARNESS_SEED};
pub use metrics::{MetricValue, Stderr};

use crate::data::{self, Record, Source, Split};
use crate::error::{Error, Result};
use crate::score::Request;
use fewshot::Sampler;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the harness scores a task (`output_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    /// One log-likelihood per choice; the highest wins.
    MultipleChoice,
    /// One log-likelihood per document: the target given the context (cloze tasks such as LAMBADA).
    Loglikelihood,
    /// A greedily generated answer per document, filtered and compared with the reference(s).
    GenerateUntil,
}

impl OutputType {
    pub fn name(self) -> &'static str {
        match self {
            OutputType::MultipleChoice => "multiple_choice",
            OutputType::Loglikelihood => "loglikelihood",
            OutputType::GenerateUntil => "generate_until",
        }
    }
}

/// What the question part of a document is.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    /// The prompt text.
    Prompt(String),
    /// Partial scoring: the choices are the contexts and this is the index of the right one
    /// (the harness's integer `doc_to_text`).
    Gold(usize),
}

/// What the answer part of a document is.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Index into the choices.
    Index(usize),
    /// The answer text: a cloze target, the shared continuation of partial scoring, or (multiple
    /// choice) the text of the right choice.
    Text(String),
    /// Generative tasks with several right answers (TriviaQA's aliases): a generated answer is
    /// right when it matches any; few-shot examples show the first.
    Answers(Vec<String>),
}

/// A generative document's own settings (generic `gen` files and request dumps).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocGeneration {
    /// Overrides the task's `until`.
    pub until: Option<Vec<String>>,
    /// Overrides the task's `max_gen_toks`.
    pub max_gen_toks: Option<usize>,
    /// A Python-style regex that extracts the answer (its first group, else the whole match).
    pub regex: Option<String>,
}

/// A document after the harness's `doc_to_text`, `doc_to_choice` and `doc_to_target`.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub text: Text,
    /// The choices; for partial scoring, the contexts. Their lengths normalise `acc_norm`.
    pub choices: Vec<String>,
    pub target: Target,
    /// Overrides the task's target delimiter (generic task files set it per line).
    pub target_delimiter: Option<String>,
    /// Generative documents' own settings.
    pub generation: Option<DocGeneration>,
}

/// Split names as the harness's task yaml gives them.
#[derive(Debug, Clone, Copy)]
pub struct Splits {
    pub training: Option<&'static str>,
    pub validation: Option<&'static str>,
    pub test: Option<&'static str>,
    /// `fewshot_split`, where the yaml names one.
    pub fewshot: Option<&'static str>,
}

impl Splits {
    /// The harness evaluates the test split where the yaml has one, else validation.
    fn eval_order(&self) -> Vec<&'static str> {
        [self.test, self.validation].into_iter().flatten().collect()
    }

    /// The harness draws few-shot examples from `fewshot_split`, else training, else validation,
    /// else test.
    fn fewshot_order(&self) -> Vec<&'static str> {
        [self.fewshot, self.training, self.validation, self.test].into_iter().flatten().collect()
    }

    /// The harness removes the evaluated document from the few-shot draw when
    /// `fewshot_split == test_split` (which includes both being unset).
    fn excludes_eval_doc(&self) -> bool {
        self.fewshot == self.test
    }
}

/// A task's formulation: everything that is fixed by its name.
pub struct Formulation {
    pub name: &'static str,
    pub output: OutputType,
    /// `doc_to_text` / `doc_to_choice` / `doc_to_target`; the error names the problem.
    pub doc: fn(&Record) -> std::result::Result<Doc, String>,
    pub splits: Splits,
    pub sampler: SamplerKind,
    /// The harness task version, as it appears in its results file (`1.0`, `2.0`).
    pub version: f64,
    /// The Hugging Face dataset the harness loads (for the results file's `configs`).
    pub dataset_path: &'static str,
    pub dataset_name: Option<&'static str>,
    pub target_delimiter: &'static str,
    pub fewshot_delimiter: &'static str,
    /// Generative tasks: until, max_gen_toks, filters and metric.
    pub generation: Option<GenerationConfig>,
    /// `num_fewshot` of the yaml: what `--fewshot` defaults to.
    pub default_fewshot: usize,
    /// Few-shot examples listed in the yaml (`fewshot_config.samples`), used instead of a split.
    pub fixed_fewshot: Option<fn() -> Vec<Record>>,
}

/// The few-shot documents of a task.
pub struct FewshotPool {
    pub records: Vec<Record>,
    /// Whether the evaluated document is removed from each draw.
    pub exclude_eval_doc: bool,
    pub origin: String,
}

/// A task ready to evaluate.
pub struct Task {
    /// Its name in results (`hellaswag`, `mmlu_anatomy`).
    pub name: String,
    /// How tables and the results file show it (MMLU subjects are indented under their group).
    pub alias: String,
    pub formulation: &'static Formulation,
    /// Text before the few-shot examples (MMLU: "The following are multiple choice questions ...").
    pub description: String,
    /// The documents evaluated (after `--limit`).
    pub docs: Vec<Record>,
    /// Where each document is in its file, for messages (see [`Split::rows`]).
    pub rows: Vec<usize>,
    /// How many documents the split has.
    pub original: usize,
    /// The evaluated data, for messages.
    pub origin: String,
    pub num_fewshot: usize,
    pub fewshot: Option<FewshotPool>,
    /// `--max-gen-toks`: overrides every generative document's `max_gen_toks`.
    pub max_gen_toks: Option<usize>,
}

/// Tasks whose metrics are aggregated (MMLU and its four categories), weighted by size.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub alias: String,
    pub version: f64,
    /// Task or group names, in order.
    pub members: Vec<String>,
}

/// Everything `perplex eval` runs.
pub struct Suite {
    pub tasks: Vec<Task>,
    /// Innermost groups first, so each group's members are aggregated before it.
    pub groups: Vec<Group>,
    /// Things the user should know (few-shot split substitutions).
    pub notes: Vec<String>,
}

/// One task as the user asked for it.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    pub data: PathBuf,
    pub fewshot_data: Option<PathBuf>,
    pub num_fewshot: usize,
    pub limit: Option<usize>,
    /// Overrides the generative tasks' `max_gen_toks` (`--max-gen-toks`).
    pub max_gen_toks: Option<usize>,
}

/// One evaluated document's requests.
#[derive(Debug, Clone)]
pub struct Instance {
    pub doc_id: usize,
    pub requests: Vec<Request>,
    /// What `acc_norm` and `acc_bytes` divide by (the harness's `doc_to_choice`).
    pub choices: Vec<String>,
    /// The right choice (multiple choice only).
    pub gold: Option<usize>,
    /// Generative tasks: the request and what its answer is compared with.
    pub generation: Option<GenInstance>,
}

/// One generative document's request and references.
#[derive(Debug, Clone)]
pub struct GenInstance {
    pub request: crate::generate::GenRequest,
    /// The right answers (the harness's `doc_to_target`; several for TriviaQA).
    pub references: Vec<String>,
    /// The document's own extraction regex (`gen` files).
    pub regex: Option<PyRegex>,
}

impl Suite {
    /// Builds every request without scoring: finds bad documents before a model is loaded.
    pub fn check(&self) -> Result<()> {
        self.tasks.iter().try_for_each(|task| task.instances().map(drop))
    }
}

/// Loads every task the user named.
pub fn load(specs: &[TaskSpec]) -> Result<Suite> {
    let mut suite = Suite { tasks: Vec::new(), groups: Vec::new(), notes: Vec::new() };
    for spec in specs {
        builtin::load_task(spec, &mut suite)?;
    }
    Ok(suite)
}

/// A task's evaluated split and few-shot pool from the user's paths.
pub(crate) struct Resolved {
    pub eval: Split,
    pub pool: Option<Split>,
    pub exclude_eval_doc: bool,
}

fn same_split(a: &Split, b: &Split) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(&a.origin) == canonical(&b.origin) && a.name == b.name
}

fn describe_split(split: &Split) -> String {
    match &split.name {
        Some(name) => format!("{} (split {name})", split.origin.display()),
        None => split.origin.display().to_string(),
    }
}

/// Picks the evaluated split and the few-shot pool the way the harness does (see [`Splits`]).
/// A data path that is a single split is evaluated as given; without a separate few-shot split
/// the examples come from the evaluated split itself, minus the evaluated document.
pub(crate) fn resolve_data(
    task: &str,
    splits: &Splits,
    data: &Path,
    fewshot_data: Option<&Path>,
    num_fewshot: usize,
    notes: &mut Vec<String>,
) -> Result<Resolved> {
    let source = Source::open(data)?;
    let choose = |map: &BTreeMap<String, PathBuf>, order: &[&'static str], purpose: &str, path: &Path| -> Result<Split> {
        let name = order.iter().find(|name| map.contains_key(**name)).ok_or_else(|| {
            Error::bad_input(format!(
                "{}: {task} {purpose} one of the splits {order:?}, but this dataset has {:?}; pass the split's directory \
                 or file instead",
                path.display(),
                map.keys().collect::<Vec<_>>()
            ))
        })?;
        data::read_split(map, name)
    };
    let (eval, splits_of_data) = match source {
        Source::Split(split) => (split, None),
        Source::Splits(map) => (choose(&map, &splits.eval_order(), "evaluates", data)?, Some(map)),
    };
    if num_fewshot == 0 {
        return Ok(Resolved { eval, pool: None, exclude_eval_doc: false });
    }
    let wanted = splits.fewshot_order();
    let pool = match fewshot_data {
        Some(path) => match Source::open(path)? {
            Source::Split(split) => split,
            Source::Splits(map) => choose(&map, &wanted, "draws few-shot examples from", path)?,
        },
        None => match &splits_of_data {
            Some(map) => choose(map, &wanted, "draws few-shot examples from", data)?,
            None => eval.clone(),
        },
    };
    let same = same_split(&eval, &pool);
    if fewshot_data.is_none() {
        let preferred = wanted.first().copied();
        if same {
            let mut note = format!(
                "{task}: few-shot examples come from the evaluated split itself ({}), excluding each evaluated document",
                describe_split(&pool)
            );
            if let Some(preferred) = preferred.filter(|p| Some(p) != splits.eval_order().first()) {
                note += &format!("; lm-evaluation-harness draws them from the {preferred} split (pass it with --fewshot-data)");
            }
            notes.push(note);
        } else if let Some(preferred) = preferred.filter(|p| pool.name.as_deref() != Some(*p)) {
            notes.push(format!(
                "{task}: few-shot examples come from {} because the data has no {preferred} split",
                describe_split(&pool)
            ));
        }
    }
    Ok(Resolved { eval, pool: Some(pool), exclude_eval_doc: splits.excludes_eval_doc() || same })
}

impl Task {
    pub(crate) fn new(
        name: String,
        alias: String,
        formulation: &'static Formulation,
        description: String,
        data: Resolved,
        spec: &TaskSpec,
    ) -> Result<Task> {
        let Resolved { eval, pool, exclude_eval_doc } = data;
        let origin = describe_split(&eval);
        let original = eval.records.len();
        let mut docs = eval.records;
        let mut rows = eval.rows;
        if let Some(limit) = spec.limit {
            docs.truncate(limit);
            rows.truncate(limit);
        }
        if docs.is_empty() {
            return Err(Error::bad_input(format!("{origin}: no documents for {name}")));
        }
        let fewshot = pool.map(|pool| FewshotPool { origin: describe_split(&pool), records: pool.records, exclude_eval_doc });
        let fewshot = match formulation.fixed_fewshot {
            Some(samples) if spec.num_fewshot > 0 => Some(FewshotPool {
                records: samples(),
                exclude_eval_doc: false,
                origin: format!("the few-shot examples of {}'s task yaml", formulation.name),
            }),
            _ => fewshot,
        };
        Ok(Task {
            name,
            alias,
            formulation,
            description,
            docs,
            rows,
            original,
            origin,
            num_fewshot: spec.num_fewshot,
            fewshot,
            max_gen_toks: spec.max_gen_toks,
        })
    }

    /// The harness's requests for every evaluated document, with the few-shot draws in document
    /// order. Every document is checked (fields, gold index, choices) before anything is scored.
    pub fn instances(&self) -> Result<Vec<Instance>> {
        let formulation = self.formulation;
        let mut sampler =
            self.fewshot.as_ref().map(|pool| Sampler::new(formulation.sampler, &pool.records, pool.exclude_eval_doc));
        let mut instances = Vec::with_capacity(self.docs.len());
        for (doc_id, record) in self.docs.iter().enumerate() {
            let at = match self.rows.get(doc_id) {
                Some(row) => format!("{}:{row}: document {doc_id}", self.origin),
                None => format!("{}: document {doc_id}", self.origin),
            };
            let doc = (formulation.doc)(record).map_err(|e| Error::bad_input(format!("{at}: {e} ({})", self.name)))?;
            let gold = self.check(&doc).map_err(|e| Error::bad_input(format!("{at}: {e}")))?;
            let mut prefix = self.description.clone();
            if let Some(sampler) = sampler.as_mut() {
                let pool = &self.fewshot.as_ref().unwrap().origin;
                let examples = sampler.sample(self.num_fewshot, record).map_err(|e| Error::bad_input(format!("{pool}: {e}")))?;
                for example in examples {
                    let example = (formulation.doc)(example)
                        .map_err(|e| Error::bad_input(format!("{pool}: a few-shot document: {e} ({})", self.name)))?;
                    prefix += &self
                        .example_text(&example)
                        .map_err(|e| Error::bad_input(format!("{pool}: a few-shot document: {e}")))?;
                }
            }
            let delimiter = self.target_delimiter(&doc);
            if formulation.output == OutputType::GenerateUntil {
                let generation = self
                    .gen_instance(&doc, prefix)
                    .map_err(|e| Error::bad_input(format!("{at}: {e} ({})", self.name)))?;
                instances.push(Instance { doc_id, requests: Vec::new(), choices: Vec::new(), gold: None, generation: Some(generation) });
                continue;
            }
            let requests = match (&doc.text, &doc.target) {
                (Text::Prompt(question), Target::Text(target)) if formulation.output == OutputType::Loglikelihood => {
                    vec![Request { context: prefix + question, continuation: target.clone() }]
                }
                (Text::Prompt(question), _) => {
                    let context = prefix + question;
                    doc.choices
                        .iter()
                        .map(|choice| Request { context: context.clone(), continuation: format!("{delimiter}{choice}") })
                        .collect()
                }
                (Text::Gold(_), target) => {
                    let Target::Text(continuation) = target else { unreachable!("checked: partial scoring has a text target") };
                    doc.choices
                        .iter()
                        .map(|choice| Request {
                            context: format!("{prefix}{choice}"),
                            continuation: format!("{delimiter}{continuation}"),
                        })
                        .collect()
                }
            };
            instances.push(Instance { doc_id, requests, choices: doc.choices, gold, generation: None });
        }
        Ok(instances)
    }

    /// A generative document's request: the prompt is the description, the few-shot examples
    /// and the question, with nothing after it (the harness's `generate_until` context).
    fn gen_instance(&self, doc: &Doc, prefix: String) -> std::result::Result<GenInstance, String> {
        let config = self.formulation.generation.as_ref().expect("a generative task has a generation config");
        let Text::Prompt(question) = &doc.text else { return Err("a generative document needs a prompt".into()) };
        let references = match &doc.target {
            Target::Text(answer) => vec![answer.clone()],
            Target::Answers(answers) if !answers.is_empty() => answers.clone(),
            Target::Answers(_) => return Err("the list of answers is empty".into()),
            Target::Index(_) => return Err("a generative document needs an answer text".into()),
        };
        let own = doc.generation.clone().unwrap_or_default();
        let until = own.until.unwrap_or_else(|| config.until.iter().map(|s| s.to_string()).collect());
        let max_gen_toks = self
            .max_gen_toks
            .or(own.max_gen_toks)
            .or(config.max_gen_toks)
            .unwrap_or(crate::generate::DEFAULT_MAX_GEN_TOKS);
        let regex = own.regex.as_deref().map(PyRegex::new).transpose()?;
        Ok(GenInstance {
            request: crate::generate::GenRequest { context: prefix + question, until, max_gen_toks },
            references,
            regex,
        })
    }

    fn target_delimiter<'a>(&'a self, doc: &'a Doc) -> &'a str {
        doc.target_delimiter.as_deref().unwrap_or(self.formulation.target_delimiter)
    }

    /// Checks a document and returns its gold index (None for cloze tasks): the harness would only
    /// warn about a bad gold index and score the document as wrong; here it is an error.
    fn check(&self, doc: &Doc) -> std::result::Result<Option<usize>, String> {
        if self.formulation.output == OutputType::GenerateUntil {
            return Ok(None);
        }
        if self.formulation.output == OutputType::Loglikelihood {
            return match (&doc.text, &doc.target) {
                (Text::Prompt(_), Target::Text(_)) => Ok(None),
                _ => Err("a cloze document needs a context and a target text".into()),
            };
        }
        if doc.choices.is_empty() {
            return Err("the choice list is empty".into());
        }
        let n = doc.choices.len();
        let gold = match (&doc.text, &doc.target) {
            (Text::Gold(gold), Target::Text(_)) => *gold,
            (Text::Gold(_), Target::Index(_)) => return Err("partial scoring needs a continuation text".into()),
            (_, Target::Answers(_)) => return Err("a multiple-choice document needs one right answer".into()),
            (Text::Prompt(_), Target::Index(gold)) => *gold,
            (Text::Prompt(_), Target::Text(answer)) => doc
                .choices
                .iter()
                .position(|c| c == answer)
                .ok_or_else(|| format!("the answer {answer:?} is not one of the choices {:?}", doc.choices))?,
        };
        if gold >= n {
            return Err(format!("gold index {gold} is out of range for {n} choices"));
        }
        Ok(Some(gold))
    }

    /// One few-shot example: question, target delimiter, answer, few-shot delimiter (the harness's
    /// `build_qa_turn`; an empty answer leaves only the question).
    fn example_text(&self, doc: &Doc) -> std::result::Result<String, String> {
        let choice = |i: usize| {
            doc.choices.get(i).cloned().ok_or_else(|| format!("gold index {i} is out of range for {} choices", doc.choices.len()))
        };
        let (question, answer) = match (&doc.text, &doc.target) {
            (Text::Prompt(question), Target::Index(i)) => (question.clone(), choice(*i)?),
            (Text::Prompt(question), Target::Text(answer)) => (question.clone(), answer.clone()),
            (Text::Prompt(question), Target::Answers(answers)) => (question.clone(), answers.first().cloned().unwrap_or_default()),
            (Text::Gold(i), Target::Text(answer)) => (choice(*i)?, answer.clone()),
            (Text::Gold(_), Target::Answers(_)) => return Err("partial scoring needs a continuation text".into()),
            (Text::Gold(_), Target::Index(_)) => return Err("partial scoring needs a continuation text".into()),
        };
        if answer.is_empty() {
            return Ok(question);
        }
        Ok(format!("{question}{}{answer}{}", self.target_delimiter(doc), self.formulation.fewshot_delimiter))
    }
}
