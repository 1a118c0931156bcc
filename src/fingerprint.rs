//! Fingerprints that tell whether a finished unit still describes the files it was measured on.
//!
//! A checkpoint's fingerprint covers the files the engine reads (`*.json`, `*.safetensors`,
//! `*.gguf`, `tokenizer.model`): files up to [`FULL_HASH_LIMIT`] are hashed whole; larger ones
//! by name, size, modification time and their first [`HEAD_BYTES`] (a safetensors header lists
//! every tensor's name, dtype, shape and offsets). Data files are always hashed whole. The hash
//! is FNV-1a 64, stable across runs, platforms and Rust versions.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files up to this size are hashed whole.
pub const FULL_HASH_LIMIT: u64 = 64 << 20;
/// How much of a larger file is hashed, with its size and modification time.
pub const HEAD_BYTES: usize = 1 << 20;

pub use crate::hash::Fnv1a as Hasher;

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::bad_input(format!("{}: cannot read: {e}", path.display()))
}

/// Hashes a whole file into `hasher`.
fn hash_contents(path: &Path, hasher: &mut Hasher) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(|e| io_error(path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
    }
}

/// A data file's content hash.
pub fn data_file(path: &Path) -> Result<String> {
    let mut hasher = Hasher::default();
    if path.is_dir() {
        // A dataset directory (Arrow files written by `save_to_disk`, one file per split, ...).
        for file in files_below(path)? {
            hasher.field(&file.strip_prefix(path).unwrap_or(&file).to_string_lossy());
            hash_contents(&file, &mut hasher)?;
        }
    } else {
        hash_contents(path, &mut hasher)?;
    }
    Ok(hasher.hex())
}

/// Every regular file below `dir`, sorted by path.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))? {
            let path = entry.map_err(|e| io_error(&dir, e))?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether the engine reads this file of a checkpoint directory.
fn is_model_file(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".safetensors") || name.ends_with(".gguf") || name == "tokenizer.model"
}

/// A checkpoint's fingerprint: a directory's model files, or a single file (GGUF).
pub fn checkpoint(path: &Path) -> Result<String> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, e))? {
            let file = entry.map_err(|e| io_error(path, e))?.path();
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // Hub snapshots hold symbolic links to blobs: `is_file` follows them.
            if is_model_file(&name) && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut hasher = Hasher::default();
    for file in &files {
        let metadata = std::fs::metadata(file).map_err(|e| io_error(file, e))?;
        hasher.field(&file.file_name().unwrap_or_default().to_string_lossy());
        hasher.field(&metadata.len().to_string());
        if metadata.len() <= FULL_HASH_LIMIT {
            hash_contents(file, &mut hasher)?;
        } else {
            let modified = metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            hasher.field(&modified.map_or(0, |d| d.as_nanos()).to_string());
            let mut head = vec![0u8; HEAD_BYTES];
            let mut reader = std::fs::File::open(file).map_err(|e| io_error(file, e))?;
            let n = reader.read(&mut head).map_err(|e| io_error(file, e))?;
            hasher.update(&head[..n]);
        }
    }
    Ok(hasher.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_test_vectors() {
        assert_eq!(Hasher::default().hex(), "cbf29ce484222325");
        assert_eq!(Hasher::default().update(b"a").hex(), "af63dc4c8601ec8c");
        assert_eq!(Hasher::default().update(b"foobar").hex(), "85944171f73967e8");
    }

    #[test]
    fn checkpoint_fingerprint_follows_model_files_only() {
        let dir = std::env::temp_dir().join(format!("perplex-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), [1u8, 2, 3]).unwrap();
        let first = checkpoint(&dir).unwrap();
        std::fs::write(dir.join("README.md"), "notes").unwrap();
        assert_eq!(checkpoint(&dir).unwrap(), first, "a README is not a model file");
        std::fs::write(dir.join("model.safetensors"), [1u8, 2, 4]).unwrap();
        assert_ne!(checkpoint(&dir).unwrap(), first, "changed weights");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
