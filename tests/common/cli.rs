//! Helpers for tests that run the `perplex` binary: scratch directories, the command itself, and
//! the checks every error message must pass.

use super::repo;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The committed tiny Llama (128 positions), fast enough for any test.
pub fn tiny_model() -> PathBuf {
    repo().join("models/tiny/llama-f32")
}

/// A scratch directory under the system temp dir, removed on drop (also when the test fails).
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// A fresh directory named after the test (and the process, so test binaries do not meet).
    pub fn new(test: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("perplex-test-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `<scratch>/<name>`, creating its directory.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }

    /// A small English document in `<scratch>/<name>`.
    pub fn text(&self, name: &str) -> PathBuf {
        self.write(
            name,
            "The cat sat on the mat. It was a sunny day, and the children played in the park.\n\
             Numbers like 42 and 3.14 appear too.\n",
        )
    }

    /// A copy of the tiny model (without its reference outputs) in `<scratch>/<name>`, to break.
    pub fn tiny_copy(&self, name: &str) -> PathBuf {
        let dir = self.join(name);
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(tiny_model()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "reference.json" {
                fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The `perplex` binary, without the environment that would change its error output.
pub fn perplex_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_perplex"));
    command.env_remove("RUST_BACKTRACE").env_remove("RUST_LOG");
    command
}

/// Runs `perplex ARGS...`.
pub fn perplex<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    perplex_command().args(args).output().expect("run the perplex binary")
}

/// `perplex ppl --model MODEL --data DATA EXTRA...`
pub fn ppl(model: impl AsRef<OsStr>, data: impl AsRef<OsStr>, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec!["ppl".as_ref(), "--model".as_ref(), model.as_ref(), "--data".as_ref(), data.as_ref()];
    args.extend(extra.iter().map(OsStr::new));
    perplex(args)
}

/// `perplex eval --model <tiny model> --task TASK --data DATA EXTRA...`
pub fn eval(task: &str, data: impl AsRef<OsStr>, extra: &[&str]) -> Output {
    let model = tiny_model();
    let mut args: Vec<&OsStr> =
        vec!["eval".as_ref(), "--model".as_ref(), model.as_ref(), "--task".as_ref(), task.as_ref(), "--data".as_ref(), data.as_ref()];
    args.extend(extra.iter().map(OsStr::new));
    perplex(args)
}

/// stderr without the Vulkan loader's harmless environment complaints.
pub fn clean_stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).lines().filter(|line| !line.contains("XDG_RUNTIME_DIR")).collect::<Vec<_>>().join("\n")
}

/// Exit code `code`, no panic, and on stderr nothing but notes and then one error: an `error: `
/// line, perhaps continued by indented lines (a list of choices), that contains every phrase.
pub fn assert_error(output: &Output, code: i32, phrases: &[&str]) {
    let raw = String::from_utf8_lossy(&output.stderr).to_string();
    let stderr = clean_stderr(output);
    assert!(!raw.contains("panicked") && !raw.contains("RUST_BACKTRACE"), "the binary panicked:\n{raw}");
    assert_eq!(output.status.code(), Some(code), "expected exit code {code}; stderr:\n{raw}");
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("error: ")).collect();
    let [error] = errors[..] else { panic!("one line starting with \"error: \":\n{raw}") };
    assert!(lines[..error].iter().all(|line| line.starts_with("note: ")), "only notes before the error:\n{raw}");
    assert!(lines[error + 1..].iter().all(|line| line.starts_with(' ')), "nothing after the error but its indented lines:\n{raw}");
    let message = lines[error..].join("\n");
    for phrase in phrases {
        assert!(message.contains(phrase), "the error should mention {phrase:?}:\n{raw}");
    }
}

/// [`assert_error`] with the exit code of a user's mistake.
pub fn assert_bad_input(output: &Output, phrases: &[&str]) {
    assert_error(output, 2, phrases);
}

/// Exit code 0 and no panic.
pub fn assert_success(output: &Output) -> &Output {
    let raw = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!raw.contains("panicked"), "the binary panicked:\n{raw}");
    assert_eq!(output.status.code(), Some(0), "stderr:\n{raw}\nstdout:\n{}", String::from_utf8_lossy(&output.stdout));
    output
}

/// Rewrites a JSON file through `edit`.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut json: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut json);
    fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// Rewrites a model directory's config.json through `edit`.
pub fn edit_config(model: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    edit_json(&model.join("config.json"), |json| edit(json.as_object_mut().unwrap()));
}
