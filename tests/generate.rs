//! Greedy generation (src/generate): every generated token is the argmax of the CPU reference's
//! logits over the same tokens, for every model family; the answers do not depend on the batch,
//! the request order or the device running out of memory; bad requests are clear errors.

mod common;

use common::cli::{assert_bad_input, assert_success, perplex, perplex_command, Scratch};
use common::{gpu, repo};
use perplex::forward::Batch;
use perplex::generate::{generate, GenOptions, GenRequest, Generation, Stop};
use perplex::model::{load_spec, Checkpoint};
use perplex::reference;
use perplex::Model;

/// Prompts of awkward lengths (the longest past the 64-row prefill step and every tile size).
fn prompts() -> Vec<String> {
    let verse = "In the beginning God created the heaven and the earth. And the earth was without form, and void; \
                 and darkness was upon the face of the deep. ";
    vec![
        "KING HENRY:".to_string(),
        "To be, or not to be".to_string(),
        verse.repeat(3),
        "And God said,".to_string(),
        "O".to_string(),
        format!("{}And the evening and the morning were", verse.repeat(2)),
        "ROMEO:\nBut, soft! what light through yonder window breaks?\nJULIET:".to_string(),
    ]
}

fn requests(max_gen_toks: usize, until: &[&str]) -> Vec<GenRequest> {
    prompts().into_iter().map(|context| GenRequest { context, until: until.iter().map(|s| s.to_string()).collect(), max_gen_toks }).collect()
}

fn run(model: &Model, requests: &[GenRequest], batch: Batch) -> Vec<Generation> {
    generate(model, requests, &GenOptions { max_length: None, batch, progress: None }).unwrap().results
}

/// Logit margins below this count as ties that f32 rounding may break either way.
const NEAR_TIE: f32 = 1e-4;

/// Every generated token is the CPU reference's argmax after the context and the tokens before
/// it, until the first step where the reference's top two logits are a near tie (after which the
/// continuations may rightly differ).
fn assert_reference_argmax(dir: &std::path::Path, max_gen_toks: usize) {
    let model = Model::open(dir.to_str().unwrap(), gpu()).unwrap();
    let spec = load_spec(dir).unwrap();
    let weights = reference::load_host_weights(&spec, &Checkpoint::open(dir).unwrap()).unwrap();
    let requests: Vec<GenRequest> = requests(max_gen_toks, &[]).into_iter().take(4).collect();
    let answers = run(&model, &requests, Batch::Auto);
    let (mut compared, mut generated_total) = (0, 0);
    for (request, answer) in requests.iter().zip(&answers) {
        // The context as the model saw it: left-truncated to leave room for the answer.
        let encoded = perplex::generate::encode_context(&model, &request.context).unwrap();
        let context = encoded[encoded.len() - answer.context_tokens..].to_vec();
        assert_eq!(answer.truncated, answer.context_tokens < encoded.len());
        let mut tokens = context.clone();
        tokens.extend(&answer.tokens[..answer.tokens.len() - 1]);
        let logits = reference::logits(&spec, &weights, &tokens);
        for (step, &generated) in answer.tokens.iter().enumerate() {
            let row = &logits[(context.len() - 1 + step) * spec.vocab_size..][..spec.vocab_size];
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            if row[order[0]] - row[order[1]] < NEAR_TIE {
                break;
            }
            compared += 1;
            assert_eq!(
                generated as usize,
                order[0],
                "{}: step {step} of {:?}: generated {generated}, the reference's argmax is {} (margin {})",
                dir.display(),
                request.context,
                order[0],
                row[order[0]] - row[order[1]]
            );
        }
        assert!(answer.tokens.len() == max_gen_toks || answer.stop == Stop::EndOfText, "{answer:?}");
        generated_total += answer.tokens.len();
    }
    // Near ties are rare: almost every step is checked.
    assert!(compared * 10 >= generated_total * 9, "{}: only {compared} of {generated_total} steps compared", dir.display());
}

#[test]
fn generated_tokens_are_the_reference_argmax_in_every_family() {
    for variant in common::TINY_VARIANTS {
        assert_reference_argmax(&repo().join("models/tiny").join(variant), 24);
    }
}

#[test]
fn default_model_generates_the_reference_argmax() {
    assert_reference_argmax(&repo().join("models/default"), 40);
}

#[test]
fn answers_do_not_depend_on_batch_or_order() {
    let model = Model::open(repo().join("models/default").to_str().unwrap(), gpu()).unwrap();
    let requests = requests(48, &["\n\n", "KING"]);
    let one = run(&model, &requests, Batch::Windows(1));
    assert!(one.iter().any(|a| matches!(a.stop, Stop::Until(_))) && one.iter().any(|a| a.stop == Stop::MaxTokens), "{one:?}");
    for batch in [Batch::Windows(3), Batch::Windows(8), Batch::Auto] {
        assert_eq!(run(&model, &requests, batch), one, "batch {batch:?}");
    }
    // Reversed and interleaved.
    let order: Vec<usize> = (0..requests.len()).rev().step_by(2).chain((0..requests.len()).rev().skip(1).step_by(2)).collect();
    let shuffled: Vec<GenRequest> = order.iter().map(|&i| requests[i].clone()).collect();
    let answers = run(&model, &shuffled, Batch::Windows(3));
    for (&i, answer) in order.iter().zip(&answers) {
        assert_eq!(answer, &one[i], "request {i} in shuffled order");
    }
}

#[test]
fn answers_are_cut_before_the_first_stop_string() {
    let model = Model::open(repo().join("models/default").to_str().unwrap(), gpu()).unwrap();
    let free = run(&model, &requests(48, &[]), Batch::Auto);
    let stops = ["\n", ",", "the"];
    let cut = run(&model, &requests(48, &stops), Batch::Auto);
    for (free, cut) in free.iter().zip(&cut) {
        let full = model.tokenizer.decode_text(&free.tokens);
        let want = perplex::generate::cut_at_stops(&full, &stops.map(String::from));
        assert!(full.starts_with(&cut.text) && cut.text == want, "{free:?} vs {cut:?}");
        assert!(stops.iter().all(|s| !cut.text.contains(s)));
        // Generation stops at the token that completes the stop string.
        assert!(free.tokens.starts_with(&cut.tokens));
    }
}

/// The device running out of memory in the middle of decoding: generation continues with fewer
/// sequences at a time and the answers are the same.
#[test]
fn out_of_memory_halves_the_slots_and_keeps_the_answers() {
    let scratch = Scratch::new("generate-oom");
    let model = repo().join("models/default");
    let args = |json: &std::path::Path| {
        let mut args: Vec<String> = ["generate", "--model", model.to_str().unwrap(), "--max-tokens", "20", "--batch", "8", "--json", json.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        for prompt in prompts() {
            args.extend(["--prompt".to_string(), prompt]);
        }
        args
    };
    let (plain, limited) = (scratch.join("plain.jsonl"), scratch.join("limited.jsonl"));
    assert_success(&perplex(args(&plain)));
    let output = perplex_command().args(args(&limited)).env("PERPLEX_FAIL_WINDOWS_ABOVE", "2").output().unwrap();
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ran out of memory") && stderr.contains("generating 3 sequences at once"), "{stderr}");
    assert_eq!(std::fs::read_to_string(plain).unwrap(), std::fs::read_to_string(limited).unwrap());
}

#[test]
fn bad_generation_requests_are_clear_errors() {
    let model = repo().join("models/default");
    let model = model.to_str().unwrap();
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", model, "--prompt", "KING HENRY:"];
        args.extend(extra);
        perplex(args)
    };
    assert_bad_input(&generate(&["--max-tokens", "0"]), &["max_gen_toks is 0"]);
    assert_bad_input(&generate(&["--max-tokens", "5000"]), &["max_gen_toks 5000", "no room"]);
    assert_bad_input(&generate(&["--max-tokens", "20", "--max-length", "20"]), &["no room"]);
    assert_bad_input(&generate(&["--until", ""]), &["empty"]);
    assert_bad_input(
        &generate(&["--max-length", "1024"]),
        &["--max-length 1024", "512 positions"],
    );
    let missing = perplex(["generate", "--model", model]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--prompt"));
}
