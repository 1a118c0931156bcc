// attention.wgsl's readers on storage buffers: the generated bindings read qkv and positions
// value by value (`qkv_at`, `position_at`: rows need not start on a vec4 there); a word is four
// values.
fn qkv4_at(word: u32) -> vec4<f32> { return vec4<f32>(qkv_at(4u * word), qkv_at(4u * word + 1u), qkv_at(4u * word + 2u), qkv_at(4u * word + 3u)); }
