//! A small tmpfs to fill up, for the full-disk tests: mounting needs root, and where this process
//! may not mount, [`SmallDisk::mount`] says so and the test is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// tmpfs counts its space in pages of this size.
pub const PAGE: u64 = 4096;

/// A 256 KiB tmpfs, unmounted when dropped, that a filler file can fill up.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    /// None (after a notice) where this process may not mount (not root, or a container without
    /// the capability).
    pub fn mount(dir: &Path, test: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let mount = Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"]).arg(dir).output();
        match mount {
            Ok(output) if output.status.success() => Some(SmallDisk { dir: dir.to_path_buf() }),
            Ok(output) => {
                eprintln!("SKIPPED {test}: cannot mount a tmpfs (needs root): {}", String::from_utf8_lossy(&output.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot run mount: {e}");
                None
            }
        }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Fills the disk, then frees `pages` pages of it.
    pub fn fill_leaving(&self, pages: u64) {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0u8; PAGE as usize];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let len = file.metadata().unwrap().len();
        let full_pages = len / PAGE;
        assert!(full_pages > pages, "the tmpfs holds only {len} bytes");
        file.set_len((full_pages - pages) * PAGE).unwrap();
    }

    /// Removes the filler: the disk has room again.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Every line of a file ends with its newline: nothing cut short is left behind.
pub fn assert_whole_lines(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{}: a line cut short is left at the end", path.display());
}
