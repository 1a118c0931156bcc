//! config.json (family parsers) and model.safetensors.index.json (shard lists): the same JSON input through both.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = perplex::fuzz::config_json(data);
    let _ = perplex::fuzz::shard_index(data);
});
