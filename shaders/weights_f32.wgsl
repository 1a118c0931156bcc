// Weight access for f32 checkpoints. Elements are addressed flat (row * depth + k); the buffer is
// padded to whole vec4s.
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

fn load_weight(i: u32) -> f32 {
    return weights_at(i >> 2u)[i & 3u];
}

// Four consecutive weights from flat index i, a multiple of 4.
fn load_weight4(i: u32) -> vec4<f32> {
    return weights_at(i >> 2u);
}
