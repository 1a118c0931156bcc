//! Entry points that run every parser of a user's file on arbitrary bytes: the fuzz targets in
//! `fuzz/` (cargo fuzz, libFuzzer) call them, and `tests/fuzz_corpus.rs` replays the committed
//! corpora and regression inputs through them on the stable toolchain.
//!
//! Each entry point writes the bytes to a scratch file and calls the very function the CLI calls
//! on a user's path (`GgufFile::open`, `Checkpoint::open`, `load_spec`, `TextTokenizer::load`,
//! `read_documents`, `Source::open`), then walks what was parsed the way scoring would (every
//! tensor read and dequantized, the tokenizer used, every task formulation applied to the
//! records), so a fuzzer exercises one code path, not a copy. The result is the parser's own
//! verdict; what must never happen is a panic, or an allocation the input's size does not imply.

use crate::error::Result;
use crate::model::{self, gguf::GgufFile, Checkpoint, TextTokenizer};
use std::path::{Path, PathBuf};

/// Tensors larger than this (after dequantization) are not read: the fuzzer's inputs are small,
/// and the bound keeps one execution fast. The parsers' own checks still run on every tensor.
const MAX_TENSOR_READ: usize = 1 << 24;

/// A directory of this process's own for scratch files: under /dev/shm where there is one (no
/// disk traffic while fuzzing), else the system temp directory.
pub fn scratch_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("perplex-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

/// A fresh scratch subdirectory `name` (emptied of what an earlier input left), per thread.
fn scratch(name: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id()).chars().filter(char::is_ascii_digit).collect::<String>();
    let dir = scratch_dir().join(format!("{name}-{thread}"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("scratch file {}: {e}", path.display()));
}

/// A GGUF file: header, metadata, tensor directory (`GgufFile::open`), then what loading a model
/// does with it: the config read from the metadata and the family's spec of it, the
/// tokenizer built from the vocabulary (and used), and every tensor read under its HF name,
/// with the layout fixes and dequantization.
pub fn gguf(bytes: &[u8]) -> Result<()> {
    let path = scratch("gguf").join("model.gguf");
    write(&path, bytes);
    let file = GgufFile::open(&path)?;
    let spec = file.spec();
    let tokenizer = file.tokenizer().map(|t| {
        let _ = t.encode("Hello world, 123 <s> ünïcödé\n\tend");
        let _ = t.prefix_token();
    });
    let mut names: Vec<String> = file.names().map(str::to_string).collect();
    names.sort();
    let mut first_error = None;
    for name in names {
        let Some(shape) = file.shape(&name) else { continue };
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements.is_none_or(|n| n > MAX_TENSOR_READ) {
            continue;
        }
        match file.tensor(&name, &shape) {
            Ok(data) => {
                if data.bytes.len() <= MAX_TENSOR_READ {
                    let _ = data.to_f32();
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    spec?;
    tokenizer?;
    first_error.map_or(Ok(()), Err)
}

/// A `model.safetensors`: header and tensor table (`Checkpoint::open`), then every tensor read
/// and widened to f32 as the loader does for norms and biases.
pub fn safetensors(bytes: &[u8]) -> Result<()> {
    let dir = scratch("safetensors");
    write(&dir.join("model.safetensors"), bytes);
    read_checkpoint(&dir)
}

fn read_checkpoint(dir: &Path) -> Result<()> {
    let checkpoint = Checkpoint::open(dir)?;
    let Checkpoint::Safetensors(st) = &checkpoint else { return Ok(()) };
    let mut names: Vec<String> = st.names().map(str::to_string).collect();
    names.sort();
    for name in names {
        let Some(shape) = st.shape(&name) else { continue };
        let data = checkpoint.get(&name, &shape)?;
        if data.bytes.len() <= MAX_TENSOR_READ {
            let _ = data.to_f32();
        }
    }
    let _ = st.main_dtype();
    Ok(())
}

/// A small valid shard for [`shard_index`] inputs to point at.
const SHARD: &[u8] = &{
    // 8-byte header length, the JSON header padded with spaces, 8 bytes of f32 data.
    const HEADER: &[u8] = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}     "#;
    let mut out = [0u8; 8 + HEADER.len() + 8];
    let len = (HEADER.len() as u64).to_le_bytes();
    let mut i = 0;
    while i < 8 {
        out[i] = len[i];
        i += 1;
    }
    let mut j = 0;
    while j < HEADER.len() {
        out[8 + j] = HEADER[j];
        j += 1;
    }
    out
};

/// `model.safetensors.index.json` of a sharded checkpoint (`Checkpoint::open`), in a directory
/// that holds shards named `model-00001-of-00002.safetensors` and `model-00002-of-00002.safetensors`.
pub fn shard_index(bytes: &[u8]) -> Result<()> {
    let dir = scratch("index");
    write(&dir.join("model.safetensors.index.json"), bytes);
    write(&dir.join("model-00001-of-00002.safetensors"), SHARD);
    write(&dir.join("model-00002-of-00002.safetensors"), SHARD);
    read_checkpoint(&dir)
}

/// A `config.json` through the family rules (`load_spec`), then what the loader derives from
/// the spec before touching weights: parameter count, layer names, rotary tables.
pub fn config_json(bytes: &[u8]) -> Result<()> {
    let dir = scratch("config");
    write(&dir.join("config.json"), bytes);
    let spec = model::load_spec(&dir)?;
    let _ = spec.parameter_count();
    let _ = spec.naming();
    for layer in 0..spec.layers.min(4) {
        let _ = spec.layer_names(layer);
    }
    for rope in 0..spec.ropes.len() {
        let _ = spec.rope_table(rope, spec.max_positions.min(16));
    }
    Ok(())
}

/// A `tokenizer.json` (`TextTokenizer::load`), then a few texts encoded and tokens decoded.
pub fn tokenizer_json(bytes: &[u8]) -> Result<()> {
    let dir = scratch("tokenizer");
    write(&dir.join("tokenizer.json"), bytes);
    let tokenizer = TextTokenizer::load(&dir)?;
    for text in ["Hello world", "  spaces\tand\nnewlines 1234567", "ünïcödé 日本語 🙂", ""] {
        if let Ok(ids) = tokenizer.encode(text) {
            for id in ids.into_iter().take(8) {
                let _ = tokenizer.decode_token(id);
            }
        }
    }
    let _ = tokenizer.prefix_token();
    Ok(())
}

/// Documents to score (`perplex score --data x.jsonl`, and the same bytes as a plain text file).
pub fn documents(bytes: &[u8]) -> Result<()> {
    let dir = scratch("documents");
    let text = dir.join("data.txt");
    write(&text, bytes);
    let plain = crate::data::read_documents(&text, "text").map(drop);
    let jsonl = dir.join("data.jsonl");
    write(&jsonl, bytes);
    crate::data::read_documents(&jsonl, "text")?;
    plain
}

/// Task data of one format (`perplex eval --data`): read into records (`Source::open`); JSON data is
/// then also loaded as every built-in task (`tasks::load`, few-shot examples drawn from the same
/// file) and every document turned into its requests (`Suite::check`), as `perplex eval` does
/// before it loads a model. (The formulations read records, whatever format they came from.)
pub fn task_data(bytes: &[u8], format: TaskFormat) -> Result<()> {
    let dir = scratch(&format!("task-{}", format.extension().replace('.', "-")));
    let path = dir.join(format!("data.{}", format.extension()));
    write(&path, bytes);
    crate::data::Source::open(&path)?;
    if matches!(format, TaskFormat::Parquet | TaskFormat::Arrow) {
        return Ok(());
    }
    let mut first_error = None;
    for name in TASKS {
        let spec = crate::tasks::TaskSpec { name: name.to_string(), data: path.clone(), fewshot_data: None, num_fewshot: 2, limit: Some(64), max_gen_toks: None };
        if let Err(e) = crate::tasks::load(&[spec]).and_then(|suite| suite.check()) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One task per formulation (an MMLU subject stands for MMLU).
const TASKS: [&str; 13] = [
    "hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "lambada_openai", "boolq", "copa", "openbookqa", "sciq",
    "mc", "loglik", "mmlu_anatomy",
];

/// The file formats `--data` of `perplex eval` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFormat {
    Jsonl,
    Json,
    JsonlGz,
    Parquet,
    Arrow,
}

impl TaskFormat {
    pub fn extension(self) -> &'static str {
        match self {
            TaskFormat::Jsonl => "jsonl",
            TaskFormat::Json => "json",
            TaskFormat::JsonlGz => "jsonl.gz",
            TaskFormat::Parquet => "parquet",
            TaskFormat::Arrow => "arrow",
        }
    }
}
