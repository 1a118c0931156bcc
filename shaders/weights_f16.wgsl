// Weight access for f16 checkpoints: the bytes of the safetensors file, two halves per u32
// (element 2j in the low half), eight per vec4<u32> word, widened to f32 here. Padded to whole words.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn load_weight(i: u32) -> f32 {
    let pair = unpack2x16float(weights_at(i >> 3u)[(i >> 1u) & 3u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Four consecutive weights from flat index i, a multiple of 4: half a word.
fn load_weight4(i: u32) -> vec4<f32> {
    let word = weights_at(i >> 3u);
    let four = select(word.xy, word.zw, (i & 4u) != 0u);
    return vec4<f32>(unpack2x16float(four.x), unpack2x16float(four.y));
}

// Eight consecutive weights from flat index i, a multiple of 8: one word.
fn load_weight8(i: u32) -> mat2x4<f32> {
    let word = weights_at(i >> 3u);
    return mat2x4<f32>(
        vec4<f32>(unpack2x16float(word.x), unpack2x16float(word.y)),
        vec4<f32>(unpack2x16float(word.z), unpack2x16float(word.w)),
    );
}
