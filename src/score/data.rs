//! Reading documents to score: a .jsonl file holds one document per line (field `text`, or the
//! field the user names); any other file is one document of UTF-8 text.

use crate::error::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Document {
    /// The file path, or `path:line` for JSONL.
    pub name: String,
    pub text: String,
}

pub fn read_documents(path: &Path, field: &str) -> Result<Vec<Document>> {
    let bytes = std::fs::read(path).map_err(|e| Error::bad_input(format!("{}: cannot read: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::bad_input(format!(
            "{}: not UTF-8 text (invalid byte at offset {}); convert it, e.g. `iconv -f latin1 -t utf-8`",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let name = path.display().to_string();
    let docs = if path.extension().is_some_and(|e| e == "jsonl") {
        let mut docs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::bad_input(format!("{name}:{}: invalid JSON: {e}", i + 1)))?;
            let doc = value.get(field).and_then(|v| v.as_str()).ok_or_else(|| {
                Error::bad_input(format!(
                    "{name}:{}: no string field \"{field}\" (choose the field with --field)",
                    i + 1
                ))
            })?;
            docs.push(Document { name: format!("{name}:{}", i + 1), text: doc.to_string() });
        }
        docs
    } else {
        vec![Document { name, text }]
    };
    if docs.iter().all(|d| d.text.is_empty()) {
        return Err(Error::bad_input(format!("{}: no text to score (the file is empty)", path.display())));
    }
    Ok(docs)
}

/// Words as lm-evaluation-harness counts them: `len(re.split(r"\s+", text))`.
pub fn word_count(text: &str) -> usize {
    static SPLIT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    SPLIT.get_or_init(|| regex::Regex::new(r"\s+").unwrap()).split(text).count()
}

#[cfg(test)]
mod tests {
    use super::word_count;

    #[test]
    fn words_follow_python_re_split() {
        // Python: len(re.split(r"\s+", s))
        assert_eq!(word_count("a b  c"), 3);
        assert_eq!(word_count(" a b "), 4);
        assert_eq!(word_count(""), 1);
        assert_eq!(word_count("one\n\ntwo\u{3000}three"), 3);
    }
}
