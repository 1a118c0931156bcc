// attention.wgsl's readers on the texture path: the generated bindings read qkv and positions a
// whole 16-byte word at a time (`qkv4_at`, `position4_at`); a value is picked from its word.
fn qkv_at(i: u32) -> f32 { return qkv4_at(i >> 2u)[i & 3u]; }
fn position_at(row: u32) -> u32 { return position4_at(row >> 2u)[row & 3u]; }
