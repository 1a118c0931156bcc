// Weight access for f32 checkpoints: one element per array slot.
@group(0) @binding(2) var<storage, read> weights: array<f32>;

fn load_weight(i: u32) -> f32 {
    return weights[i];
}
