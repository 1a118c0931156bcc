//! Generative tasks (gsm8k, gsm8k_cot, triviaqa, gen) and the multiple-choice race and
//! ceval-valid checked against lm-evaluation-harness 0.4.13 itself: tests/eval-data/gen/lm-eval.json
//! is what models/scripts/make_gen_fixtures.py got from the harness's own code (prompts, `until`,
//! filtered answers and exact_match of a stand-in model's answers; exact_match and RegexFilter on
//! awkward strings). Only the end-to-end runs (gsm8k on models/default, `--resume` of generated
//! answers) generate.

mod common;

use common::repo;
use perplex::tasks::{self, apply_filters, ExactMatch, PyRegex, TaskSpec, INVALID};
use serde_json::Value;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    repo().join("tests/eval-data/gen").join(name)
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data("lm-eval.json")).unwrap()).unwrap()
}

fn spec(name: &str, file: &str, fewshot_file: Option<&str>, num_fewshot: usize) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        data: data(file),
        fewshot_data: fewshot_file.map(data),
        num_fewshot,
        limit: None,
        max_gen_toks: None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
        Value::String(s) => vec![s.clone()],
        other => panic!("not a string or list: {other}"),
    }
}

#[test]
fn prompts_filters_and_exact_match_match_lm_eval() {
    let reference = reference();
    let mut compared = 0;
    for run in reference["runs"].as_array().unwrap() {
        let task = run["task"].as_str().unwrap();
        let shots = run["num_fewshot"].as_u64().unwrap() as usize;
        if run["asked_fewshot"].is_null() {
            assert_eq!(tasks::default_fewshot(task), shots, "{task}'s default few-shot count");
        }
        let spec = match task {
            "gsm8k" => spec(task, "gsm8k/test.jsonl", Some("gsm8k/train.jsonl"), shots),
            "gsm8k_cot" => spec(task, "gsm8k/test.jsonl", None, shots),
            "triviaqa" => spec(task, "triviaqa/validation.jsonl", Some("triviaqa/train.jsonl"), shots),
            other => panic!("unexpected task {other}"),
        };
        let suite = tasks::load(&[spec]).unwrap();
        let task_def = &suite.tasks[0];
        let config = task_def.formulation.generation.unwrap();
        let instances = task_def.instances().unwrap();
        let docs = run["docs"].as_array().unwrap();
        assert_eq!(instances.len(), docs.len(), "{task}");
        for (instance, doc) in instances.iter().zip(docs) {
            let what = format!("{task} {shots}-shot document {}", doc["doc_id"]);
            let generation = instance.generation.as_ref().unwrap();
            assert_eq!(generation.request.context, doc["context"].as_str().unwrap(), "{what}: prompt");
            assert_eq!(generation.request.until, strings(&doc["until"]), "{what}: until");
            assert_eq!(generation.request.max_gen_toks, 256, "{what}: the harness's default max_gen_toks");
            assert_eq!(generation.references, strings(&doc["target"]), "{what}: target");
            let response = doc["response"].as_str().unwrap();
            let filters = doc["filters"].as_object().unwrap();
            assert_eq!(filters.len(), config.filters.len(), "{what}: filters");
            for pipeline in config.filters {
                let want = &filters[pipeline.name];
                let answer = apply_filters(pipeline.steps, response, None).unwrap();
                assert_eq!(answer, want["answer"].as_str().unwrap(), "{what}: {} of {response:?}", pipeline.name);
                let score = config.metric.score(&answer, &generation.references).unwrap();
                assert_eq!(score, want["exact_match"].as_f64().unwrap(), "{what}: exact_match,{} of {answer:?}", pipeline.name);
            }
            compared += 1;
        }
    }
    assert!(compared >= 24, "{compared} documents compared");
}

#[test]
fn exact_match_flags_match_lm_eval_on_awkward_strings() {
    const GSM8K: ExactMatch = ExactMatch {
        regexes_to_ignore: &[",", "\\$", "(?s).*#### ", "\\.$"],
        ignore_case: true,
        ignore_punctuation: false,
        ignore_numbers: false,
    };
    const TRIVIAQA: ExactMatch = ExactMatch { regexes_to_ignore: &[], ignore_case: true, ignore_punctuation: true, ignore_numbers: false };
    const PLAIN: ExactMatch = ExactMatch { regexes_to_ignore: &[], ignore_case: false, ignore_punctuation: false, ignore_numbers: false };
    let reference = reference();
    let rows = reference["exact_match"].as_array().unwrap();
    assert!(rows.len() > 500);
    for row in rows {
        let (p, r) = (row["prediction"].as_str().unwrap(), row["reference"].as_str().unwrap());
        for (name, metric) in [("gsm8k", GSM8K), ("triviaqa", TRIVIAQA), ("plain", PLAIN)] {
            assert_eq!(metric.score(p, &[r.to_string()]).unwrap(), row[name].as_f64().unwrap(), "{name}: {p:?} vs {r:?}");
        }
    }
}

#[test]
fn regex_and_whitespace_filters_match_lm_eval() {
    let reference = reference();
    for row in reference["regex"].as_array().unwrap() {
        let pattern = row["pattern"].as_str().unwrap();
        let input = row["input"].as_str().unwrap();
        let got = PyRegex::new(pattern).unwrap().extract(input, row["group_select"].as_i64().unwrap() as isize, INVALID);
        assert_eq!(got, row["output"].as_str().unwrap(), "{pattern:?} on {input:?}");
    }
    for row in reference["remove_whitespace"].as_array().unwrap() {
        let input = row["input"].as_str().unwrap();
        let got = apply_filters(&[tasks::FilterStep::RemoveWhitespace], input, None).unwrap();
        assert_eq!(got, row["output"].as_str().unwrap(), "{input:?}");
    }
}

#[test]
fn race_and_ceval_prompts_match_lm_eval() {
    let reference = reference();
    for run in reference["multiple_choice"].as_array().unwrap() {
        let task = run["task"].as_str().unwrap();
        let shots = run["num_fewshot"].as_u64().unwrap() as usize;
        let spec = match task {
            "race" => spec(task, "race.jsonl", None, shots),
            // One directory per subject with its val and dev splits, given as files.
            _ => spec(task, "ceval/accountant/val.jsonl", Some("ceval/accountant/dev.jsonl"), shots),
        };
        let suite = tasks::load(&[spec]).unwrap();
        let instances = suite.tasks[0].instances().unwrap();
        let docs = run["docs"].as_array().unwrap();
        assert_eq!(instances.len(), docs.len(), "{task}");
        for (instance, doc) in instances.iter().zip(docs) {
            let continuations: Vec<String> = instance.requests.iter().map(|r| r.continuation.clone()).collect();
            assert_eq!(continuations, strings(&doc["continuations"]), "{task} document {}", doc["doc_id"]);
            for request in &instance.requests {
                assert_eq!(request.context, doc["context"].as_str().unwrap(), "{task} document {}", doc["doc_id"]);
            }
            assert_eq!(instance.gold, Some(doc["target"].as_u64().unwrap() as usize), "{task} document {}", doc["doc_id"]);
        }
    }
}

#[test]
fn ceval_valid_is_a_group_of_subjects() {
    let scratch = std::env::temp_dir().join(format!("perplex-ceval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    // All subjects in one file with a `subject` field (as MMLU's `all`).
    let rows: Vec<String> = ["accountant", "logic"]
        .iter()
        .map(|s| format!("{{\"subject\":\"{s}\",\"question\":\"q\",\"A\":\"a\",\"B\":\"b\",\"C\":\"c\",\"D\":\"d\",\"answer\":\"B\"}}\n"))
        .collect();
    std::fs::create_dir_all(&scratch).unwrap();
    let file = scratch.join("val.jsonl");
    std::fs::write(&file, rows.concat()).unwrap();
    let suite = tasks::load(&[TaskSpec {
        name: "ceval-valid_logic".into(),
        data: file.clone(),
        fewshot_data: None,
        num_fewshot: 0,
        limit: None,
        max_gen_toks: None,
    }])
    .unwrap();
    assert_eq!(suite.tasks.len(), 1);
    assert_eq!(suite.tasks[0].name, "ceval-valid_logic");
    assert!(suite.tasks[0].description.contains("逻辑学"), "{}", suite.tasks[0].description);
    assert_eq!(tasks::CEVAL_SUBJECTS.len(), 52);
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn gen_files_give_their_own_settings() {
    let mut spec = spec("gen", "gen.jsonl", None, 0);
    let suite = tasks::load(std::slice::from_ref(&spec)).unwrap();
    let instances = suite.tasks[0].instances().unwrap();
    let first = instances[0].generation.as_ref().unwrap();
    assert_eq!(first.request.context, "Q: What is the capital of France?\nA:");
    assert_eq!(first.request.until, ["\n", "."]);
    assert_eq!(first.request.max_gen_toks, 8);
    assert_eq!(first.references, ["Paris", "paris"]);
    assert!(first.regex.is_none());
    let second = instances[1].generation.as_ref().unwrap();
    assert_eq!(second.regex.as_ref().unwrap().extract(" The answer is 5.", 0, INVALID), "5");
    // --max-gen-toks overrides every document's.
    spec.max_gen_toks = Some(3);
    let suite = tasks::load(&[spec]).unwrap();
    assert!(suite.tasks[0].instances().unwrap().iter().all(|i| i.generation.as_ref().unwrap().request.max_gen_toks == 3));
}

#[test]
fn generation_request_dumps_are_read_as_their_documents() {
    let lines: Vec<Value> = std::fs::read_to_string(data("olmes-gsm8k.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let suite = tasks::load(&[spec("gen", "olmes-gsm8k.jsonl", None, 0)]).unwrap();
    let instances = suite.tasks[0].instances().unwrap();
    assert_eq!(instances.len(), lines.len());
    for (instance, line) in instances.iter().zip(&lines) {
        let generation = instance.generation.as_ref().unwrap();
        assert_eq!(generation.request.context, line["request"]["context"].as_str().unwrap());
        assert_eq!(generation.request.until, strings(&line["request"]["stop_sequences"]));
        assert_eq!(generation.request.max_gen_toks, 512);
        assert_eq!(generation.references, strings(&line["label"]));
    }
    // The documents themselves are there for gsm8k's own prompts.
    let suite = tasks::load(&[spec("gsm8k", "olmes-gsm8k.jsonl", None, 0)]).unwrap();
    let instances = suite.tasks[0].instances().unwrap();
    let question = lines[0]["doc"]["question"].as_str().unwrap();
    assert_eq!(instances[0].generation.as_ref().unwrap().request.context, format!("Question: {question}\nAnswer:"));
}

#[test]
fn lm_eval_logged_samples_are_read_as_generation_requests() {
    // `lm_eval --log_samples` lines: {"doc_id", "doc", "arguments": [[context, gen_kwargs]], "target"}.
    let dir = std::env::temp_dir().join(format!("perplex-gen-samples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("samples_gsm8k.jsonl");
    let line = |id: usize, filter: &str| {
        serde_json::json!({
            "doc_id": id,
            "doc": {"question": format!("q{id}"), "answer": format!("a\n#### {id}")},
            "target": format!("a\n#### {id}"),
            "arguments": [[format!("Question: q{id}\nAnswer:"), {"until": ["Question:"], "do_sample": false}]],
            "filter": filter,
        })
        .to_string()
            + "\n"
    };
    // One line per filter and document: each document once.
    std::fs::write(&file, [line(0, "strict-match"), line(0, "flexible-extract"), line(1, "strict-match")].concat()).unwrap();
    let suite = tasks::load(&[TaskSpec { name: "gen".into(), data: file.clone(), fewshot_data: None, num_fewshot: 0, limit: None, max_gen_toks: None }])
        .unwrap();
    let instances = suite.tasks[0].instances().unwrap();
    assert_eq!(instances.len(), 2);
    let second = instances[1].generation.as_ref().unwrap();
    assert_eq!(second.request.context, "Question: q1\nAnswer:");
    assert_eq!(second.request.until, ["Question:"]);
    assert_eq!(second.request.max_gen_toks, 256, "the harness's default where the kwargs have none");
    assert_eq!(second.references, ["a\n#### 1"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `perplex eval` on a bad `gen` file: exit code 2 and a message naming the file, line and problem
/// (the documents are checked before any model or device is opened).
fn rejects(contents: &str, expected: &[&str]) {
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "perplex-gen-bad-{}-{}",
        std::process::id(),
        CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("task.jsonl");
    std::fs::write(&file, contents).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_perplex"))
        .args(["eval", "--model", repo().join("models/default").to_str().unwrap(), "--task", "gen", "--data", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_gen_files_are_clear_errors() {
    let ok = "{\"id\":0,\"context\":\"a\",\"answers\":[\"b\"],\"until\":[\"\\n\"],\"max_gen_toks\":4}\n";
    rejects(&format!("{ok}{{\"id\":1,\"context\":\"a\",\"until\":[\"x\"],\"max_gen_toks\":4}}\n"), &[
        "task.jsonl:2: document 1",
        "missing field \"answers\"",
    ]);
    rejects("{\"id\":1,\"context\":\"a\",\"answers\":[],\"until\":[\"x\"],\"max_gen_toks\":4}\n", &["task.jsonl:1", "\"answers\" is empty"]);
    rejects("{\"id\":1,\"context\":\"a\",\"answers\":[\"b\"],\"until\":[],\"max_gen_toks\":4}\n", &["task.jsonl:1", "\"until\" has no stop string"]);
    rejects("{\"id\":1,\"context\":\"a\",\"answers\":[\"b\"],\"until\":[\"x\"]}\n", &["missing field \"max_gen_toks\""]);
    rejects("{\"id\":1,\"context\":\"a\",\"answers\":[\"b\"],\"until\":[\"x\"],\"max_gen_toks\":0}\n", &["\"max_gen_toks\" is 0"]);
    rejects("{\"id\":1,\"context\":\"a\",\"answers\":[\"b\"],\"until\":[\"x\"],\"max_gen_toks\":-2}\n", &["not a positive integer"]);
    rejects("{\"id\":1,\"answers\":[\"b\"],\"until\":[\"x\"],\"max_gen_toks\":2}\n", &["missing field \"context\""]);
    rejects("{\"id\":1,\"context\":\"a\",\"answers\":[\"b\"],\"until\":[\"x\"],\"max_gen_toks\":2,\"regex\":\"(\"}\n", &[
        "invalid regular expression",
    ]);
    rejects(&format!("{ok}{{\"id\":1,"), &["task.jsonl:2: invalid JSON"]);
}

#[test]
fn max_gen_toks_zero_and_fewshot_data_for_fixed_exemplars_are_refused() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_perplex"))
            .args(["eval", "--model", repo().join("models/default").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let gen = data("gen.jsonl");
    let stderr = run(&["--task", "gen", "--data", gen.to_str().unwrap(), "--max-gen-toks", "0"]);
    assert!(stderr.contains("--max-gen-toks 0"), "{stderr}");
    let test = data("gsm8k/test.jsonl");
    let train = data("gsm8k/train.jsonl");
    let stderr = run(&["--task", "gsm8k_cot", "--data", test.to_str().unwrap(), "--fewshot-data", train.to_str().unwrap()]);
    assert!(stderr.contains("fixed exemplars"), "{stderr}");
}

/// End to end on the default model: results keyed as the harness keys them, samples per document.
#[test]
fn eval_gsm8k_end_to_end_on_the_default_model() {
    let dir = std::env::temp_dir().join(format!("perplex-gen-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, samples) = (dir.join("results.json"), dir.join("samples.jsonl"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_perplex"))
        .args(["eval", "--model", repo().join("models/default").to_str().unwrap(), "--task", "gsm8k", "--data"])
        .arg(data("gsm8k/test.jsonl"))
        .arg("--fewshot-data")
        .arg(data("gsm8k/train.jsonl"))
        .args(["--fewshot", "1", "--limit", "2", "--max-gen-toks", "16", "--json"])
        .arg(&json)
        .arg("--samples")
        .arg(&samples)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in ["exact_match,strict-match", "exact_match_stderr,strict-match", "exact_match,flexible-extract"] {
        assert!(!results["results"]["gsm8k"][key].is_null(), "results.gsm8k.{key}: {}", results["results"]["gsm8k"]);
    }
    assert_eq!(results["configs"]["gsm8k"]["generation_kwargs"]["max_gen_toks"], 16);
    let lines: Vec<Value> = std::fs::read_to_string(&samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert!(line["prompt"].as_str().unwrap().ends_with("\nAnswer:"));
        assert!(line["tokens"].as_u64().unwrap() <= 16);
        assert_eq!(line["filters"].as_array().unwrap().len(), 2);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--resume` keeps generated answers in `FILE.gen`: a rerun generates nothing and reports the
/// same.
#[test]
fn generated_answers_are_resumable() {
    let dir = std::env::temp_dir().join(format!("perplex-gen-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let resume = dir.join("run.resume");
    let run = |json: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_perplex"))
            .args(["eval", "--model", repo().join("models/default").to_str().unwrap(), "--task", "gen", "--data"])
            .arg(data("gen.jsonl"))
            .arg("--resume")
            .arg(&resume)
            .arg("--json")
            .arg(dir.join(json))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let results: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(json)).unwrap()).unwrap();
        results["results"]["gen"].clone()
    };
    let first = run("first.json");
    let log = tasks::gen_log_path(&resume);
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(lines, 1 + 3, "a header and one line per document");
    assert_eq!(run("second.json"), first);
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), lines, "nothing generated again");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SmolLM2-135M (the asset cache's f32 HF dir) against lm-evaluation-harness's HFLM
/// generate_until (float32, CPU, batch size 1, no BOS): models/reference/gen-smollm2.json, made by
/// models/scripts/compare_gen.py (gsm8k 5-shot, gsm8k_cot 8-shot, triviaqa 0-shot, 4 documents
/// each, max_gen_toks 128). Generating the long few-shot prompts takes minutes on a software
/// adapter, so only TriviaQA (short prompts and answers) runs by default; PERPLEX_GEN_ALL=1 runs
/// all three. Skipped, with a notice, without PERPLEX_ASSETS.
#[test]
fn smollm2_eval_answers_match_lm_eval() {
    let Some(assets) = common::assets("smollm2_eval_answers_match_lm_eval") else { return };
    let model_dir = assets.join("smollm2/hf-f32");
    if !model_dir.is_dir() {
        eprintln!("SKIPPED: {} is missing (run tests/assets/fetch smollm2)", model_dir.display());
        return;
    }
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/reference/gen-smollm2.json")).unwrap()).unwrap();
    let model = perplex::Model::open(model_dir.to_str().unwrap(), common::gpu()).unwrap();
    let all = std::env::var("PERPLEX_GEN_ALL").is_ok_and(|v| v == "1");
    for run in reference["runs"].as_array().unwrap() {
        let task = run["task"].as_str().unwrap();
        if task != "triviaqa" && !all {
            continue;
        }
        let shots = run["num_fewshot"].as_u64().unwrap() as usize;
        let mut spec = match task {
            "gsm8k" => spec(task, "gsm8k/test.jsonl", Some("gsm8k/train.jsonl"), shots),
            "gsm8k_cot" => spec(task, "gsm8k/test.jsonl", None, shots),
            _ => spec(task, "triviaqa/validation.jsonl", Some("triviaqa/train.jsonl"), shots),
        };
        spec.max_gen_toks = Some(run["max_gen_toks"].as_u64().unwrap() as usize);
        let suite = tasks::load(&[spec]).unwrap();
        let options = tasks::EvalOptions { max_length: None, batch: perplex::forward::Batch::Auto, progress: None };
        let result = tasks::evaluate(&model, &suite, &options).unwrap();
        let docs = run["docs"].as_array().unwrap();
        assert_eq!(result.generations.len(), docs.len(), "{task}");
        for (sample, want) in result.generations.iter().zip(docs) {
            let what = format!("{task} document {}", sample.doc_id);
            assert_eq!(sample.prompt, want["prompt"].as_str().unwrap(), "{what}: prompt");
            assert_eq!(sample.generation, want["generation"].as_str().unwrap(), "{what}: generated text");
            for filtered in &sample.filters {
                let lm_eval = &want["filters"][filtered.filter];
                assert_eq!(filtered.answer, lm_eval["answer"].as_str().unwrap(), "{what}: {}", filtered.filter);
                assert_eq!(filtered.exact_match, lm_eval["exact_match"].as_f64().unwrap(), "{what}: {}", filtered.filter);
            }
        }
        for m in &result.tasks[0].metrics {
            let key = format!("{},{}", m.name, m.filter);
            assert_eq!(m.value, run["results"][&key].as_f64().unwrap(), "{task} {key}");
        }
    }
}
