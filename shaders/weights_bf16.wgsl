// bf16 weights (read by weights_halves.wgsl): a bfloat16 is the top half of an f32, so widening
// is a 16-bit shift.

fn widen_pair(word: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}
