// f16 weights (read by weights_halves.wgsl): a pair of IEEE halves widened to f32.

fn widen_pair(word: u32) -> vec2<f32> {
    return unpack2x16float(word);
}
