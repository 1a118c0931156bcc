// Weight access for quantized (GGUF) checkpoints: each row is whole groups of 16 consecutive
// values, a group being (scale, offset) as f32 and 16 signed bytes, value = scale * q + offset,
// exactly ggml's dequantized value (src/dtype.rs, `Group`). Flat index i lies in group
// g = i / 16. On the GPU consecutive groups come in pairs of three 16-byte words
// (`group_pairs`): word 3p holds the headers of groups 2p (xy) and 2p + 1 (zw), words 3p + 1 and
// 3p + 2 their 16 bytes each (element j of a group in byte j, little-endian).
// Read through `weights_at(word)`, defined by the generated binding prelude (src/gpu/kernels.rs).

// The first word of the pair of groups holding element i.
fn pair_word(i: u32) -> u32 {
    return 3u * (i >> 5u);
}

// Whether element i's group is the second of its pair.
fn second_of_pair(i: u32) -> bool {
    return ((i >> 4u) & 1u) == 1u;
}

fn group_header(i: u32) -> vec2<f32> {
    let headers = weights_at(pair_word(i));
    return bitcast<vec2<f32>>(select(headers.xy, headers.zw, second_of_pair(i)));
}

// The 16 integers of element i's group, four per word.
fn group_quads(i: u32) -> vec4<i32> {
    return bitcast<vec4<i32>>(weights_at(pair_word(i) + select(1u, 2u, second_of_pair(i))));
}

// The four signed bytes of a word as values of the group with this header.
fn dequantize4(header: vec2<f32>, word: i32) -> vec4<f32> {
    let q = vec4<i32>(word << 24u, word << 16u, word << 8u, word) >> vec4<u32>(24u);
    return header.x * vec4<f32>(q) + header.y;
}

fn load_weight(i: u32) -> f32 {
    let q = (group_quads(i)[(i >> 2u) & 3u] << (24u - 8u * (i & 3u))) >> 24u;
    let header = group_header(i);
    return header.x * f32(q) + header.y;
}

// Four consecutive weights from flat index i, a multiple of 4 (rows are whole groups here).
fn load_weight4(i: u32) -> vec4<f32> {
    return dequantize4(group_header(i), group_quads(i)[(i >> 2u) & 3u]);
}

// A whole group, for steps of sixteen values (`DepthStep::Sixteen`): two fetches, where four
// steps of four take eight.
struct Group16 {
    header: vec2<f32>,
    quads: vec4<i32>,
}

// The group starting at flat index i, a multiple of 16.
fn load_group16(i: u32) -> Group16 {
    return Group16(group_header(i), group_quads(i));
}

// Values 4q .. 4q + 3 of a group.
fn group16_quarter(group: Group16, q: u32) -> vec4<f32> {
    return dequantize4(group.header, group.quads[q]);
}

// Two whole groups, for steps of thirty-two values (`DepthStep::ThirtyTwo`): three fetches, where
// two steps of sixteen take four.
struct GroupPair32 {
    first: Group16,
    second: Group16,
}

// The pair of groups starting at flat index i, a multiple of 32.
fn load_group_pair32(i: u32) -> GroupPair32 {
    let word = pair_word(i);
    let headers = bitcast<vec4<f32>>(weights_at(word));
    return GroupPair32(
        Group16(headers.xy, bitcast<vec4<i32>>(weights_at(word + 1u))),
        Group16(headers.zw, bitcast<vec4<i32>>(weights_at(word + 2u))),
    );
}
