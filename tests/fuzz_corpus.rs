//! Replays every committed fuzz input (fuzz/corpus/<target>/: seeds from real files and fixtures;
//! fuzz/regressions/<target>/: inputs that once crashed or over-allocated) through the entry
//! points the fuzz targets call (`perplex::fuzz`), on the stable toolchain: no input may panic,
//! and none may make a single allocation far beyond what its size implies. The fuzzing itself
//! (nightly, cargo fuzz) is in fuzz/; see fuzz/README.md.

use std::path::{Path, PathBuf};

#[path = "common/tracking_alloc.rs"]
mod tracking_alloc;
use tracking_alloc::largest_allocation;

/// The most one allocation may take for an input of `len` bytes: dequantized GGUF blocks and
/// decompressed data grow by a bounded factor, plus a fixed allowance for tables and buffers
/// that do not depend on the input (tokenizer caches, Arrow/Parquet readers' buffers).
fn allowance(len: usize) -> usize {
    64 * len + (32 << 20)
}

// ---- the targets ---------------------------------------------------------------------------------

use perplex::fuzz::{self, TaskFormat};

/// What each fuzz target in fuzz/fuzz_targets/ runs on its input, with the parsers' verdicts.
fn run(target: &str, data: &[u8]) -> Vec<perplex::Result<()>> {
    match target {
        "gguf" => vec![fuzz::gguf(data)],
        "safetensors" => vec![fuzz::safetensors(data)],
        "model_json" => vec![fuzz::config_json(data), fuzz::shard_index(data)],
        "tokenizer" => vec![fuzz::tokenizer_json(data)],
        "data_json" => {
            let format = if data.starts_with(&[0x1f, 0x8b]) { TaskFormat::JsonlGz } else { TaskFormat::Jsonl };
            vec![fuzz::documents(data), fuzz::task_data(data, format)]
        }
        "parquet" => vec![fuzz::task_data(data, TaskFormat::Parquet)],
        "arrow" => vec![fuzz::task_data(data, TaskFormat::Arrow)],
        other => panic!("fuzz/{other}: no such target (add it to tests/fuzz_corpus.rs)"),
    }
}

const TARGETS: [&str; 7] = ["gguf", "safetensors", "model_json", "tokenizer", "data_json", "parquet", "arrow"];

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) {
            files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let files = inputs(target);
    assert!(!files.is_empty() || target == "none", "fuzz/corpus/{target}: no inputs");
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let (verdicts, largest) = largest_allocation(|| run(target, &data));
        if std::env::var_os("PERPLEX_FUZZ_VERBOSE").is_some() {
            let errors: Vec<String> = verdicts.iter().filter_map(|v| v.as_ref().err()).map(|e| e.message.clone()).collect();
            eprintln!("{}: {largest} bytes at most; {}", path.display(), if errors.is_empty() { "ok".into() } else { errors.join(" | ") });
        }
        assert!(
            largest <= allowance(data.len()),
            "{}: {} bytes of input made an allocation of {largest} bytes",
            path.display(),
            data.len()
        );
    }
    eprintln!("fuzz/{target}: {} inputs replayed", files.len());
}

#[test]
fn every_target_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .collect();
    names.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    known.sort();
    assert_eq!(names, known, "fuzz/fuzz_targets/ and TARGETS in tests/fuzz_corpus.rs disagree");
}

#[test]
fn gguf_corpus() {
    replay("gguf");
}

#[test]
fn safetensors_corpus() {
    replay("safetensors");
}

#[test]
fn model_json_corpus() {
    replay("model_json");
}

#[test]
fn tokenizer_corpus() {
    replay("tokenizer");
}

#[test]
fn data_json_corpus() {
    replay("data_json");
}

#[test]
fn parquet_corpus() {
    replay("parquet");
}

#[test]
fn arrow_corpus() {
    replay("arrow");
}

/// The Arrow stream-format seeds (what `datasets` writes) rewritten by the official writers as an
/// Arrow IPC *file* and as Parquet (Snappy-compressed and plain): the file-format and Parquet seeds
/// of fuzz/corpus/. perplex must read each conversion as it reads the original. With
/// PERPLEX_WRITE_FUZZ_SEEDS set, the conversions are (re)written into fuzz/corpus/.
#[test]
fn converted_seeds_read_like_their_stream_originals() {
    use parquet::basic::Compression;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let arrow_dir = corpus.join("arrow");
    let write = std::env::var_os("PERPLEX_WRITE_FUZZ_SEEDS").is_some();
    let stream_seeds: Vec<PathBuf> =
        inputs("arrow").into_iter().filter(|p| p.starts_with(&arrow_dir) && !p.to_string_lossy().ends_with(".file.arrow")).collect();
    assert!(!stream_seeds.is_empty(), "fuzz/corpus/arrow: no stream-format seeds");
    for path in &stream_seeds {
        let original = fuzz::task_data(&std::fs::read(path).unwrap(), TaskFormat::Arrow);
        let batches = || arrow_ipc::reader::StreamReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
        let schema = batches().schema();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();

        let mut file = Vec::new();
        let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut file, &schema).unwrap();
        for batch in batches() {
            writer.write(&batch.unwrap()).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        let mut conversions = vec![(arrow_dir.join(name.replace(".arrow", ".file.arrow")), TaskFormat::Arrow, file)];

        for (compression, suffix) in [(Compression::SNAPPY, "snappy"), (Compression::UNCOMPRESSED, "plain")] {
            let properties = parquet::file::properties::WriterProperties::builder().set_compression(compression).build();
            let mut out = Vec::new();
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema.clone(), Some(properties)).unwrap();
            for batch in batches() {
                writer.write(&batch.unwrap()).unwrap();
            }
            writer.close().unwrap();
            conversions.push((corpus.join("parquet").join(name.replace(".arrow", &format!(".{suffix}.parquet"))), TaskFormat::Parquet, out));
        }

        for (target, format, bytes) in conversions {
            let verdict = fuzz::task_data(&bytes, format);
            assert_eq!(
                verdict.is_ok(),
                original.is_ok(),
                "{}: read as {format:?} gives {verdict:?}, the stream original {original:?}",
                target.display()
            );
            if write {
                std::fs::write(&target, bytes).unwrap();
            }
        }
    }
}
