//! Where a model's files are read from: a directory on disk (weights memory-mapped), or files
//! held in memory (those a browser page was handed). Loaders take any [`ModelDir`].

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's bytes: memory-mapped, or held in memory.
pub enum FileBytes {
    Mapped(Mmap),
    Held(Arc<Vec<u8>>),
}

impl FileBytes {
    /// Memory-maps `path`.
    pub fn map(path: &Path) -> Result<FileBytes> {
        let file = std::fs::File::open(path).map_err(|e| Error::bad_input(format!("{}: cannot open: {e}", path.display())))?;
        // SAFETY: the map is read-only; a file modified while we read it is the user's problem and
        // at worst gives wrong numbers for this run, never memory unsafety in the safe code we call.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::bad_input(format!("{}: cannot memory-map: {e}", path.display())))?;
        Ok(FileBytes::Mapped(map))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Held(bytes) => bytes,
        }
    }
}

/// A model's files by name (`config.json`, `model.safetensors`, ...).
pub trait ModelDir {
    /// The directory, to name it in messages.
    fn location(&self) -> PathBuf;
    /// Where the file would be, to name it in messages.
    fn path(&self, name: &str) -> PathBuf;
    fn has(&self, name: &str) -> bool;
    fn bytes(&self, name: &str) -> Result<FileBytes>;

    fn text(&self, name: &str) -> Result<String> {
        String::from_utf8(self.bytes(name)?.to_vec()).map_err(|e| Error::bad_input(format!("{}: cannot read: {e}", self.path(name).display())))
    }
}

/// A directory on disk (`Path`, `PathBuf`, ...).
impl<P: AsRef<Path> + ?Sized> ModelDir for P {
    fn location(&self) -> PathBuf {
        self.as_ref().to_path_buf()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.as_ref().join(name)
    }

    fn has(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    fn bytes(&self, name: &str) -> Result<FileBytes> {
        FileBytes::map(&self.path(name))
    }

    fn text(&self, name: &str) -> Result<String> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(|e| Error::bad_input(format!("{}: cannot read: {e}", path.display())))
    }
}

/// Files held in memory, by name, under a label that stands for their directory in messages.
#[derive(Clone, Default)]
pub struct HeldFiles {
    pub label: String,
    files: HashMap<String, Arc<Vec<u8>>>,
}

impl HeldFiles {
    pub fn new(label: &str) -> HeldFiles {
        HeldFiles { label: label.to_string(), files: HashMap::new() }
    }

    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        self.files.insert(name.to_string(), Arc::new(bytes));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

impl ModelDir for HeldFiles {
    fn location(&self) -> PathBuf {
        PathBuf::from(&self.label)
    }

    /// Files picked in a page have no directory: their name is all there is.
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    fn bytes(&self, name: &str) -> Result<FileBytes> {
        let bytes = self.files.get(name).ok_or_else(|| Error::bad_input(format!("{}: missing", self.path(name).display())))?;
        Ok(FileBytes::Held(bytes.clone()))
    }
}
