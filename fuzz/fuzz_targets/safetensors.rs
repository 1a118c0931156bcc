//! model.safetensors: header, tensor table, tensor data.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = perplex::fuzz::safetensors(data);
});
