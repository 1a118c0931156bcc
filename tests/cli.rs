//! The `perplex` binary on bad inputs: every mistake a user can make exits with code 2 and one
//! `error: ...` message that names the file or the flag at fault and says what to do, never a
//! panic. Plus one end-to-end run of `perplex ppl` and `perplex devices` that must succeed.
//!
//! Each test builds its inputs in its own directory under the system temp dir, usually a copy of
//! the committed tiny model with one thing broken, and removes it when done.

mod common;

use common::cli::{assert_bad_input, assert_success, clean_stderr, edit_config, edit_json, perplex, ppl, tiny_model, Scratch};
use common::repo;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// --model

#[test]
fn model_dir_does_not_exist() {
    let s = Scratch::new("model_dir_does_not_exist");
    let data = s.text("doc.txt");
    let missing = s.join("no-such-model");
    let out = ppl(&missing, &data, &[]);
    assert_bad_input(&out, &["no-such-model", "no such directory"]);
}

#[test]
fn model_path_is_a_file() {
    let s = Scratch::new("model_path_is_a_file");
    let data = s.text("doc.txt");
    let file = s.write("weights.safetensors", b"not a directory");
    let out = ppl(&file, &data, &[]);
    assert_bad_input(&out, &["weights.safetensors", "is a file", "model directory"]);
}

#[test]
fn model_dir_without_config() {
    let s = Scratch::new("model_dir_without_config");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::remove_file(model.join("config.json")).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["no config.json", "Hugging Face model directory"]);
}

#[test]
fn missing_safetensors() {
    let s = Scratch::new("missing_safetensors");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::remove_file(model.join("model.safetensors")).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["no model.safetensors", "safetensors"]);
}

#[test]
fn missing_tokenizer_json() {
    let s = Scratch::new("missing_tokenizer_json");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::remove_file(model.join("tokenizer.json")).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["tokenizer.json", "missing"]);
}

#[test]
fn truncated_safetensors() {
    let s = Scratch::new("truncated_safetensors");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    let path = model.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["model.safetensors", "not a valid safetensors file", "truncated", "download it again"]);
}

#[test]
fn safetensors_shorter_than_its_header() {
    let s = Scratch::new("safetensors_shorter_than_its_header");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    let path = model.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    // The length prefix and a few bytes of the JSON header only.
    fs::write(&path, &bytes[..20]).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn sharded_index_names_a_missing_shard() {
    let s = Scratch::new("sharded_index_names_a_missing_shard");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::rename(model.join("model.safetensors"), model.join("model-00001-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({
        "metadata": {"total_size": 0},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        }
    });
    fs::write(model.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing", "download the complete checkpoint"]);
}

#[test]
fn sharded_index_with_a_shard_outside_the_directory() {
    let s = Scratch::new("sharded_index_with_a_shard_outside_the_directory");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": "../model.safetensors"}});
    fs::write(model.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["model.safetensors.index.json", "leaves the model directory"]);
}

#[test]
fn sharded_index_that_is_not_json() {
    let s = Scratch::new("sharded_index_that_is_not_json");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::write(model.join("model.safetensors.index.json"), "{\"weight_map\": ").unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["model.safetensors.index.json", "invalid JSON"]);
}

// ---------------------------------------------------------------------------------------------
// config.json

#[test]
fn config_hidden_size_disagrees_with_tensors() {
    let s = Scratch::new("config_hidden_size_disagrees_with_tensors");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("hidden_size".into(), 96.into());
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["model.safetensors", "has shape", "config.json implies", "do not belong together"]);
}

#[test]
fn config_unknown_model_type() {
    let s = Scratch::new("config_unknown_model_type");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("model_type".into(), "gpt_bigcode".into());
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "gpt_bigcode", "not supported", "llama"]);
}

#[test]
fn config_without_model_type() {
    let s = Scratch::new("config_without_model_type");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.remove("model_type");
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "missing \"model_type\""]);
}

#[test]
fn config_missing_required_key() {
    let s = Scratch::new("config_missing_required_key");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.remove("num_hidden_layers");
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "missing \"num_hidden_layers\""]);
}

#[test]
fn config_key_of_the_wrong_type() {
    let s = Scratch::new("config_key_of_the_wrong_type");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("hidden_size".into(), "72".into());
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "\"hidden_size\" should be a non-negative integer"]);
}

#[test]
fn config_unsupported_rope_scaling() {
    let s = Scratch::new("config_unsupported_rope_scaling");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("rope_scaling".into(), serde_json::json!({"rope_type": "dynamic", "factor": 2.0}));
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "rope_scaling type \"dynamic\"", "supported: linear, llama3"]);
}

#[test]
fn config_rope_scaling_without_its_parameters() {
    let s = Scratch::new("config_rope_scaling_without_its_parameters");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("rope_scaling".into(), serde_json::json!({"rope_type": "llama3", "factor": 8.0}));
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "rope_scaling \"llama3\" needs"]);
}

#[test]
fn config_heads_that_do_not_group() {
    let s = Scratch::new("config_heads_that_do_not_group");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("num_key_value_heads".into(), 4.into());
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "cannot be grouped"]);
}

#[test]
fn config_not_json() {
    let s = Scratch::new("config_not_json");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::write(model.join("config.json"), "{\"model_type\": \"llama\", hidden_size: 72").unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["config.json", "invalid JSON"]);
}

// ---------------------------------------------------------------------------------------------
// tokenizer

const TOKENIZER_MISMATCH: &[&str] = &["tokenizer has", "embedding has only", "tokenizer.json does not belong to this model"];

#[test]
fn tokenizer_larger_than_the_embedding() {
    let s = Scratch::new("tokenizer_larger_than_the_embedding");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    // The tiny model's BPE vocabulary plus 1000 added tokens: 1000 more rows than the embedding.
    edit_json(&model.join("tokenizer.json"), |t| {
        let vocab = t["model"]["vocab"].as_object().unwrap().len();
        let added = t["added_tokens"].as_array_mut().unwrap();
        let first = vocab + added.len();
        for i in 0..1000 {
            added.push(serde_json::json!({
                "id": first + i,
                "content": format!("<extra_{i}>"),
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": true
            }));
        }
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, TOKENIZER_MISMATCH);
    assert!(clean_stderr(&out).contains("only 363 rows"), "{}", clean_stderr(&out));
}

#[test]
fn tokenizer_of_another_model() {
    let other = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/tokenizer.json");
    if !other.exists() {
        eprintln!("skipped: {} is not in this checkout", other.display());
        return;
    }
    let s = Scratch::new("tokenizer_of_another_model");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::copy(&other, model.join("tokenizer.json")).unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, TOKENIZER_MISMATCH);
}

#[test]
fn config_vocab_smaller_than_the_tokenizer() {
    // Only config.json's vocab_size shrinks: the tokenizer check comes before the weights' shapes.
    let s = Scratch::new("config_vocab_smaller_than_the_tokenizer");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    edit_config(&model, |c| {
        c.insert("vocab_size".into(), 300.into());
    });
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, TOKENIZER_MISMATCH);
    assert!(clean_stderr(&out).contains("only 300 rows"), "{}", clean_stderr(&out));
}

#[test]
fn tokenizer_json_not_json() {
    let s = Scratch::new("tokenizer_json_not_json");
    let data = s.text("doc.txt");
    let model = s.tiny_copy("model");
    fs::write(model.join("tokenizer.json"), "{\"model\": [").unwrap();
    let out = ppl(&model, &data, &[]);
    assert_bad_input(&out, &["tokenizer.json", "cannot load tokenizer"]);
}

// ---------------------------------------------------------------------------------------------
// --data

#[test]
fn data_file_empty() {
    let s = Scratch::new("data_file_empty");
    let data = s.write("empty.txt", b"");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["empty.txt", "no text to score"]);
}

#[test]
fn data_file_not_utf8() {
    let s = Scratch::new("data_file_not_utf8");
    let data = s.write("latin1.txt", b"caf\xe9 \xff\xfe and more");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["latin1.txt", "not UTF-8", "offset 3", "iconv"]);
}

#[test]
fn data_jsonl_line_without_the_field() {
    let s = Scratch::new("data_jsonl_line_without_the_field");
    let data = s.write("docs.jsonl", "{\"text\": \"first document\"}\n{\"content\": \"second document\"}\n");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["docs.jsonl:2", "no string field \"text\"", "--field"]);
}

#[test]
fn data_jsonl_with_another_field_name() {
    let s = Scratch::new("data_jsonl_with_another_field_name");
    let data = s.write("docs.jsonl", "{\"text\": \"first document\"}\n");
    let out = ppl(tiny_model(), &data, &["--field", "content"]);
    assert_bad_input(&out, &["docs.jsonl:1", "no string field \"content\""]);
}

#[test]
fn data_jsonl_invalid_json() {
    let s = Scratch::new("data_jsonl_invalid_json");
    let data = s.write("docs.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": unquoted}\n");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["docs.jsonl:3", "invalid JSON"]);
}

#[test]
fn data_jsonl_only_empty_texts() {
    let s = Scratch::new("data_jsonl_only_empty_texts");
    let data = s.write("docs.jsonl", "{\"text\": \"\"}\n{\"text\": \"\"}\n");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["docs.jsonl", "no text to score"]);
}

#[test]
fn data_file_missing() {
    let s = Scratch::new("data_file_missing");
    let data = s.join("nowhere.txt");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["nowhere.txt", "cannot read"]);
}

#[test]
fn data_path_is_a_directory() {
    let s = Scratch::new("data_path_is_a_directory");
    let out = ppl(tiny_model(), &s.path, &[]);
    assert_bad_input(&out, &[&s.path.display().to_string(), "cannot read"]);
}

#[test]
fn second_data_file_bad() {
    let s = Scratch::new("second_data_file_bad");
    let good = s.text("good.txt");
    let bad = s.write("bad.txt", b"");
    let out = perplex([
        OsStr::new("ppl"),
        OsStr::new("--model"),
        tiny_model().as_os_str(),
        OsStr::new("--data"),
        good.as_os_str(),
        bad.as_os_str(),
    ]);
    assert_bad_input(&out, &["bad.txt", "no text to score"]);
}

#[test]
fn data_dataset_with_several_splits() {
    let data = repo().join("tests/eval-data/arc-dict");
    let out = ppl(tiny_model(), &data, &["--field", "question"]);
    assert_bad_input(&out, &["arc-dict", "the splits", "\"test\"", "give the directory of the one to score"]);
}

#[test]
fn data_record_without_the_field() {
    let data = repo().join("tests/eval-data/mc.parquet");
    let out = ppl(tiny_model(), &data, &[]);
    assert_bad_input(&out, &["mc.parquet:1", "no string field \"text\"", "--field"]);
}

// ---------------------------------------------------------------------------------------------
// windows

#[test]
fn ctx_longer_than_the_model() {
    let s = Scratch::new("ctx_longer_than_the_model");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--ctx", "129"]);
    assert_bad_input(&out, &["--ctx 129", "128 positions", "max_position_embeddings", "--ctx 128 or less"]);
}

#[test]
fn ctx_too_short() {
    let s = Scratch::new("ctx_too_short");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--ctx", "1"]);
    assert_bad_input(&out, &["--ctx 1", "too short"]);
}

#[test]
fn stride_with_rolling_windows() {
    let s = Scratch::new("stride_with_rolling_windows");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--window", "rolling", "--stride", "16"]);
    assert_bad_input(&out, &["--stride", "--window sliding"]);
}

#[test]
fn stride_with_chunks() {
    let s = Scratch::new("stride_with_chunks");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--window", "chunks", "--stride", "16"]);
    assert_bad_input(&out, &["--stride", "--window sliding"]);
}

#[test]
fn stride_zero_with_sliding_windows() {
    let s = Scratch::new("stride_zero_with_sliding_windows");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--window", "sliding", "--stride", "0"]);
    assert_bad_input(&out, &["--stride 0", "between 1 and --ctx"]);
}

#[test]
fn stride_longer_than_ctx() {
    let s = Scratch::new("stride_longer_than_ctx");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--window", "sliding", "--ctx", "32", "--stride", "33"]);
    assert_bad_input(&out, &["--stride 33", "between 1 and --ctx (32)"]);
}

#[test]
fn chunks_longer_than_the_data() {
    // Every document is shorter than one chunk, so no token would be scored: an error, not a NaN.
    let s = Scratch::new("chunks_longer_than_the_data");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--window", "chunks", "--ctx", "128"]);
    assert_bad_input(&out, &["--ctx"]);
}

// ---------------------------------------------------------------------------------------------
// --device

#[test]
fn device_index_out_of_range() {
    let s = Scratch::new("device_index_out_of_range");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--device", "99"]);
    assert_bad_input(&out, &["--device 99", "there are only", "adapters"]);
}

#[test]
fn device_name_matches_nothing() {
    let s = Scratch::new("device_name_matches_nothing");
    let data = s.text("doc.txt");
    let out = ppl(tiny_model(), &data, &["--device", "no-such-gpu-name"]);
    assert_bad_input(&out, &["--device 'no-such-gpu-name'", "matches no adapter", "adapters:"]);
}

// ---------------------------------------------------------------------------------------------
// runs that succeed

#[test]
fn ppl_writes_json_and_per_token_records() {
    let s = Scratch::new("ppl_writes_json_and_per_token_records");
    let data = s.text("doc.txt");
    let json_path = s.join("out.json");
    let tok_path = s.join("tok.jsonl");
    let out = ppl(
        tiny_model(),
        &data,
        &["--json", json_path.to_str().unwrap(), "--per-token", tok_path.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("token perplexity"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(report["model"].is_string(), "{report}");
    assert_eq!(report["window"], "rolling", "{report}");
    assert_eq!(report["ctx"], 128, "{report}");
    let doc = &report["documents"][0];
    assert!(doc["name"].as_str().unwrap().ends_with("doc.txt"), "{report}");
    for key in ["nll", "tokens", "words", "bytes"] {
        assert!(doc[key].is_number(), "documents[0].{key} missing: {report}");
    }
    assert!(doc["nll"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["bytes"].as_u64().unwrap() as usize, fs::read(&data).unwrap().len());
    let total = &report["total"];
    for key in ["nll", "tokens", "words", "bytes", "token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"] {
        assert!(total[key].is_number(), "total.{key} missing: {report}");
    }
    let tokens = total["tokens"].as_u64().unwrap() as usize;
    assert!(tokens > 0);
    assert_eq!(total["tokens"], doc["tokens"]);
    let ppl = total["token_perplexity"].as_f64().unwrap();
    let expected = (total["nll"].as_f64().unwrap() / tokens as f64).exp();
    assert!((ppl - expected).abs() <= 1e-6 * expected, "token_perplexity {ppl} != exp(nll / tokens) {expected}");

    let lines: Vec<String> = fs::read_to_string(&tok_path).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), tokens, "one per-token line per scored token");
    let mut logprob_sum = 0.0f64;
    for (i, line) in lines.iter().enumerate() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
        assert!(record["doc"].is_string(), "{line}");
        assert!(record["pos"].is_u64(), "{line}");
        assert!(record["token_id"].as_u64().unwrap() < 363, "{line}");
        let logprob = record["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0 && logprob.is_finite(), "{line}");
        let top = record["top"].as_u64().unwrap();
        assert!(top < 363, "{line}");
        assert_eq!(record["greedy"].as_bool(), Some(top == record["token_id"].as_u64().unwrap()), "greedy is whether the token is the top one: {line}");
        logprob_sum += logprob;
    }
    let nll = total["nll"].as_f64().unwrap();
    assert!((nll + logprob_sum).abs() <= 1e-3 * nll.max(1.0), "total nll {nll} != -sum(logprob) {}", -logprob_sum);
}

/// The totals and per-document nll bits of `perplex ppl --field context` on `data`.
fn context_totals(s: &Scratch, data: &Path) -> (serde_json::Value, Vec<u64>) {
    let json_path = s.join("out.json");
    let out = ppl(tiny_model(), data, &["--field", "context", "--ctx", "32", "--json", json_path.to_str().unwrap()]);
    assert_success(&out);
    let mut report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    let nll_bits = report["documents"].as_array().unwrap().iter().map(|d| d["nll"].as_f64().unwrap().to_bits()).collect();
    (report["total"].take(), nll_bits)
}

#[test]
fn ppl_reads_every_format_eval_reads() {
    // The same records as JSON Lines, gzipped JSON Lines, Parquet and a `datasets` directory of
    // Arrow files: each record's field is one document, and the scores do not depend on the format.
    let s = Scratch::new("ppl_reads_every_format_eval_reads");
    let data = repo().join("tests/eval-data");
    let jsonl = data.join("mc.jsonl");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, &fs::read(&jsonl).unwrap()).unwrap();
    let gzipped = s.write("mc.jsonl.gz", gzip.finish().unwrap());

    let (total, documents) = context_totals(&s, &jsonl);
    assert_eq!(documents.len(), fs::read_to_string(&jsonl).unwrap().lines().count());
    assert!(total["tokens"].as_u64().unwrap() > 0, "{total}");
    for other in [gzipped, data.join("mc.parquet"), data.join("mc-dataset")] {
        assert_eq!(context_totals(&s, &other), (total.clone(), documents.clone()), "{}", other.display());
    }
    // A split of a DatasetDict directory is a dataset directory too.
    assert_success(&ppl(tiny_model(), data.join("arc-dict/validation"), &["--field", "question"]));
}

#[test]
fn ppl_sliding_without_stride() {
    // The default stride is ctx / 2.
    let s = Scratch::new("ppl_sliding_without_stride");
    let data = s.text("doc.txt");
    let json_path = s.join("out.json");
    let out = ppl(tiny_model(), &data, &["--window", "sliding", "--ctx", "16", "--json", json_path.to_str().unwrap()]);
    let stderr = clean_stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["window"], "sliding", "{report}");
    assert_eq!(report["stride"], 8, "{report}");
}

#[test]
fn json_output_in_a_missing_directory() {
    let s = Scratch::new("json_output_in_a_missing_directory");
    let data = s.text("doc.txt");
    let json_path = s.join("no-such-dir/out.json");
    let out = ppl(tiny_model(), &data, &["--json", json_path.to_str().unwrap()]);
    assert_bad_input(&out, &["no-such-dir/out.json", "cannot write"]);
}

#[test]
fn devices_lists_adapters() {
    let s = Scratch::new("devices_lists_adapters");
    let json_path = s.join("devices.json");
    let out = perplex([OsStr::new("devices"), OsStr::new("--json"), json_path.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", clean_stderr(&out));
    assert!(stdout.starts_with("0: "), "{stdout}");
    assert!(stdout.contains("max buffer"), "{stdout}");
    let list: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(!list.as_array().unwrap().is_empty(), "{list}");
}
