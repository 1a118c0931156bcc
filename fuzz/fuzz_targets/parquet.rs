//! Task data in Parquet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perplex::fuzz::TaskFormat;

fuzz_target!(|data: &[u8]| {
    let _ = perplex::fuzz::task_data(data, TaskFormat::Parquet);
});
