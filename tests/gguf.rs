//! GGUF reading: dequantization against gguf-py (models/gguf-fixtures/, made by
//! models/scripts/make_gguf_fixtures.py), corrupt and hostile files (built here), the Hugging Face
//! layout of small files built here (Q/K un-permutation, Gemma norms, the config), and the real
//! GGUF models of the asset cache (tensors against the dequantized HF dirs and gguf-py hashes,
//! tokenizers against tokenizer.json and llama.cpp's ids). The real-model tests are skipped, with a
//! notice, when PERPLEX_ASSETS is not set.

mod common;

use common::{assets, repo};
use perplex::dtype::DType;
use perplex::model::gguf::{Array, GgufFile, Value};
use perplex::model::{Checkpoint, RopeScalingConfig};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[path = "common/tracking_alloc.rs"]
mod tracking_alloc;
use tracking_alloc::largest_allocation;

#[path = "common/gguf_builder.rs"]
mod gguf_builder;
use gguf_builder::{put_str, Builder, LlamaShape, F32, Q4_0};

/// Writes `bytes` to a fresh file of this test process.
fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("perplex-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_bytes(name: &str, bytes: &[u8]) -> perplex::Result<GgufFile> {
    GgufFile::open(&write_temp(name, bytes))
}

fn fixture() -> PathBuf {
    repo().join("models/gguf-fixtures/quants.gguf")
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

// ---- dequantization against gguf-py ----------------------------------------------------------

#[test]
fn every_type_dequantizes_like_gguf_py() {
    let gguf = GgufFile::open(&fixture()).unwrap();
    let kinds = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0_exact"];
    for kind in kinds {
        let got = gguf.stored(kind).unwrap();
        let want = gguf.stored(&format!("{kind}.expected")).unwrap();
        assert_eq!(got.shape, vec![2, 256], "{kind}: shape in PyTorch order");
        assert_eq!(bits(&got.to_f32()), bits(&want.to_f32()), "{kind}: values differ from gguf-py's dequantize");
        // Float tensors are handed out as stored; quantized ones as groups of 8-bit integers.
        let expected_dtype = match kind {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            _ => DType::Int8Groups,
        };
        assert_eq!(got.dtype, expected_dtype, "{kind}: storage type");
        assert_eq!(matches!(got.bytes, Cow::Borrowed(_)), ["f32", "f16", "bf16"].contains(&kind), "{kind}: borrowed from the map");
    }
}

#[test]
fn metadata_of_every_value_type() {
    let gguf = GgufFile::open(&fixture()).unwrap();
    assert_eq!(gguf.version(), 3);
    let get = |key: &str| gguf.metadata(key).unwrap_or_else(|| panic!("{key}")).clone();
    assert_eq!(get("test.u8"), Value::U8(200));
    assert_eq!(get("test.i8"), Value::I8(-100));
    assert_eq!(get("test.u16"), Value::U16(60000));
    assert_eq!(get("test.i16"), Value::I16(-30000));
    assert_eq!(get("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(get("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(get("test.u64"), Value::U64((1 << 63) + 5));
    assert_eq!(get("test.i64"), Value::I64(-(1 << 62)));
    assert_eq!(get("test.f32"), Value::F32(0.1));
    assert_eq!(get("test.f64"), Value::F64(0.1));
    assert_eq!(get("test.bool"), Value::Bool(true));
    assert_eq!(get("test.string"), Value::String("héllo".into()));
    assert_eq!(get("test.ints"), Value::Array(Array::I32(vec![1, -2, 3])));
    assert_eq!(get("test.strings"), Value::Array(Array::String(vec!["a".into(), "".into(), "ü".into()])));
    assert_eq!(get("test.nested"), Value::Array(Array::Array(vec![Array::I32(vec![1, 2]), Array::I32(vec![3])])));
    assert_eq!(get("general.architecture").as_str(), Some("llama"));
    assert_eq!(gguf.metadata("no.such.key"), None);
}

// ---- corrupt and hostile files ---------------------------------------------------------------

/// A header by hand: magic, version, tensor count, key/value count, then `rest`.
fn header(version: u32, tensors: u64, kvs: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&tensors.to_le_bytes());
    out.extend_from_slice(&kvs.to_le_bytes());
    out.extend_from_slice(rest);
    out
}

/// One key/value: `key`, `type_id`, then raw value bytes.
fn kv(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, key);
    out.extend_from_slice(&type_id.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn arch_kv() -> Vec<u8> {
    let mut value = Vec::new();
    put_str(&mut value, "llama");
    kv("general.architecture", 8, &value)
}

/// A file with the architecture key and one tensor entry (`info`), then 64 bytes of data.
fn with_tensor(info: &[u8]) -> Vec<u8> {
    let mut out = header(3, 1, 1, &[arch_kv(), info.to_vec()].concat());
    out.resize(out.len().next_multiple_of(32) + 64, 0);
    out
}

fn tensor_info(name: &str, dims: &[u64], type_id: u32, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, name);
    out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&type_id.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out
}

fn array_header(item_type: u32, len: u64) -> Vec<u8> {
    [item_type.to_le_bytes().to_vec(), len.to_le_bytes().to_vec()].concat()
}

#[test]
fn corrupt_files_are_refused_without_panics_or_big_allocations() {
    let huge = 1u64 << 60;
    let nested = {
        // 100 levels of arrays, each holding one array.
        let mut value = Vec::new();
        for _ in 0..100 {
            value.extend_from_slice(&array_header(9, 1));
        }
        value.extend_from_slice(&array_header(4, 0));
        value
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a GGUF file"),
        ("magic only", b"GGUF".to_vec(), "truncated"),
        ("bad magic", b"GGML\x03\x00\x00\x00".to_vec(), "not a GGUF file"),
        ("version 1", header(1, 0, 0, &[]), "version 1"),
        ("version 4", header(4, 0, 0, &[]), "version 4"),
        ("big endian", header(3u32.swap_bytes(), 0, 0, &[]), "big-endian"),
        ("header cut", header(3, 0, 0, &[])[..20].to_vec(), "truncated"),
        ("2^60 tensors", header(3, huge, 0, &[]), "tensor count"),
        ("2^60 keys", header(3, 0, huge, &[]), "metadata count"),
        ("2^40-byte key", header(3, 0, 1, &(1u64 << 40).to_le_bytes()), "truncated"),
        ("2^40-byte string", header(3, 0, 1, &kv("k", 8, &(1u64 << 40).to_le_bytes())), "truncated"),
        ("2^64-1-byte string", header(3, 0, 1, &kv("k", 8, &u64::MAX.to_le_bytes())), "truncated"),
        ("2^60 bytes", header(3, 0, 1, &kv("k", 9, &array_header(0, huge))), "length of metadata array"),
        ("2^60 strings", header(3, 0, 1, &kv("k", 9, &array_header(8, huge))), "length of metadata array"),
        ("2^60 arrays", header(3, 0, 1, &kv("k", 9, &array_header(9, huge))), "length of metadata array"),
        ("array of type 99", header(3, 0, 1, &kv("k", 9, &array_header(99, 1))), "unknown type 99"),
        ("value type 99", header(3, 0, 1, &kv("k", 99, &[0; 8])), "unknown value type 99"),
        ("deep nesting", header(3, 0, 1, &kv("k", 9, &nested)), "nests arrays"),
        ("invalid UTF-8 key", header(3, 0, 1, &[2, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFE, 4, 0, 0, 0, 1, 0, 0, 0]), "UTF-8"),
        ("duplicate key", header(3, 0, 2, &[arch_kv(), arch_kv()].concat()), "appears twice"),
        ("alignment 0", header(3, 0, 2, &[arch_kv(), kv("general.alignment", 4, &0u32.to_le_bytes())].concat()), "alignment"),
        ("alignment 48", header(3, 0, 2, &[arch_kv(), kv("general.alignment", 4, &48u32.to_le_bytes())].concat()), "alignment"),
        ("alignment as u64", header(3, 0, 2, &[arch_kv(), kv("general.alignment", 10, &32u64.to_le_bytes())].concat()), "alignment"),
        ("5 dimensions", with_tensor(&tensor_info("t", &[1, 1, 1, 1, 1], F32, 0)), "5 dimensions"),
        ("element overflow", with_tensor(&tensor_info("t", &[1 << 32, 1 << 32, 1 << 32], F32, 0)), "too many elements"),
        ("byte overflow", with_tensor(&tensor_info("t", &[1 << 62, 2], F32, 0)), "too many bytes"),
        ("type id 99", with_tensor(&tensor_info("t", &[8], 99, 0)), "unknown quantization type id 99"),
        ("data past the end", with_tensor(&tensor_info("t", &[32], F32, 0)), "beyond the end"),
        ("offset past the end", with_tensor(&tensor_info("t", &[1], F32, 1 << 40)), "beyond the end"),
        ("offset overflow", with_tensor(&tensor_info("t", &[1], F32, u64::MAX - 31)), "beyond the end"),
        ("unaligned offset", with_tensor(&tensor_info("t", &[1], F32, 4)), "not a multiple of the alignment"),
        ("partial block", with_tensor(&tensor_info("t", &[16], Q4_0, 0)), "block size 32"),
        ("tensor entry cut", header(3, 1, 1, &[arch_kv(), tensor_info("t", &[4], F32, 0)[..20].to_vec()].concat()), "truncated"),
        ("no architecture", header(3, 0, 0, &[]), "general.architecture"),
        ("unknown architecture", header(3, 0, 1, &kv("general.architecture", 8, &[&5u64.to_le_bytes()[..], b"mamba"].concat())), "'mamba'"),
    ];
    for (name, bytes, expected) in cases {
        let path = write_temp(name, &bytes);
        let (result, largest) = largest_allocation(|| GgufFile::open(&path));
        let error = match result {
            Ok(_) => panic!("{name}: opened a corrupt file"),
            Err(e) => e,
        };
        assert_eq!(error.kind, perplex::ErrorKind::BadInput, "{name}");
        assert!(error.message.contains(&path.display().to_string()), "{name}: error does not name the file: {}", error.message);
        assert!(error.message.contains(expected), "{name}: error '{}' does not mention '{expected}'", error.message);
        assert!(largest < 64 * 1024, "{name}: allocated {largest} bytes at once");
    }
}

#[test]
fn truncated_copies_of_a_valid_file_are_refused() {
    let bytes = std::fs::read(fixture()).unwrap();
    // Every cut inside the header, metadata and tensor directory, then every 97th byte of the data.
    let directory_end = 2048;
    let cuts = (0..directory_end).chain((directory_end..bytes.len()).step_by(97));
    let path = write_temp("truncated", &[]);
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (result, largest) = largest_allocation(|| GgufFile::open(&path));
        assert!(result.is_err(), "opened the file cut at byte {cut} of {}", bytes.len());
        assert!(largest < 64 * 1024, "cut at {cut}: allocated {largest} bytes at once");
    }
    std::fs::write(&path, &bytes).unwrap();
    GgufFile::open(&path).unwrap();
}

#[test]
fn unsupported_types_are_named_when_read() {
    // Q8_1 (id 9) has a known size, so the file opens; reading the tensor says what is missing.
    let mut b = Builder::arch("llama");
    b.tensor("blk.0.attn_norm.weight", &[32], 9, &[0; 40]);
    let gguf = open_bytes("q8_1", &b.bytes()).unwrap();
    let error = gguf.stored("blk.0.attn_norm.weight").err().unwrap();
    assert!(error.message.contains("Q8_1"), "{}", error.message);
    assert!(gguf.stored("missing").is_err());
    assert!(gguf.tensor("model.layers.0.input_layernorm.weight", &[33]).err().unwrap().message.contains("shape"));
}

// ---- Hugging Face layout and the config ----------------------------------------------------------

/// convert_hf_to_gguf.py's permutation of llama q/k rows (the file stores these rows).
fn permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let r = h * 2 * half + j * half + i;
                out.extend_from_slice(&w[r * cols..(r + 1) * cols]);
            }
        }
    }
    out
}

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin() * scale).collect()
}

/// A two-layer llama file: hidden 8, 4 query heads and 2 key/value heads of 2, 16-wide MLP.
fn tiny_llama() -> (Builder, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hidden, q_rows, kv_rows, ff, vocab) = (8usize, 8usize, 4usize, 16usize, 10usize);
    let mut b = Builder::llama(LlamaShape { layers: 2, context: 128, hidden: hidden as u32, ff: ff as u32, heads: 4, kv_heads: 2 });
    b.f32("llama.rope.freq_base", 500000.0)
        .u32("llama.rope.dimension_count", 2)
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2);
    let q = ramp(q_rows * hidden, 1.0);
    let k = ramp(kv_rows * hidden, 2.0);
    let q_bias = ramp(q_rows, 3.0);
    b.f32_tensor("token_embd.weight", &[hidden as u64, vocab as u64], &ramp(vocab * hidden, 0.5));
    b.f32_tensor("output_norm.weight", &[hidden as u64], &ramp(hidden, 1.0));
    for layer in 0..2 {
        let p = format!("blk.{layer}");
        b.f32_tensor(&format!("{p}.attn_norm.weight"), &[hidden as u64], &ramp(hidden, 1.0));
        b.f32_tensor(&format!("{p}.ffn_norm.weight"), &[hidden as u64], &ramp(hidden, 1.0));
        b.f32_tensor(&format!("{p}.attn_q.weight"), &[hidden as u64, q_rows as u64], &permute(&q, q_rows, hidden, 4));
        b.f32_tensor(&format!("{p}.attn_q.bias"), &[q_rows as u64], &permute(&q_bias, q_rows, 1, 4));
        b.f32_tensor(&format!("{p}.attn_k.weight"), &[hidden as u64, kv_rows as u64], &permute(&k, kv_rows, hidden, 2));
        b.f32_tensor(&format!("{p}.attn_v.weight"), &[hidden as u64, kv_rows as u64], &ramp(kv_rows * hidden, 1.0));
        b.f32_tensor(&format!("{p}.attn_output.weight"), &[q_rows as u64, hidden as u64], &ramp(q_rows * hidden, 1.0));
        b.f32_tensor(&format!("{p}.ffn_gate.weight"), &[hidden as u64, ff as u64], &ramp(ff * hidden, 1.0));
        b.f32_tensor(&format!("{p}.ffn_up.weight"), &[hidden as u64, ff as u64], &ramp(ff * hidden, 1.0));
        b.f32_tensor(&format!("{p}.ffn_down.weight"), &[ff as u64, hidden as u64], &ramp(ff * hidden, 1.0));
    }
    (b, q, k, q_bias)
}

#[test]
fn llama_q_and_k_rows_are_unpermuted() {
    let (b, q, k, q_bias) = tiny_llama();
    let gguf = open_bytes("tiny-llama", &b.bytes()).unwrap();
    let q_got = gguf.tensor("model.layers.1.self_attn.q_proj.weight", &[8, 8]).unwrap();
    assert_eq!(q_got.shape, vec![8, 8]);
    assert_eq!(q_got.to_f32(), q);
    assert_eq!(gguf.tensor("model.layers.0.self_attn.k_proj.weight", &[4, 8]).unwrap().to_f32(), k);
    assert_eq!(gguf.tensor("model.layers.0.self_attn.q_proj.bias", &[8]).unwrap().to_f32(), q_bias);
    // v and o are stored as they are.
    assert_eq!(gguf.tensor("model.layers.0.self_attn.v_proj.weight", &[4, 8]).unwrap().to_f32(), ramp(32, 1.0));
    assert!(matches!(gguf.tensor("model.layers.0.mlp.down_proj.weight", &[8, 16]).unwrap().bytes, Cow::Borrowed(_)));
    assert_eq!(gguf.tensor("model.layers.0.post_attention_layernorm.weight", &[8]).unwrap().to_f32(), ramp(8, 1.0));
    assert!(gguf.contains("model.norm.weight") && gguf.contains("model.embed_tokens.weight"));
    assert!(!gguf.contains("lm_head.weight"));
    assert_eq!(gguf.names().count(), 2 + 2 * 10);

    let config = gguf.config().unwrap();
    assert_eq!(config.model_type.as_deref(), Some("llama"));
    assert_eq!(config.tie_word_embeddings, Some(true));
    assert_eq!(config.vocab_size, Some(10));
    assert_eq!(config.attention_bias, Some(true));
    let spec = gguf.spec().unwrap();
    assert_eq!((spec.hidden, spec.layers, spec.q_heads, spec.kv_heads, spec.head_dim), (8, 2, 4, 2, 2));
    assert_eq!((spec.intermediate, spec.vocab_size, spec.max_positions), (16, 10, 128));
    assert_eq!((spec.norm_eps, spec.ropes[0].theta), (1e-5, 500000.0));
    assert!(spec.tied_head && spec.qkv_bias);
}

#[test]
fn gemma3_norms_lose_the_stored_one_and_config_follows_llama_cpp() {
    let layers = 7u32;
    let mut b = Builder::arch("gemma3");
    b.u32("gemma3.block_count", layers)
        .u32("gemma3.context_length", 32768)
        .u32("gemma3.embedding_length", 8)
        .u32("gemma3.feed_forward_length", 16)
        .u32("gemma3.attention.head_count", 2)
        .u32("gemma3.attention.head_count_kv", 1)
        .u32("gemma3.attention.key_length", 4)
        .u32("gemma3.attention.value_length", 4)
        .f32("gemma3.rope.freq_base", 1_000_000.0)
        .f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
        .u32("gemma3.attention.sliding_window", 512)
        .string("gemma3.rope.scaling.type", "linear")
        .f32("gemma3.rope.scaling.factor", 8.0);
    let stored: Vec<f32> = vec![1.0, 1.5, 0.25, 2.0, 1.125, 0.5, 3.0, 1.0];
    b.f32_tensor("token_embd.weight", &[8, 6], &ramp(48, 1.0));
    b.f32_tensor("output_norm.weight", &[8], &stored);
    b.f32_tensor("blk.0.attn_q_norm.weight", &[4], &stored[..4]);
    b.f32_tensor("blk.0.ffn_norm.weight", &[8], &stored);
    b.f32_tensor("blk.0.post_attention_norm.weight", &[8], &stored);
    b.f32_tensor("blk.0.post_ffw_norm.weight", &[8], &stored);
    b.f32_tensor("blk.0.attn_q.weight", &[8, 8], &ramp(64, 1.0));
    let gguf = open_bytes("tiny-gemma3", &b.bytes()).unwrap();
    let minus_one: Vec<f32> = stored.iter().map(|w| w - 1.0).collect();
    let norms = ["pre_feedforward_layernorm", "post_attention_layernorm", "post_feedforward_layernorm"].map(|n| format!("model.layers.0.{n}"));
    for name in norms.iter().map(String::as_str).chain(["model.norm"]) {
        let t = gguf.tensor(&format!("{name}.weight"), &[8]).unwrap();
        assert_eq!((t.dtype, t.to_f32()), (DType::F32, minus_one.clone()), "{name}");
    }
    assert_eq!(gguf.tensor("model.layers.0.self_attn.q_norm.weight", &[4]).unwrap().to_f32(), minus_one[..4]);
    // Gemma files are not permuted.
    assert_eq!(gguf.tensor("model.layers.0.self_attn.q_proj.weight", &[8, 8]).unwrap().to_f32(), ramp(64, 1.0));

    let config = gguf.config().unwrap();
    assert_eq!(config.model_type.as_deref(), Some("gemma3_text"));
    assert_eq!(config.query_pre_attn_scalar, Some(4.0));
    assert_eq!(config.rope_local_base_freq, Some(10000.0));
    let linear = RopeScalingConfig { rope_type: Some("linear".into()), factor: Some(8.0), ..Default::default() };
    assert_eq!(config.rope_scaling, Some(linear));
    let sliding: Vec<bool> = (0..7).map(|i| i != 5).collect();
    assert_eq!(config.layer_types, Some(sliding), "every 6th layer global");
    let spec = gguf.spec().unwrap();
    assert_eq!((spec.head_dim, spec.kv_heads, spec.norm_weight_offset), (4, 1, 1.0));
    assert_eq!(spec.attention_scale, 0.5);
    let windows: Vec<Option<usize>> = spec.layer_attention.iter().map(|l| l.sliding_window).collect();
    assert_eq!(windows, [Some(512), Some(512), Some(512), Some(512), Some(512), None, Some(512)]);
    assert_eq!((spec.ropes[0].theta, spec.ropes[1].theta), (1_000_000.0, 10000.0));
    assert_eq!(spec.ropes[0].scaling, perplex::model::RopeScaling::Linear { factor: 8.0 });
    assert!(spec.tied_head);
}

#[test]
fn gemma2_config_takes_llama_cpp_defaults() {
    let mut b = Builder::arch("gemma2");
    b.u32("gemma2.block_count", 4)
        .u32("gemma2.context_length", 8192)
        .u32("gemma2.embedding_length", 8)
        .u32("gemma2.feed_forward_length", 16)
        .u32("gemma2.attention.head_count", 2)
        .u32("gemma2.attention.head_count_kv", 2)
        .u32("gemma2.attention.key_length", 4)
        .f32("gemma2.attention.layer_norm_rms_epsilon", 1e-6);
    b.f32_tensor("token_embd.weight", &[8, 6], &ramp(48, 1.0));
    b.f32_tensor("blk.0.ffn_norm.weight", &[8], &[2.0; 8]);
    let gguf = open_bytes("tiny-gemma2", &b.bytes()).unwrap();
    assert_eq!(gguf.tensor("model.layers.0.pre_feedforward_layernorm.weight", &[8]).unwrap().to_f32(), [1.0; 8]);
    let spec = gguf.spec().unwrap();
    assert_eq!((spec.attention_softcap, spec.final_softcap), (50.0, 30.0));
    let windows: Vec<Option<usize>> = spec.layer_attention.iter().map(|l| l.sliding_window).collect();
    assert_eq!(windows, [Some(4096), None, Some(4096), None], "even layers local");
    assert_eq!(spec.attention_scale, 0.5);
}

#[test]
fn llama_3_frequency_factors_are_refused() {
    let (mut b, ..) = tiny_llama();
    b.f32_tensor("rope_freqs.weight", &[1], &[1.0]);
    let gguf = open_bytes("rope-freqs", &b.bytes()).unwrap();
    assert!(gguf.spec().err().unwrap().message.contains("rope_freqs"));
}

// ---- tokenizers built from metadata ----------------------------------------------------------

fn ids(tokenizer: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

/// A SentencePiece vocabulary: control tokens, byte tokens, and pieces whose scores decide merges.
fn sentencepiece_file(add_space_prefix: bool) -> GgufFile {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2i32, 3, 3];
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    let pieces = [("▁", -1.0), ("a", -2.0), ("b", -3.0), ("c", -4.0), ("ab", -5.0), ("▁a", -6.0), ("bc", -0.5), ("▁ab", -7.0), ("abc", -8.0), ("▁b", -9.0)];
    for (piece, score) in pieces {
        tokens.push(piece.into());
        scores.push(score);
        types.push(1);
    }
    tokens.push("<tag>".into());
    scores.push(0.0);
    types.push(4);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut b = Builder::arch("llama");
    b.string("tokenizer.ggml.model", "llama")
        .strings("tokenizer.ggml.tokens", &refs)
        .numbers("tokenizer.ggml.scores", 6, &scores, |s: f32| s.to_le_bytes().to_vec())
        .numbers("tokenizer.ggml.token_type", 5, &types, |t: i32| t.to_le_bytes().to_vec())
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .u32("tokenizer.ggml.unknown_token_id", 0)
        .bool("tokenizer.ggml.add_space_prefix", add_space_prefix);
    open_bytes(&format!("spm-{add_space_prefix}"), &b.bytes()).unwrap()
}

#[test]
fn sentencepiece_vocabularies_merge_by_score() {
    let file = sentencepiece_file(true);
    let parts = file.tokenizer_parts().unwrap();
    let t = &parts.tokenizer;
    let id = |piece: &str| t.token_to_id(piece).unwrap();
    // "▁abc": "bc" scores best, then "▁a"; "▁a"+"bc" is no token (llama.cpp's llm_tokenizer_spm).
    assert_eq!(ids(t, "abc"), [id("▁a"), id("bc")]);
    // "▁ab" (-7) beats "▁b"... only after "ab" (-5) and "▁a" (-6) are used: ▁ a b → ▁ ab → ▁ab.
    assert_eq!(ids(t, "ab"), [id("▁ab")]);
    // Characters outside the vocabulary fall back to their UTF-8 bytes.
    assert_eq!(ids(t, "é"), [id("▁"), id("<0xC3>"), id("<0xA9>")]);
    // Special and user-defined tokens are matched whole; the text after them gets the space prefix.
    assert_eq!(ids(t, "a</s>b<tag>c"), [id("▁a"), 2, id("▁b"), id("<tag>"), id("▁"), id("c")]);
    assert_eq!((parts.bos, parts.eos, parts.adds_bos), (Some(1), Some(2), true));
    assert_eq!(t.decode(&ids(t, "ab é"), false).unwrap(), "ab é");

    let plain = sentencepiece_file(false).tokenizer_parts().unwrap();
    assert_eq!(ids(&plain.tokenizer, "a bc"), [id("a"), id("▁"), id("bc")]);
}

#[test]
fn byte_level_vocabularies_use_the_stored_merges_and_pre_tokenizer() {
    // Byte-level spellings: "Ġ" is the space byte.
    let tokens = ["<|end|>", "a", "b", "1", "2", "Ġ", "ab", "Ġa", "Ġab", "12", "<x>"];
    let types = [3i32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4];
    let build = |pre: &str| {
        let mut b = Builder::arch("qwen2");
        b.string("tokenizer.ggml.model", "gpt2")
            .string("tokenizer.ggml.pre", pre)
            .strings("tokenizer.ggml.tokens", &tokens)
            .numbers("tokenizer.ggml.token_type", 5, &types, |t: i32| t.to_le_bytes().to_vec())
            .strings("tokenizer.ggml.merges", &["a b", "Ġ a", "Ġa b", "Ġ ab", "1 2"])
            .u32("tokenizer.ggml.eos_token_id", 0);
        open_bytes(&format!("bpe-{pre}"), &b.bytes()).unwrap().tokenizer_parts().unwrap()
    };
    let gpt2 = build("gpt-2");
    assert_eq!(ids(&gpt2.tokenizer, "ab ab<|end|>12<x>"), [6, 8, 0, 9, 10]);
    assert_eq!((gpt2.bos, gpt2.eos, gpt2.adds_bos), (None, Some(0), false));
    // smollm splits every digit; qwen2 too (\p{N} alone).
    assert_eq!(ids(&build("smollm").tokenizer, "12"), [3, 4]);
    assert_eq!(ids(&build("qwen2").tokenizer, "12 ab"), [3, 4, 8]);
    assert_eq!(ids(&build("llama-bpe").tokenizer, "12"), [9]);
    let mut b = Builder::arch("qwen2");
    b.string("tokenizer.ggml.model", "gpt2").string("tokenizer.ggml.pre", "no-such-style");
    b.strings("tokenizer.ggml.tokens", &tokens).strings("tokenizer.ggml.merges", &[]);
    let error = open_bytes("bpe-unknown", &b.bytes()).unwrap().tokenizer_parts().err().unwrap();
    assert!(error.message.contains("no-such-style"), "{}", error.message);
}

// ---- the real models of the asset cache ------------------------------------------------------

fn reference() -> Json {
    let text = std::fs::read_to_string(repo().join("models/gguf-fixtures/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// CRC-32 of the little-endian f32 values (what the reference stores, from Python's zlib.crc32).
fn crc32(values: &[f32]) -> u64 {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    crc32fast::hash(&bytes).into()
}

/// The asset cache and the GGUF of `model` (a key of reference.json), or None with a notice when
/// either is missing (CI fetches only some models).
fn real_model(model: &str) -> Option<(PathBuf, GgufFile)> {
    let root = assets(&format!("{model} gguf"))?;
    let path = root.join(reference()["models"][model]["file"].as_str().unwrap());
    if !path.exists() {
        eprintln!("SKIPPED {model} gguf: {} is missing (run tests/assets/fetch {model})", path.display());
        return None;
    }
    Some((root, GgufFile::open(&path).unwrap()))
}

/// Every tensor under its Hugging Face name against gguf-py's values (CRC-32 in reference.json).
fn check_tensors(gguf: &GgufFile, model: &str) {
    let reference = reference();
    let tensors = reference["models"][model]["tensors"].as_object().unwrap();
    let mut names: Vec<&str> = gguf.names().collect();
    names.sort();
    assert_eq!(names, tensors.keys().map(String::as_str).collect::<Vec<_>>(), "{model}: tensor names");
    for (name, want) in tensors {
        let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let got = gguf.tensor(name, &shape).unwrap();
        assert_eq!(Some(crc32(&got.to_f32())), want["crc32"].as_u64(), "{model}: {name} differs from gguf-py");
    }
    eprintln!("{model}: {} tensors equal to gguf-py's dequantization (bit for bit)", tensors.len());
}

/// Token ids against llama.cpp's (llama-tokenize, in reference.json).
fn check_llama_cpp_ids(tokenizer: &tokenizers::Tokenizer, model: &str) {
    let reference = reference();
    let texts = reference["texts"].as_array().unwrap();
    let expected = reference["models"][model]["llama_cpp_ids"].as_array().unwrap();
    for (text, want) in texts.iter().zip(expected) {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        assert_eq!(ids(tokenizer, text), want, "{model}: {text:?} tokenized unlike llama.cpp");
    }
    eprintln!("{model}: {} texts tokenized as llama.cpp does", texts.len());
}

/// Token ids against a Hugging Face tokenizer.json on the reference texts, a few more, and the
/// first 20,000 characters of the King James Bible.
fn check_tokenizer_json(tokenizer: &tokenizers::Tokenizer, tokenizer_json: &Path, root: &Path, model: &str) {
    let hf = tokenizers::Tokenizer::from_file(tokenizer_json).unwrap();
    let reference = reference();
    let mut texts: Vec<String> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    texts.extend(["<|im_start|>user\nhi<|im_end|>", "x", "", "  two leading", "trailing  "].map(String::from));
    if let Ok(kjv) = std::fs::read_to_string(root.join("texts/kjv.txt")) {
        texts.push(kjv.chars().take(20_000).collect());
    }
    for text in &texts {
        let shown: String = text.chars().take(60).collect();
        assert_eq!(ids(tokenizer, text), ids(&hf, text), "{model}: {shown:?}");
    }
    eprintln!("{model}: {} texts tokenized as {} does", texts.len(), tokenizer_json.display());
}

/// The spec the engine derives from the GGUF metadata equals the one from the HF dir's config.json.
fn check_spec(gguf: &GgufFile, hf_dir: &Path, model: &str) {
    let ours = gguf.spec().unwrap();
    let theirs = perplex::model::load_spec(hf_dir).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{model}: ModelSpec from GGUF metadata vs {}", hf_dir.display());
}

#[test]
fn smollm2_gguf_equals_its_dequantized_hf_dir() {
    let Some((root, gguf)) = real_model("smollm2") else { return };
    check_tensors(&gguf, "smollm2");
    // hf-f32 holds the same tensors, dequantized by gguf-py and un-permuted by the asset script.
    let hf_dir = root.join("smollm2/hf-f32");
    let hf = Checkpoint::open(&hf_dir).unwrap();
    let names: Vec<&str> = gguf.names().collect();
    for name in &names {
        let shape = gguf.shape(name).unwrap();
        let got = gguf.tensor(name, &shape).unwrap();
        assert_eq!(bits(&got.to_f32()), bits(&hf.get(name, &shape).unwrap().to_f32()), "{name}");
    }
    eprintln!("smollm2: all {} tensors equal hf-f32/model.safetensors bit for bit", names.len());
    let parts = gguf.tokenizer_parts().unwrap();
    assert_eq!((parts.bos, parts.eos, parts.adds_bos), (Some(1), Some(2), false));
    check_llama_cpp_ids(&parts.tokenizer, "smollm2");
    check_tokenizer_json(&parts.tokenizer, &hf_dir.join("tokenizer.json"), &root, "smollm2");
    check_spec(&gguf, &hf_dir, "smollm2");
}

#[test]
fn qwen2_gguf_matches_gguf_py_llama_cpp_and_its_hf_dir() {
    let Some((root, gguf)) = real_model("qwen2.5") else { return };
    check_tensors(&gguf, "qwen2.5");
    let parts = gguf.tokenizer_parts().unwrap();
    assert_eq!((parts.bos, parts.eos, parts.adds_bos), (Some(151643), Some(151645), false));
    check_llama_cpp_ids(&parts.tokenizer, "qwen2.5");
    let hf_dir = root.join("qwen2.5/hf-f16");
    check_tokenizer_json(&parts.tokenizer, &hf_dir.join("tokenizer.json"), &root, "qwen2.5");
    check_spec(&gguf, &hf_dir, "qwen2.5");
}

#[test]
fn gemma3_gguf_matches_gguf_py_and_llama_cpp() {
    let Some((_, gguf)) = real_model("gemma3") else { return };
    check_tensors(&gguf, "gemma3");
    let spec = gguf.spec().unwrap();
    let dims = (spec.layers, spec.hidden, spec.q_heads, spec.kv_heads, spec.head_dim, spec.vocab_size);
    assert_eq!(dims, (18, 640, 4, 1, 256, 262144));
    assert_eq!((spec.attention_scale, spec.norm_weight_offset), (1.0 / 16.0, 1.0));
    let global: Vec<usize> = (0..spec.layers).filter(|&i| spec.layer_attention[i].sliding_window.is_none()).collect();
    assert_eq!(global, [5, 11, 17]);
    let parts = gguf.tokenizer_parts().unwrap();
    assert_eq!((parts.bos, parts.eos, parts.adds_bos), (Some(2), Some(1), true));
    check_llama_cpp_ids(&parts.tokenizer, "gemma3");
    for text in reference()["texts"].as_array().unwrap() {
        let text = text.as_str().unwrap();
        assert_eq!(parts.tokenizer.decode(&ids(&parts.tokenizer, text), false).unwrap(), text, "gemma3: round trip");
    }
}
