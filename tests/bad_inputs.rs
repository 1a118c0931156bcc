//! The `perplex` binary on the bad inputs issue 7 names that tests/cli.rs and tests/eval.rs do not
//! already cover: GGUF files (not GGUF, truncated, unsupported version or byte order, unknown
//! architecture, unknown or unreadable quantization type, unsupported tokenizer, counts no file
//! could hold), safetensors tables (unsupported dtype, a missing tensor), config.json fields the
//! engine does not implement or no model has, hub ids and revisions missing from the local cache,
//! and task data that cannot be read (corrupt Arrow and Parquet, unknown formats, datasets without
//! the split or the files a task needs, too few few-shot examples). Each must exit with code 2 and
//! one `error: ` message that names the problem, and nothing may panic.
//!
//! Every test builds its inputs in its own scratch directory under the system temp dir.

mod common;

use common::cli::{assert_bad_input, assert_success, edit_config, eval, perplex_command, ppl, tiny_model, Scratch};
use common::repo;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A text the tiny GGUF of these tests can encode with its eight tokens.
fn ab_text(scratch: &Scratch) -> PathBuf {
    scratch.write("doc.txt", "a b a b b a a b a b a b b b a a b a b a\n")
}

#[test]
fn error_kinds_have_their_exit_codes() {
    // No user input reaches an internal error on a working device; the mapping is fixed here.
    assert_eq!(perplex::Error::bad_input("x").exit_code(), 2);
    assert_eq!(perplex::Error::internal("x").exit_code(), 1);
}

// ---------------------------------------------------------------------------------------------
// GGUF files

#[path = "common/gguf_builder.rs"]
mod gguf_builder;
use gguf_builder::{Builder, LlamaShape};

/// Small f32 values that vary, for the weights of the test files.
fn pattern(dims: &[u64]) -> Vec<f32> {
    (0..dims.iter().product::<u64>()).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect()
}

const TOKENS: [&str; 8] = ["<s>", "</s>", "a", "b", "Ġ", "Ġa", "Ġb", "\n"];

/// A complete two-layer llama GGUF (F32 weights, a byte-level BPE vocabulary of 8 tokens) that
/// `perplex ppl` scores; `edit` breaks one thing before the tensors are written.
fn tiny_gguf(edit: impl FnOnce(&mut Builder, &mut Vec<(&'static str, u32)>)) -> Vec<u8> {
    let (hidden, ff, vocab) = (8u64, 16u64, TOKENS.len() as u64);
    let mut g = Builder::llama(LlamaShape { layers: 2, context: 64, hidden: hidden as u32, ff: ff as u32, heads: 2, kv_heads: 2 });
    g.string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", "default")
        .strings("tokenizer.ggml.tokens", &TOKENS)
        .strings("tokenizer.ggml.merges", &["Ġ a", "Ġ b"])
        .u32("tokenizer.ggml.bos_token_id", 0)
        .u32("tokenizer.ggml.eos_token_id", 1);
    // (name, type id) of the tensors whose storage a test changes.
    let mut types: Vec<(&'static str, u32)> = Vec::new();
    edit(&mut g, &mut types);
    let type_of = |name: &str| types.iter().find(|(n, _)| *n == name).map_or(0, |&(_, t)| t);
    let tensor = |g: &mut Builder, name: &str, dims: &[u64]| {
        let t = type_of(name);
        if t == 0 {
            g.f32_tensor(name, dims, &pattern(dims));
        } else {
            let n: u64 = dims.iter().product();
            g.tensor(name, dims, t, &vec![0u8; (n * 4) as usize]);
        }
    };
    tensor(&mut g, "token_embd.weight", &[hidden, vocab]);
    tensor(&mut g, "output_norm.weight", &[hidden]);
    for layer in 0..2 {
        for (module, dims) in [
            ("attn_norm.weight", vec![hidden]),
            ("ffn_norm.weight", vec![hidden]),
            ("attn_q.weight", vec![hidden, hidden]),
            ("attn_k.weight", vec![hidden, hidden]),
            ("attn_v.weight", vec![hidden, hidden]),
            ("attn_output.weight", vec![hidden, hidden]),
            ("ffn_gate.weight", vec![hidden, ff]),
            ("ffn_up.weight", vec![hidden, ff]),
            ("ffn_down.weight", vec![ff, hidden]),
        ] {
            tensor(&mut g, &format!("blk.{layer}.{module}"), &dims);
        }
    }
    g.bytes()
}

fn no_edit(_: &mut Builder, _: &mut Vec<(&'static str, u32)>) {}

#[test]
fn the_tiny_gguf_of_these_tests_scores() {
    let scratch = Scratch::new("gguf-ok");
    let model = scratch.write("tiny.gguf", tiny_gguf(no_edit));
    assert_success(&ppl(&model, ab_text(&scratch), &[]));
}

#[test]
fn gguf_that_is_not_gguf() {
    let scratch = Scratch::new("gguf-not");
    let model = scratch.write("model.gguf", "{\"this is\": \"json\"}");
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["model.gguf", "not a GGUF file"]);
}

#[test]
fn gguf_truncated_in_its_metadata_and_in_its_tensor_data() {
    let scratch = Scratch::new("gguf-truncated");
    let bytes = tiny_gguf(no_edit);
    let head = scratch.write("head.gguf", &bytes[..200]);
    assert_bad_input(&ppl(&head, ab_text(&scratch), &[]), &["head.gguf", "tensor count is 20", "truncated"]);
    let tail = scratch.write("tail.gguf", &bytes[..bytes.len() - 100]);
    assert_bad_input(&ppl(&tail, ab_text(&scratch), &[]), &["tail.gguf", "beyond the end", "truncated"]);
}

#[test]
fn gguf_of_an_unsupported_version_or_byte_order() {
    let scratch = Scratch::new("gguf-version");
    let mut bytes = tiny_gguf(no_edit);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let v1 = scratch.write("v1.gguf", &bytes);
    assert_bad_input(&ppl(&v1, ab_text(&scratch), &[]), &["GGUF version 1 is not supported"]);
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let big = scratch.write("big.gguf", &bytes);
    assert_bad_input(&ppl(&big, ab_text(&scratch), &[]), &["big-endian"]);
}

#[test]
fn gguf_of_an_unknown_architecture() {
    let scratch = Scratch::new("gguf-arch");
    let bytes = tiny_gguf(no_edit);
    // Same length, so every offset stays valid.
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    let mut renamed = bytes.clone();
    renamed[at..at + 5].copy_from_slice(b"mamba");
    let model = scratch.write("mamba.gguf", &renamed);
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["unknown architecture 'mamba'", "llama, qwen2"]);
}

#[test]
fn gguf_with_an_unknown_quantization_type() {
    let scratch = Scratch::new("gguf-unknown-type");
    let model = scratch.write("t.gguf", tiny_gguf(|_, types| types.push(("output_norm.weight", 99))));
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["output_norm.weight", "unknown quantization type id 99"]);
}

#[test]
fn gguf_with_a_quantization_type_perplex_does_not_read() {
    let scratch = Scratch::new("gguf-unsupported-type");
    // I32 (26) takes 4 bytes per value, as F32 does.
    let model = scratch.write("t.gguf", tiny_gguf(|_, types| types.push(("blk.1.ffn_up.weight", 26))));
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["blk.1.ffn_up.weight", "stored as I32", "does not read"]);
}

#[test]
fn gguf_with_an_unsupported_tokenizer() {
    let scratch = Scratch::new("gguf-tokenizer");
    let bytes = tiny_gguf(no_edit);
    let at = bytes.windows(4).position(|w| w == b"gpt2").unwrap();
    let mut renamed = bytes.clone();
    renamed[at..at + 4].copy_from_slice(b"bert");
    let model = scratch.write("t.gguf", &renamed);
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["tokenizer model 'bert' is not supported"]);
}

#[test]
fn gguf_claiming_more_layers_than_any_model() {
    let scratch = Scratch::new("gguf-layers");
    let bytes = tiny_gguf(no_edit);
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    let mut patched = bytes.clone();
    patched[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let model = scratch.write("t.gguf", &patched);
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["'llama.block_count' is 4294967295", "at most 65536"]);
}

#[test]
fn gguf_context_shorter_than_ctx() {
    let scratch = Scratch::new("gguf-ctx");
    let model = scratch.write("t.gguf", tiny_gguf(no_edit));
    assert_bad_input(&ppl(&model, ab_text(&scratch), &["--ctx", "65"]), &["--ctx 65", "64 positions"]);
}

#[test]
fn gguf_with_llama3_rope_factors() {
    let scratch = Scratch::new("gguf-rope-freqs");
    let model = scratch.write("t.gguf", tiny_gguf(|g, _| {
        g.f32_tensor("rope_freqs.weight", &[4], &pattern(&[4]));
    }));
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["rope_freqs.weight", "cannot reproduce"]);
}

// ---------------------------------------------------------------------------------------------
// safetensors and config.json

/// Rewrites the JSON header of `<dir>/model.safetensors` (same length, so offsets stay valid).
fn edit_safetensors_header(dir: &Path, edit: impl FnOnce(&str) -> String) {
    let path = dir.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let edited = edit(header);
    assert_eq!(edited.len(), header.len(), "the edit must keep the header's length");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(edited.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    fs::write(path, out).unwrap();
}

#[test]
fn safetensors_of_an_unsupported_dtype() {
    let scratch = Scratch::new("st-dtype");
    let model = scratch.tiny_copy("model");
    edit_safetensors_header(&model, |h| h.replacen("\"F32\"", "\"I32\"", 1));
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["model.safetensors", "dtype I32", "f32, f16 and bf16"]);
}

#[test]
fn safetensors_without_a_tensor_the_config_needs() {
    let scratch = Scratch::new("st-missing");
    let model = scratch.tiny_copy("model");
    edit_safetensors_header(&model, |h| h.replacen("model.norm.weight", "model.norm.weighX", 1));
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["has no tensor 'model.norm.weight'"]);
}

#[test]
fn config_with_partial_rotary_embeddings_in_a_llama() {
    let scratch = Scratch::new("cfg-partial");
    let model = scratch.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("partial_rotary_factor".into(), 0.5.into());
    });
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["config.json", "partial_rotary_factor 0.5", "refuses"]);
}

#[test]
fn config_with_an_unsupported_activation() {
    let scratch = Scratch::new("cfg-act");
    let model = scratch.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("hidden_act".into(), "relu2".into());
    });
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["activation \"relu2\"", "supported: silu"]);
}

#[test]
fn config_with_more_layers_than_any_model() {
    let scratch = Scratch::new("cfg-layers");
    let model = scratch.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("num_hidden_layers".into(), 1_000_000_000_000u64.into());
    });
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["1000000000000 layers", "at most 65536"]);
}

#[test]
fn config_with_dimensions_whose_weights_cannot_exist() {
    let scratch = Scratch::new("cfg-dims");
    let model = scratch.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("vocab_size".into(), (1u64 << 62).into());
    });
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["would not fit in memory"]);
}

#[test]
fn config_with_a_zero_sliding_window_pattern() {
    let scratch = Scratch::new("cfg-pattern");
    let model = scratch.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("model_type".into(), "gemma3_text".into());
        c.insert("sliding_window_pattern".into(), 0.into());
    });
    assert_bad_input(&ppl(&model, ab_text(&scratch), &[]), &["sliding_window_pattern 0"]);
}

// ---------------------------------------------------------------------------------------------
// Hub ids and revisions in the local Hugging Face cache

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A hub cache holding `org/tiny` at branch main (commit COMMIT).
fn hub_cache(scratch: &Scratch) -> PathBuf {
    let cache = scratch.join("hub");
    let repo = cache.join("models--org--tiny");
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), COMMIT).unwrap();
    let snapshot = repo.join("snapshots").join(COMMIT);
    fs::create_dir_all(&snapshot).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        fs::copy(tiny_model().join(name), snapshot.join(name)).unwrap();
    }
    cache
}

fn ppl_hub(cache: &Path, data: &Path, model: &str, revision: Option<&str>) -> Output {
    let mut args = vec!["ppl", "--model", model, "--data", data.to_str().unwrap()];
    if let Some(revision) = revision {
        args.extend(["--revision", revision]);
    }
    perplex_command().args(args).env("HF_HUB_CACHE", cache).output().expect("run the perplex binary")
}

#[test]
fn hub_revision_not_in_the_cache() {
    let scratch = Scratch::new("hub-revision");
    let cache = hub_cache(&scratch);
    let out = ppl_hub(&cache, &ab_text(&scratch), "org/tiny", Some("step1000"));
    assert_bad_input(&out, &["--model org/tiny", "revision 'step1000' is not in the cache", "has: main", "download it first", "--revision step1000"]);
}

#[test]
fn hub_revision_whose_snapshot_is_missing() {
    let scratch = Scratch::new("hub-snapshot");
    let cache = hub_cache(&scratch);
    fs::write(cache.join("models--org--tiny/refs/step1"), "fedcba9876543210fedcba9876543210fedcba98\n").unwrap();
    let out = ppl_hub(&cache, &ab_text(&scratch), "org/tiny", Some("step1"));
    assert_bad_input(&out, &["revision 'step1'", "fedcba9876543210fedcba9876543210fedcba98", "snapshot is missing"]);
}

#[test]
fn hub_id_not_in_the_cache() {
    let scratch = Scratch::new("hub-id");
    let cache = hub_cache(&scratch);
    let out = ppl_hub(&cache, &ab_text(&scratch), "org/other", None);
    assert_bad_input(&out, &["--model org/other", "not in the Hugging Face cache", "models--org--other", "HF_HUB_CACHE"]);
}

#[test]
fn hub_id_in_the_cache_scores() {
    let scratch = Scratch::new("hub-ok");
    let cache = hub_cache(&scratch);
    assert_success(&ppl_hub(&cache, &ab_text(&scratch), "org/tiny", Some(COMMIT)));
}

#[test]
fn revision_with_a_model_path() {
    let scratch = Scratch::new("hub-path");
    let out = ppl(tiny_model(), ab_text(&scratch), &["--revision", "main"]);
    assert_bad_input(&out, &["--revision applies to hub ids"]);
}

// ---------------------------------------------------------------------------------------------
// Task data

fn fuzz_input(path: &str) -> PathBuf {
    repo().join("fuzz").join(path)
}

#[test]
fn task_data_of_an_unknown_format() {
    let scratch = Scratch::new("task-format");
    let data = scratch.write("task.csv", "context,choices,gold\n");
    assert_bad_input(&eval("mc", &data, &[]), &["task.csv", "unknown data format", ".jsonl"]);
}

#[test]
fn task_data_arrow_that_makes_arrow_ipc_panic() {
    // An input fuzzing found: arrow-ipc slices a buffer by a length from the file and panics.
    let scratch = Scratch::new("task-arrow-panic");
    let data = scratch.write("data.arrow", fs::read(fuzz_input("regressions/arrow/buffer-offset-beyond-body-ba7d12b1")).unwrap());
    assert_bad_input(&eval("mc", &data, &[]), &["data.arrow", "cannot read Arrow data", "corrupt"]);
}

#[test]
fn task_data_arrow_file_with_a_footer_longer_than_the_file() {
    let scratch = Scratch::new("task-arrow-footer");
    let data = scratch.write("data.arrow", fs::read(fuzz_input("regressions/arrow/file-footer-length-2gb.arrow")).unwrap());
    assert_bad_input(&eval("mc", &data, &[]), &["data.arrow", "cannot read Arrow data", "footer claims 2147483632 bytes"]);
}

#[test]
fn task_data_truncated_arrow_and_parquet() {
    let scratch = Scratch::new("task-truncated");
    let arrow = fs::read(repo().join("tests/eval-data/mc-dataset/data-00000-of-00001.arrow")).unwrap();
    let data = scratch.write("cut.arrow", &arrow[..arrow.len() / 2]);
    assert_bad_input(&eval("mc", &data, &[]), &["cut.arrow", "cannot read Arrow data"]);
    let parquet = fs::read(repo().join("tests/eval-data/mc.parquet")).unwrap();
    let data = scratch.write("cut.parquet", &parquet[..parquet.len() / 2]);
    assert_bad_input(&eval("mc", &data, &[]), &["cut.parquet", "cannot read Parquet data"]);
    let mut bad_footer = parquet.clone();
    let n = bad_footer.len();
    bad_footer[n - 8..n - 4].copy_from_slice(&i32::MAX.to_le_bytes());
    let data = scratch.write("footer.parquet", &bad_footer);
    assert_bad_input(&eval("mc", &data, &[]), &["footer.parquet", "cannot read Parquet data"]);
}

#[test]
fn task_data_json_array_with_a_non_object() {
    let scratch = Scratch::new("task-json-array");
    let data = scratch.write("task.json", r#"[{"context": "a", "choices": ["b"], "gold": 0}, 3]"#);
    assert_bad_input(&eval("mc", &data, &[]), &["task.json", "element 1 is not a JSON object"]);
}

#[test]
fn task_data_gz_that_is_not_gzip() {
    let scratch = Scratch::new("task-gz");
    let data = scratch.write("task.jsonl.gz", "{\"context\": \"a\"}\n");
    assert_bad_input(&eval("mc", &data, &[]), &["task.jsonl.gz", "cannot read"]);
}

#[test]
fn task_dataset_directory_without_arrow_files() {
    let scratch = Scratch::new("task-dataset-empty");
    let dir = scratch.join("validation");
    scratch.write("validation/state.json", r#"{"_data_files": [], "_split": "validation"}"#);
    assert_bad_input(&eval("mc", &dir, &[]), &["validation", "no data-*.arrow files"]);
}

#[test]
fn task_dataset_dict_without_the_split_the_task_evaluates() {
    let scratch = Scratch::new("task-dataset-split");
    let dir = scratch.join("dict");
    let arrow = fs::read(repo().join("tests/eval-data/mc-dataset/data-00000-of-00001.arrow")).unwrap();
    scratch.write("dict/train/data-00000-of-00001.arrow", &arrow);
    scratch.write("dict/dataset_dict.json", r#"{"splits": ["train"]}"#);
    assert_bad_input(&eval("arc_easy", &dir, &[]), &["arc_easy evaluates one of the splits", "\"test\"", "\"validation\"", "\"train\""]);
}

#[test]
fn task_data_with_fewer_documents_than_few_shot_examples() {
    let scratch = Scratch::new("task-fewshot");
    let data = scratch.write("task.jsonl", "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n");
    let out = eval("mc", &data, &["--fewshot", "3"]);
    assert_bad_input(&out, &["task.jsonl", "--fewshot 3 needs more few-shot documents than the 0 available"]);
}

#[test]
fn task_data_limited_to_no_documents() {
    let scratch = Scratch::new("task-limit");
    let data = scratch.write("task.jsonl", "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n");
    assert_bad_input(&eval("mc", &data, &["--limit", "0"]), &["no documents for mc"]);
}

#[test]
fn task_data_answer_key_not_among_the_labels() {
    let scratch = Scratch::new("task-answer-key");
    let line = r#"{"id": "q1", "question": "Q?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "E"}"#;
    let data = scratch.write("arc.jsonl", format!("{line}\n"));
    assert_bad_input(&eval("arc_easy", &data, &[]), &["arc.jsonl", "document 0", "answerKey \"E\" is not one of the labels"]);
}

#[test]
fn mmlu_subject_that_does_not_exist() {
    let scratch = Scratch::new("task-mmlu");
    let data = scratch.write("mmlu.jsonl", "{}\n");
    assert_bad_input(&eval("mmlu_astrology", &data, &[]), &["unknown task \"mmlu_astrology\"", "abstract_algebra"]);
}

#[test]
fn tokenizer_that_cannot_encode_the_text() {
    // A WordLevel vocabulary whose unknown token is not in it fails on any unknown word.
    let scratch = Scratch::new("tok-unk");
    let model = scratch.tiny_copy("model");
    fs::write(
        model.join("tokenizer.json"),
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"a":0,"b":1,"<s>":2},"unk_token":"<unk>"}}"#,
    )
    .unwrap();
    fs::write(model.join("tokenizer_config.json"), r#"{"bos_token": "<s>"}"#).unwrap();
    let data = scratch.write("words.txt", "a b zzz a\n");
    assert_bad_input(&ppl(&model, data, &[]), &["tokenizer cannot encode the text", "Missing [UNK] token", "tokenizer.json"]);
}

/// A window longer than one pass holds on the device (each activation buffer in one storage
/// binding: 1 MiB holds 1,310 rows of the tiny Llama's 800-byte widest row) is the user's --ctx
/// to lower, not an internal error; `compare` checks both models.
#[test]
fn ctx_longer_than_one_pass_holds() {
    let scratch = Scratch::new("ctx-pass");
    let model = scratch.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("max_position_embeddings".into(), 4096.into());
    });
    let text = ab_text(&scratch);
    let phrases = ["--ctx 2000", "does not fit in one pass", "use --ctx 1310 or less"];
    assert_bad_input(&ppl(&model, &text, &["--ctx", "2000", "--max-binding-mib", "1"]), &phrases);
    let compare = perplex_command()
        .args(["compare", "--ctx", "2000", "--max-binding-mib", "1", "--base"])
        .arg(&model)
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&text)
        .output()
        .unwrap();
    assert_bad_input(&compare, &phrases);
}
