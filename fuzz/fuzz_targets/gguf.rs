//! GGUF: header, metadata, tensor directory, config and tokenizer from metadata, tensor data.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = perplex::fuzz::gguf(data);
});
