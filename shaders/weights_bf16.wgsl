// Weight access for bf16 checkpoints: two bfloat16 per u32 (element 2j in the low half). A
// bfloat16 is the top half of an f32, so widening is a 16-bit shift. Padded to whole groups of four.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn widen_bf16_pair(word: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

fn load_weight(i: u32) -> f32 {
    let pair = widen_bf16_pair(weights_at(i >> 2u)[(i >> 1u) & 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Four consecutive weights from flat index i (a multiple of 4 when rows are ALIGNED).
fn load_weight4(i: u32) -> vec4<f32> {
    if (ALIGNED) {
        let words = weights_at(i >> 2u);
        return vec4<f32>(widen_bf16_pair(words.x), widen_bf16_pair(words.y));
    }
    return vec4<f32>(load_weight(i), load_weight(i + 1u), load_weight(i + 2u), load_weight(i + 3u));
}
