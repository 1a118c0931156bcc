//! Task data in Arrow IPC (file format, and the stream format `datasets.save_to_disk` writes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use perplex::fuzz::TaskFormat;

fuzz_target!(|data: &[u8]| {
    let _ = perplex::fuzz::task_data(data, TaskFormat::Arrow);
});
