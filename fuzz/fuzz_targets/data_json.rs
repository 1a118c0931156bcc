//! Text to score (plain and JSONL) and task data in JSON Lines / JSON (gzipped when the input starts with the gzip magic), through every task formulation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perplex::fuzz::TaskFormat;

fuzz_target!(|data: &[u8]| {
    let _ = perplex::fuzz::documents(data);
    let format = if data.starts_with(&[0x1f, 0x8b]) { TaskFormat::JsonlGz } else { TaskFormat::Jsonl };
    let _ = perplex::fuzz::task_data(data, format);
});
