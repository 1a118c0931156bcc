// Weight access for 16-bit checkpoints (f16, bf16): the bytes of the safetensors file, two values
// per u32 (element 2j in the low half), eight per vec4<u32> word, widened to f32 by the format's
// `widen_pair` (weights_f16.wgsl, weights_bf16.wgsl, prepended). Padded to whole words.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn load_weight(i: u32) -> f32 {
    let pair = widen_pair(weights_at(i >> 3u)[(i >> 1u) & 3u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Four consecutive weights from flat index i, a multiple of 4: half a word.
fn load_weight4(i: u32) -> vec4<f32> {
    let word = weights_at(i >> 3u);
    let four = select(word.xy, word.zw, (i & 4u) != 0u);
    return vec4<f32>(widen_pair(four.x), widen_pair(four.y));
}

// Eight consecutive weights from flat index i, a multiple of 8: one word.
fn load_weight8(i: u32) -> mat2x4<f32> {
    let word = weights_at(i >> 3u);
    return mat2x4<f32>(
        vec4<f32>(widen_pair(word.x), widen_pair(word.y)),
        vec4<f32>(widen_pair(word.z), widen_pair(word.w)),
    );
}
