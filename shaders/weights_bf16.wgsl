// Weight access for bf16 checkpoints: two bfloat16 packed per u32 (element 2j in the low half).
// A bfloat16 is the top half of an f32, so widening is a 16-bit shift.
@group(0) @binding(2) var<storage, read> weights: array<u32>;

fn load_weight(i: u32) -> f32 {
    let word = weights[i >> 1u];
    let bits = select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u);
    return bitcast<f32>(bits);
}
