// Weight access for bf16 checkpoints: two bfloat16 per u32 (element 2j in the low half), eight per
// vec4<u32> word. A bfloat16 is the top half of an f32, so widening is a 16-bit shift. Padded to
// whole words.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn widen_bf16_pair(word: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

fn load_weight(i: u32) -> f32 {
    let pair = widen_bf16_pair(weights_at(i >> 3u)[(i >> 1u) & 3u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Four consecutive weights from flat index i, a multiple of 4: half a word.
fn load_weight4(i: u32) -> vec4<f32> {
    let word = weights_at(i >> 3u);
    let four = select(word.xy, word.zw, (i & 4u) != 0u);
    return vec4<f32>(widen_bf16_pair(four.x), widen_bf16_pair(four.y));
}

// Eight consecutive weights from flat index i, a multiple of 8: one word.
fn load_weight8(i: u32) -> mat2x4<f32> {
    let word = weights_at(i >> 3u);
    return mat2x4<f32>(
        vec4<f32>(widen_bf16_pair(word.x), widen_bf16_pair(word.y)),
        vec4<f32>(widen_bf16_pair(word.z), widen_bf16_pair(word.w)),
    );
}
