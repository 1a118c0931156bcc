// Weight access for quantized (GGUF) checkpoints: each row is whole groups of 16 consecutive
// values, a group being three vec2<u32>: (scale, offset) as f32 bits, then 16 signed bytes
// (element j of the group in byte j, little-endian). value = scale * q + offset, exactly ggml's
// dequantized value (src/gpu/tensor.rs, `Group`). Flat index i lies in group i / 16.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn group_header(i: u32) -> vec2<f32> {
    return bitcast<vec2<f32>>(weights_at(3u * (i >> 4u)));
}

// The two words holding element i and its seven neighbours in the same aligned group of eight.
fn quant_pair(i: u32) -> vec2<i32> {
    return bitcast<vec2<i32>>(weights_at(3u * (i >> 4u) + 1u + ((i >> 3u) & 1u)));
}

// The word holding element i and its three neighbours in the same aligned group of four.
fn quant_word(i: u32) -> i32 {
    return quant_pair(i)[(i >> 2u) & 1u];
}

// The four signed bytes of a word as values of the group with this header.
fn dequantize4(header: vec2<f32>, word: i32) -> vec4<f32> {
    let q = vec4<i32>(word << 24u, word << 16u, word << 8u, word) >> vec4<u32>(24u);
    return header.x * vec4<f32>(q) + header.y;
}

fn load_weight(i: u32) -> f32 {
    let header = group_header(i);
    let q = (quant_word(i) << (24u - 8u * (i & 3u))) >> 24u;
    return header.x * f32(q) + header.y;
}

// Four consecutive weights from flat index i, a multiple of 4 (rows are whole groups here).
fn load_weight4(i: u32) -> vec4<f32> {
    return dequantize4(group_header(i), quant_word(i));
}

// Eight consecutive weights from flat index i, a multiple of 8: the header and one word, half the
// fetches of two load_weight4.
fn load_weight8(i: u32) -> mat2x4<f32> {
    let header = group_header(i);
    let words = quant_pair(i);
    return mat2x4<f32>(dequantize4(header, words.x), dequantize4(header, words.y));
}
