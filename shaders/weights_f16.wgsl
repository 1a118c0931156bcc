// Weight access for f16 checkpoints: two halves packed per u32 (element 2j in the low half),
// exactly the bytes of the safetensors file; widened to f32 here.
@group(0) @binding(2) var<storage, read> weights: array<u32>;

fn load_weight(i: u32) -> f32 {
    let pair = unpack2x16float(weights[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}
