//! `perplex eval` on the committed tiny model (models/tiny/llama-f32, 128 positions) with the
//! small task files in tests/eval-data: requests built by lm-evaluation-harness's rules, metrics
//! recomputed here from `loglikelihood` results, independence from batch size and order, few-shot
//! draws, data formats, and the bad-input errors of the command line.

mod common;

use common::{gpu, repo};
use perplex::forward::Batch;
use perplex::model::TextTokenizer;
use perplex::score::{self, encode_request, loglikelihood, LoglikOptions, Request, Window};
use perplex::data::Source;
use perplex::tasks::{self, EvalOptions, EvalResult, PyRandom, Stderr, Suite, TaskSpec};
use perplex::Model;
use std::path::PathBuf;
use std::sync::OnceLock;

fn model_dir() -> PathBuf {
    repo().join("models/tiny/llama-f32")
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::open(model_dir().to_str().unwrap(), gpu()).unwrap())
}

fn data(name: &str) -> PathBuf {
    repo().join("tests/eval-data").join(name)
}

fn spec(name: &str, file: &str, num_fewshot: usize) -> TaskSpec {
    TaskSpec { name: name.into(), data: data(file), fewshot_data: None, num_fewshot, limit: None, max_gen_toks: None }
}

fn run(suite: &Suite, batch: usize) -> EvalResult {
    tasks::evaluate(model(), suite, &EvalOptions { max_length: None, batch: batch.into(), progress: None }).unwrap()
}

fn lines(file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data(file)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap().to_string()
}

/// (sum log p, is_greedy) of each request, straight from `loglikelihood`.
fn score(requests: &[Request]) -> Vec<(f64, bool)> {
    let options = LoglikOptions { max_length: None, batch: 4.into(), progress: None };
    loglikelihood(model(), requests, &options).unwrap().results.iter().map(|r| (r.ll, r.is_greedy)).collect()
}

fn metric(result: &EvalResult, name: &str) -> (f64, Stderr) {
    let m = result.tasks[0].metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no metric {name}"));
    (m.value, m.stderr)
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{what}: got {got}, want {want}");
}

fn mean_and_stderr(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

fn first_max(values: &[f64]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

#[test]
fn requests_follow_the_harness_tokenization() {
    let tok = TextTokenizer::load(&model_dir()).unwrap();
    let encode = |s: &str| tok.encode(s).unwrap();
    let request = |c: &str, x: &str| encode_request(&tok, &Request { context: c.into(), continuation: x.into() }).unwrap();

    // Context + continuation is tokenized as one string and split at len(tok(context)); here the
    // merge at the boundary makes that differ from tokenizing the two parts apart.
    let (context, continuation) = ("And the eve", "ning and the morning");
    let whole = encode(&format!("{context}{continuation}"));
    let split = request(context, continuation);
    assert_eq!(split.context, encode(context));
    assert_eq!(split.continuation, whole[encode(context).len()..].to_vec());
    assert_ne!(split.continuation, encode(continuation), "the example should exercise a merged boundary");

    // Trailing whitespace of the context (Python's rstrip: spaces, newlines) moves to the continuation.
    assert_eq!(
        request("And the evening and the morning were the ", "first day."),
        request("And the evening and the morning were the", " first day.")
    );
    assert_eq!(request("light from\n \n", "the darkness"), request("light from", "\n \nthe darkness"));

    // An empty context is the prefix token (BOS here), unless the continuation starts with it.
    let bos = tok.prefix_token().unwrap();
    let empty = request("", "And God saw");
    assert_eq!(empty.context, vec![bos]);
    assert_eq!(empty.continuation, encode("And God saw"));
    let with_bos = request("", "<s>And God saw");
    assert_eq!(with_bos.context, vec![bos]);
    assert_eq!(with_bos.continuation, encode("And God saw"));
}

#[test]
fn long_requests_are_truncated_on_the_left_and_counted() {
    let tok = &model().tokenizer;
    let requests: Vec<Request> = lines("loglik.jsonl")
        .iter()
        .map(|l| Request { context: text(&l["context"]), continuation: text(&l["continuation"]) })
        .collect();
    let max_length = 16;
    let output =
        loglikelihood(model(), &requests, &LoglikOptions { max_length: Some(max_length), batch: 3.into(), progress: None }).unwrap();
    let mut truncated = 0;
    for (request, result) in requests.iter().zip(&output.results) {
        // The harness's input: (context_enc + continuation_enc)[-(L+1):][:-1], scoring the last
        // len(continuation_enc) positions, built here from the tokenizer directly.
        let context = tok.encode(request.context.trim_end()).unwrap();
        let whole = tok.encode(&format!("{}{}", request.context, request.continuation)).unwrap();
        let continuation = whole[context.len()..].to_vec();
        let all: Vec<u32> = context.iter().chain(&continuation).copied().collect();
        let kept = &all[all.len().saturating_sub(max_length + 1)..];
        truncated += (all.len() > max_length + 1) as usize;
        let input = kept[..kept.len() - 1].to_vec();
        let window = Window {
            doc: 0,
            scored: input.len() - continuation.len()..input.len(),
            targets: kept[1..].to_vec(),
            input,
            first_target: 0,
            segments: Vec::new(),
        };
        let (scores, _) = pollster::block_on(score::score_windows(model(), &[window], 1.into(), |_| {})).unwrap();
        let ll: f64 = scores[0].iter().map(|s| s.logprob as f64).sum();
        assert_eq!(result.ll, ll, "{:?}", request.continuation);
        assert_eq!(result.tokens, continuation.len());
        assert_eq!(result.truncated, all.len() > max_length + 1);
    }
    assert!(truncated >= 2, "the test data should truncate several requests at length {max_length}");
    assert_eq!(output.truncated, truncated);

    // At the model's own 128 positions only the long document is cut, and `eval` reports it.
    let suite = tasks::load(&[spec("loglik", "loglik.jsonl", 0)]).unwrap();
    let result = run(&suite, 4);
    assert_eq!(result.max_length, 128);
    assert_eq!(result.truncated, 1);
    assert_eq!(result.tasks[0].truncated, 1);
}

#[test]
fn multiple_choice_metrics_match_their_definitions() {
    let suite = tasks::load(&[spec("mc", "mc.jsonl", 0)]).unwrap();
    let result = run(&suite, 8);
    let docs = lines("mc.jsonl");
    let mut per_doc: Vec<[f64; 5]> = Vec::new();
    let mut samples = result.samples.iter();
    for (doc_id, doc) in docs.iter().enumerate() {
        let delimiter = doc.get("target_delimiter").map(text).unwrap_or_else(|| " ".into());
        let choices: Vec<String> = doc["choices"].as_array().unwrap().iter().map(text).collect();
        let requests: Vec<Request> =
            choices.iter().map(|c| Request { context: text(&doc["context"]), continuation: format!("{delimiter}{c}") }).collect();
        let scored = score(&requests);
        for (i, (request, (ll, greedy))) in requests.iter().zip(&scored).enumerate() {
            let sample = samples.next().unwrap();
            assert_eq!((sample.doc_id, sample.choice), (doc_id, i));
            assert_eq!((&sample.context, &sample.continuation), (&request.context, &request.continuation));
            assert_eq!((sample.ll, sample.is_greedy), (*ll, *greedy));
        }
        let lls: Vec<f64> = scored.iter().map(|s| s.0).collect();
        let gold = doc["gold"].as_u64().unwrap() as usize;
        let per_char: Vec<f64> = lls.iter().zip(&choices).map(|(l, c)| l / c.chars().count() as f64).collect();
        let per_byte: Vec<f64> = lls.iter().zip(&choices).map(|(l, c)| l / c.len() as f64).collect();
        let z: f64 = lls.iter().map(|l| l.exp()).sum();
        let probs: Vec<f64> = lls.iter().map(|l| l.exp() / z).collect();
        let brier: f64 = probs.iter().enumerate().map(|(i, p)| (p - (i == gold) as u8 as f64).powi(2)).sum();
        let hit = |i: usize| (i == gold) as u8 as f64;
        per_doc.push([hit(first_max(&lls)), hit(first_max(&per_char)), hit(first_max(&per_byte)), probs[gold], brier]);
    }
    assert!(samples.next().is_none());
    for (m, name) in ["acc", "acc_norm", "acc_bytes", "prob_correct", "brier_score"].iter().enumerate() {
        let (want, want_stderr) = mean_and_stderr(&per_doc.iter().map(|d| d[m]).collect::<Vec<_>>());
        let (got, got_stderr) = metric(&result, name);
        close(got, want, name);
        close(got_stderr.value().unwrap(), want_stderr, &format!("{name} stderr"));
    }
    // Normalisation must matter somewhere in this data, or acc_norm is not being tested.
    assert!(per_doc.iter().any(|d| d[0] != d[1] || d[1] != d[2]), "acc, acc_norm and acc_bytes agree on every document");
    assert_eq!(result.tasks[0].docs, docs.len());
    assert_eq!(result.requests, docs.iter().map(|d| d["choices"].as_array().unwrap().len()).sum::<usize>());
}

#[test]
fn partial_scoring_shares_the_continuation() {
    let suite = tasks::load(&[spec("mc", "partial.jsonl", 0)]).unwrap();
    let result = run(&suite, 8);
    let mut acc = Vec::new();
    let mut acc_norm = Vec::new();
    let mut samples = result.samples.iter();
    for doc in lines("partial.jsonl") {
        let contexts: Vec<String> = doc["contexts"].as_array().unwrap().iter().map(text).collect();
        let delimiter = doc.get("target_delimiter").map(text).unwrap_or_else(|| " ".into());
        let continuation = format!("{delimiter}{}", text(&doc["continuation"]));
        let requests: Vec<Request> =
            contexts.iter().map(|c| Request { context: c.clone(), continuation: continuation.clone() }).collect();
        let lls: Vec<f64> = score(&requests).iter().map(|s| s.0).collect();
        for (request, ll) in requests.iter().zip(&lls) {
            let sample = samples.next().unwrap();
            assert_eq!((&sample.context, &sample.continuation, sample.ll), (&request.context, &request.continuation, *ll));
        }
        let gold = doc["gold"].as_u64().unwrap() as usize;
        acc.push((first_max(&lls) == gold) as u8 as f64);
        // The harness normalises by the choices, which for partial scoring are the contexts.
        let per_char: Vec<f64> = lls.iter().zip(&contexts).map(|(l, c)| l / c.chars().count() as f64).collect();
        acc_norm.push((first_max(&per_char) == gold) as u8 as f64);
    }
    close(metric(&result, "acc").0, mean_and_stderr(&acc).0, "acc");
    close(metric(&result, "acc_norm").0, mean_and_stderr(&acc_norm).0, "acc_norm");
}

#[test]
fn cloze_tasks_score_the_continuation_verbatim() {
    let suite = tasks::load(&[spec("loglik", "loglik.jsonl", 0)]).unwrap();
    let result = run(&suite, 8);
    let requests: Vec<Request> = lines("loglik.jsonl")
        .iter()
        .map(|l| Request { context: text(&l["context"]), continuation: text(&l["continuation"]) })
        .collect();
    let scored = score(&requests);
    for (sample, (request, (ll, greedy))) in result.samples.iter().zip(requests.iter().zip(&scored)) {
        assert_eq!((&sample.context, &sample.continuation), (&request.context, &request.continuation));
        assert_eq!((sample.ll, sample.is_greedy), (*ll, *greedy));
    }
    let lls: Vec<f64> = scored.iter().map(|s| s.0).collect();
    let (mean_ll, ll_stderr) = mean_and_stderr(&lls);
    let (perplexity, stderr) = metric(&result, "perplexity");
    close(perplexity, (-mean_ll).exp(), "perplexity");
    close(stderr.value().unwrap(), (-mean_ll).exp() * ll_stderr, "perplexity stderr");
    let greedy: Vec<f64> = scored.iter().map(|s| s.1 as u8 as f64).collect();
    close(metric(&result, "acc").0, mean_and_stderr(&greedy).0, "acc");
}

#[test]
fn scores_do_not_depend_on_batch_size_or_order() {
    let specs = [spec("mc", "mc.jsonl", 0), spec("mc", "partial.jsonl", 0), spec("loglik", "loglik.jsonl", 0)];
    let suite = tasks::load(&specs).unwrap();
    let one = run(&suite, 1);
    let seven = run(&suite, 7);
    let key = |s: &tasks::Sample| (s.context.clone(), s.continuation.clone());
    for (a, b) in one.samples.iter().zip(&seven.samples) {
        assert_eq!(key(a), key(b));
        assert_eq!(a.ll.to_bits(), b.ll.to_bits(), "{:?}: batch 1 and batch 7 differ", a.continuation);
        assert_eq!(a.is_greedy, b.is_greedy);
    }
    for (a, b) in one.tasks.iter().zip(&seven.tasks) {
        assert_eq!(a.metrics, b.metrics);
    }

    // The same documents in reverse order get the same numbers.
    let dir = std::env::temp_dir().join(format!("perplex-eval-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut reversed = std::fs::read_to_string(data("mc.jsonl")).unwrap().lines().rev().collect::<Vec<_>>().join("\n");
    reversed.push('\n');
    std::fs::write(dir.join("mc.jsonl"), reversed).unwrap();
    let suite = tasks::load(&[TaskSpec { data: dir.join("mc.jsonl"), ..spec("mc", "mc.jsonl", 0) }]).unwrap();
    let shuffled = run(&suite, 3);
    std::fs::remove_dir_all(&dir).unwrap();
    let original: std::collections::HashMap<_, _> =
        one.samples.iter().filter(|s| s.task == "mc").map(|s| (key(s), s.ll.to_bits())).collect();
    for sample in &shuffled.samples {
        assert_eq!(original.get(&key(sample)), Some(&sample.ll.to_bits()), "{:?}", sample.continuation);
    }
    for (a, b) in one.tasks[0].metrics.iter().zip(&shuffled.tasks[0].metrics) {
        close(a.value, b.value, a.name);
    }
}

/// The choices of each question, plus single-token continuations, a duplicate, and two choices
/// of a long context that truncation at a short maximum length cuts.
fn shared_context_requests() -> Vec<Request> {
    let mut requests = Vec::new();
    for doc in lines("mc.jsonl") {
        for choice in doc["choices"].as_array().unwrap() {
            requests.push(Request { context: text(&doc["context"]), continuation: format!(" {}", text(choice)) });
        }
    }
    let long = text(&lines("loglik.jsonl")[3]["context"]);
    for (context, continuation) in [
        ("In the beginning God created", " a"),
        ("In the beginning God created", " the"),
        ("In the beginning God created", " a"),
        ("And God said, Let there be", " light"),
        (long.as_str(), " waters."),
        (long.as_str(), " the light of the day."),
    ] {
        requests.push(Request { context: context.into(), continuation: continuation.into() });
    }
    requests
}

#[test]
fn shared_contexts_score_like_separate_requests_in_any_batch_and_order() {
    let requests = shared_context_requests();
    for max_length in [None, Some(40)] {
        let options = |batch: Batch| LoglikOptions { max_length, batch, progress: None };
        let packed = loglikelihood(model(), &requests, &options(Batch::Auto)).unwrap();
        let mut alone_positions = 0;
        for (request, got) in requests.iter().zip(&packed.results) {
            let alone = loglikelihood(model(), std::slice::from_ref(request), &options(1.into())).unwrap();
            alone_positions += alone.positions;
            let want = alone.results[0];
            assert!((got.ll - want.ll).abs() <= 1e-5, "{request:?} at {max_length:?}: packed {} alone {}", got.ll, want.ll);
            assert_eq!((got.is_greedy, got.tokens, got.truncated), (want.is_greedy, want.tokens, want.truncated), "{request:?}");
        }
        assert!(packed.positions < alone_positions, "contexts should be shared: {} rows vs {alone_positions}", packed.positions);
        if max_length.is_some() {
            assert!(packed.truncated >= 2);
        }

        // Bit for bit the same in any batch size and request order.
        let bits = |results: &[score::Loglikelihood]| -> Vec<(u64, bool, usize)> {
            results.iter().map(|r| (r.ll.to_bits(), r.is_greedy, r.tokens)).collect()
        };
        for batch in [1.into(), 3.into()] {
            let output = loglikelihood(model(), &requests, &options(batch)).unwrap();
            assert_eq!(bits(&output.results), bits(&packed.results), "batch {batch:?} at {max_length:?}");
        }
        let order = PyRandom::new(7).sample(requests.len(), requests.len()).unwrap();
        let shuffled: Vec<Request> = order.iter().map(|&i| requests[i].clone()).collect();
        for batch in [Batch::Auto, 3.into()] {
            let output = loglikelihood(model(), &shuffled, &options(batch)).unwrap();
            let unshuffled: Vec<_> = {
                let mut results = vec![None; requests.len()];
                for (&i, result) in order.iter().zip(&output.results) {
                    results[i] = Some(*result);
                }
                results.into_iter().map(Option::unwrap).collect()
            };
            assert_eq!(bits(&unshuffled), bits(&packed.results), "shuffled, batch {batch:?} at {max_length:?}");
        }
    }
}

#[test]
fn few_shot_examples_are_drawn_like_the_harness() {
    let k = 2;
    let suite = tasks::load(&[spec("mc", "mc.jsonl", k)]).unwrap();
    let instances = suite.tasks[0].instances().unwrap();
    let docs = lines("mc.jsonl");
    let delimiter = |d: &serde_json::Value| d.get("target_delimiter").map(text).unwrap_or_else(|| " ".into());
    // One random.Random(1234) per task; each document samples k + 1 of the same file and drops itself.
    let mut rng = PyRandom::new(1234);
    for (i, (instance, doc)) in instances.iter().zip(&docs).enumerate() {
        let picked: Vec<usize> = rng.sample(docs.len(), k + 1).unwrap().into_iter().filter(|&j| j != i).take(k).collect();
        let mut context = String::new();
        for &j in &picked {
            let example = &docs[j];
            let gold = example["gold"].as_u64().unwrap() as usize;
            context += &format!("{}{}{}\n\n", text(&example["context"]), delimiter(example), text(&example["choices"][gold]));
        }
        context += &text(&doc["context"]);
        assert!(instance.requests.iter().all(|r| r.context == context), "document {i}: {:?}", instance.requests[0].context);
    }
}

#[test]
fn splits_are_chosen_like_the_harness() {
    // A DatasetDict: arc_easy evaluates `test` and draws few-shot examples from `train`.
    let suite = tasks::load(&[spec("arc_easy", "arc-dict", 1)]).unwrap();
    assert!(suite.notes.is_empty(), "{:?}", suite.notes);
    let task = &suite.tasks[0];
    assert_eq!(task.docs.len(), 3);
    for instance in task.instances().unwrap() {
        let context = &instance.requests[0].context;
        assert!(context.starts_with("Question: Which train question"), "{context:?}");
        assert!(context.contains("\n\nQuestion: Which test question"), "{context:?}");
        assert_eq!(instance.requests[0].continuation, format!(" test answer {}", instance.doc_id));
    }
    // One split given alone is evaluated as it is, and few-shot examples come from it too, minus
    // the evaluated document (with a note).
    let suite = tasks::load(&[spec("arc_easy", "arc-dict/validation", 2)]).unwrap();
    assert_eq!(suite.notes.len(), 1, "{:?}", suite.notes);
    for instance in suite.tasks[0].instances().unwrap() {
        let context = &instance.requests[0].context;
        let own = format!("validation question is number {}?\nAnswer: validation", instance.doc_id);
        assert!(!context.contains(&own), "document {} drawn as its own example: {context:?}", instance.doc_id);
    }
}

#[test]
fn jsonl_parquet_and_arrow_give_the_same_requests() {
    let requests = |file: &str| -> Vec<Vec<Request>> {
        let suite = tasks::load(&[spec("mc", file, 0)]).unwrap();
        suite.tasks[0].instances().unwrap().into_iter().map(|i| i.requests).collect()
    };
    let jsonl = requests("mc.jsonl");
    assert_eq!(requests("mc.parquet"), jsonl);
    assert_eq!(requests("mc-dataset"), jsonl);
    let Source::Split(split) = Source::open(&data("mc-dataset")).unwrap() else { panic!("a Dataset directory is one split") };
    assert_eq!(split.records.len(), jsonl.len());
    assert!(matches!(Source::open(&data("arc-dict")).unwrap(), Source::Splits(_)));
}

// ---------------------------------------------------------------------------------------------
// The command line.
// ---------------------------------------------------------------------------------------------

struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("perplex-eval-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn perplex(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_perplex")).args(args).output().unwrap()
}

/// Runs `perplex eval` on one task file; expects exit code 2 and an error naming `expected`.
fn rejects(task: &str, contents: &str, expected: &[&str]) {
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let scratch = Scratch::new(&format!("bad-{}", CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let file = scratch.write("task.jsonl", contents);
    let output = perplex(&["eval", "--model", model_dir().to_str().unwrap(), "--task", task, "--data", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
    }
}

#[test]
fn bad_task_files_are_clear_errors() {
    rejects("mc", "{\"id\":1,\"context\":\"a\",\"gold\":0}\n", &["document 0", "missing field \"choices\""]);
    rejects(
        "mc",
        "{\"id\":1,\"context\":\"a\",\"choices\":[\"b\",\"c\"],\"gold\":2}\n",
        &["gold index 2 is out of range for 2 choices"],
    );
    rejects("mc", "{\"id\":1,\"context\":\"a\",\"choices\":[\"b\"],\"gold\":-1}\n", &["gold index -1"]);
    rejects("mc", "{\"id\":1,\"context\":\"a\",\"choices\":[],\"gold\":0}\n", &["the choice list is empty"]);
    rejects("mc", "{\"id\":1,\"contexts\":[\"a\"],\"gold\":0}\n", &["missing field \"continuation\""]);
    rejects("loglik", "{\"id\":1,\"context\":\"a\"}\n", &["missing field \"continuation\""]);
    rejects("loglik", "{\"id\":1,\"context\":\"a\",\"continuation\":\"\"}\n", &["no tokens of its own"]);
    rejects("mc", "{\"id\":1,\"context\":\"a\"\n", &["task.jsonl:1: invalid JSON"]);
    rejects("hellaswag", "{\"ctx_a\":\"a\"}\n", &["missing field", "hellaswag"]);
    rejects("hellaswag2", "{}\n", &["unknown task \"hellaswag2\"", "hellaswag", "arc_easy", "mmlu", "loglik"]);
}

#[test]
fn eval_writes_a_harness_shaped_results_file_and_samples() {
    let scratch = Scratch::new("cli");
    let json = scratch.0.join("results.json");
    let samples = scratch.0.join("samples.jsonl");
    let output = perplex(&[
        "eval",
        "--model",
        model_dir().to_str().unwrap(),
        "--task",
        "mc",
        "--data",
        data("mc.jsonl").to_str().unwrap(),
        "--task",
        "loglik",
        "--data",
        data("loglik.jsonl").to_str().unwrap(),
        "--limit",
        "3",
        "--json",
        json.to_str().unwrap(),
        "--samples",
        samples.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("acc_norm") && stdout.contains("perplexity"), "{stdout}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in ["acc,none", "acc_stderr,none", "acc_norm,none", "acc_bytes,none", "prob_correct,none", "brier_score,none"] {
        assert!(results["results"]["mc"][key].is_number(), "results.mc.{key}: {}", results["results"]["mc"]);
    }
    assert!(results["results"]["loglik"]["perplexity,none"].is_number());
    assert_eq!(results["n-shot"]["mc"], 0);
    assert_eq!(results["versions"]["mc"], 1.0);
    assert_eq!(results["n-samples"]["mc"]["effective"], 3);
    assert_eq!(results["config"]["limit"], 3);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3 + 3 + 4 + 3); // the first three mc documents' choices, three cloze requests
    for field in ["task", "doc_id", "choice", "context", "continuation", "ll", "is_greedy", "tokens"] {
        assert!(lines.iter().all(|l| !l[field].is_null()), "samples lack {field}");
    }
}
