// Weight access for f16 checkpoints: the bytes of the safetensors file, two halves per u32
// (element 2j in the low half), widened to f32 here. Padded to whole groups of four.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn load_weight(i: u32) -> f32 {
    let pair = unpack2x16float(weights_at(i >> 2u)[(i >> 1u) & 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Four consecutive weights from flat index i (a multiple of 4 when rows are ALIGNED).
fn load_weight4(i: u32) -> vec4<f32> {
    if (ALIGNED) {
        let words = weights_at(i >> 2u);
        return vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y));
    }
    return vec4<f32>(load_weight(i), load_weight(i + 1u), load_weight(i + 2u), load_weight(i + 3u));
}
