//! ggml's block formats, converted into [`Group`]s of 16 values (the GPU's one quantized form)
//! whose values are gguf-py's `gguf.quants.dequantize` values bit for bit.

use crate::dtype::{DType, Group, GROUP};
use half::f16;

/// The largest block of any type this reader dequantizes (the k-quants' super-block).
const MAX_BLOCK: usize = 256;

/// A ggml storage type: `block` values are stored in `bytes` bytes.
#[derive(Debug)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block: usize,
    pub bytes: usize,
    pub decode: Decode,
}

#[derive(Debug)]
pub enum Decode {
    /// Handed out as stored.
    Float(DType),
    /// Converted one block at a time into [`Group`]s.
    Blocks(fn(&[u8], &mut [Group])),
    /// Known (so its size is), but not read by perplex.
    Unsupported,
}

/// Every type id of gguf-py's `GGMLQuantizationType`, with `GGML_QUANT_SIZES`: the size of each is
/// needed to check that a file's tensors lie inside it, even for types perplex does not read.
pub const TYPES: &[GgmlType] = &[
    GgmlType { id: 0, name: "F32", block: 1, bytes: 4, decode: Decode::Float(DType::F32) },
    GgmlType { id: 1, name: "F16", block: 1, bytes: 2, decode: Decode::Float(DType::F16) },
    GgmlType { id: 2, name: "Q4_0", block: 32, bytes: 18, decode: Decode::Blocks(q4_0) },
    GgmlType { id: 3, name: "Q4_1", block: 32, bytes: 20, decode: Decode::Blocks(q4_1) },
    GgmlType { id: 6, name: "Q5_0", block: 32, bytes: 22, decode: Decode::Blocks(q5_0) },
    GgmlType { id: 7, name: "Q5_1", block: 32, bytes: 24, decode: Decode::Blocks(q5_1) },
    GgmlType { id: 8, name: "Q8_0", block: 32, bytes: 34, decode: Decode::Blocks(q8_0) },
    GgmlType { id: 9, name: "Q8_1", block: 32, bytes: 40, decode: Decode::Unsupported },
    GgmlType { id: 10, name: "Q2_K", block: 256, bytes: 84, decode: Decode::Blocks(q2_k) },
    GgmlType { id: 11, name: "Q3_K", block: 256, bytes: 110, decode: Decode::Blocks(q3_k) },
    GgmlType { id: 12, name: "Q4_K", block: 256, bytes: 144, decode: Decode::Blocks(q4_k) },
    GgmlType { id: 13, name: "Q5_K", block: 256, bytes: 176, decode: Decode::Blocks(q5_k) },
    GgmlType { id: 14, name: "Q6_K", block: 256, bytes: 210, decode: Decode::Blocks(q6_k) },
    GgmlType { id: 15, name: "Q8_K", block: 256, bytes: 292, decode: Decode::Unsupported },
    GgmlType { id: 16, name: "IQ2_XXS", block: 256, bytes: 66, decode: Decode::Unsupported },
    GgmlType { id: 17, name: "IQ2_XS", block: 256, bytes: 74, decode: Decode::Unsupported },
    GgmlType { id: 18, name: "IQ3_XXS", block: 256, bytes: 98, decode: Decode::Unsupported },
    GgmlType { id: 19, name: "IQ1_S", block: 256, bytes: 50, decode: Decode::Unsupported },
    GgmlType { id: 20, name: "IQ4_NL", block: 32, bytes: 18, decode: Decode::Unsupported },
    GgmlType { id: 21, name: "IQ3_S", block: 256, bytes: 110, decode: Decode::Unsupported },
    GgmlType { id: 22, name: "IQ2_S", block: 256, bytes: 82, decode: Decode::Unsupported },
    GgmlType { id: 23, name: "IQ4_XS", block: 256, bytes: 136, decode: Decode::Unsupported },
    GgmlType { id: 24, name: "I8", block: 1, bytes: 1, decode: Decode::Unsupported },
    GgmlType { id: 25, name: "I16", block: 1, bytes: 2, decode: Decode::Unsupported },
    GgmlType { id: 26, name: "I32", block: 1, bytes: 4, decode: Decode::Unsupported },
    GgmlType { id: 27, name: "I64", block: 1, bytes: 8, decode: Decode::Unsupported },
    GgmlType { id: 28, name: "F64", block: 1, bytes: 8, decode: Decode::Unsupported },
    GgmlType { id: 29, name: "IQ1_M", block: 256, bytes: 56, decode: Decode::Unsupported },
    GgmlType { id: 30, name: "BF16", block: 1, bytes: 2, decode: Decode::Float(DType::BF16) },
    GgmlType { id: 34, name: "TQ1_0", block: 256, bytes: 54, decode: Decode::Unsupported },
    GgmlType { id: 35, name: "TQ2_0", block: 256, bytes: 66, decode: Decode::Unsupported },
    GgmlType { id: 39, name: "MXFP4", block: 32, bytes: 17, decode: Decode::Unsupported },
    GgmlType { id: 40, name: "NVFP4", block: 64, bytes: 36, decode: Decode::Unsupported },
    GgmlType { id: 41, name: "Q1_0", block: 128, bytes: 18, decode: Decode::Unsupported },
];

/// Converts whole blocks into the GPU's quantized form, [`Group`]s of 16 (file order).
pub fn dequantize(bytes: &[u8], kind: &GgmlType, decode: fn(&[u8], &mut [Group])) -> Vec<u8> {
    let groups_per_block = kind.block / GROUP;
    let mut out = Vec::with_capacity(bytes.len() / kind.bytes * groups_per_block * Group::BYTES);
    let mut buffer = [Group { scale: 0.0, offset: NO_OFFSET, q: [0; GROUP] }; MAX_BLOCK / GROUP];
    for block in bytes.chunks_exact(kind.bytes) {
        let groups = &mut buffer[..groups_per_block];
        decode(block, groups);
        groups.iter().for_each(|group| group.write(&mut out));
    }
    out
}

// ---- ggml block formats ---------------------------------------------------------------------
// Each decoder turns one block into groups of 16 (scale, offset, integers) whose values
// `scale * q + offset` are gguf-py's dequantized values bit for bit: scales are f16, a group scale
// `d * sc` is formed first as gguf-py does, and ggml's `- m` becomes an offset of `-m`.

/// The offset of kinds without a minimum: adding -0.0 changes no value, not even -0.0.
const NO_OFFSET: f32 = -0.0;

fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Fills a block's groups: group g gets `scale_offset(g)`, value v of the block the integer `q(v)`.
fn fill(out: &mut [Group], scale_offset: impl Fn(usize) -> (f32, f32), q: impl Fn(usize) -> i32) {
    for (g, group) in out.iter_mut().enumerate() {
        let (scale, offset) = scale_offset(g);
        *group = Group { scale, offset, q: std::array::from_fn(|j| q(g * GROUP + j) as i8) };
    }
}

/// Value v of 32 stored as 16 bytes of 4-bit halves: low nibbles first, then high.
fn nibble(qs: &[u8], v: usize) -> u8 {
    if v < 16 { qs[v] & 0x0F } else { qs[v - 16] >> 4 }
}

/// The 5-bit value v of Q5_0/Q5_1: low nibbles in `qs`, fifth bits in the 32-bit word `qh`.
fn five_bit(qh: &[u8], qs: &[u8], v: usize) -> u8 {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibble(qs, v) | ((((high >> v) & 1) as u8) << 4)
}

/// 32 values: f16 scale, 16 bytes of 4-bit values offset by 8.
fn q4_0(block: &[u8], out: &mut [Group]) {
    let d = half_at(block, 0);
    fill(out, |_| (d, NO_OFFSET), |v| nibble(&block[2..18], v) as i32 - 8);
}

/// 32 values: f16 scale and minimum, 16 bytes of 4-bit values.
fn q4_1(block: &[u8], out: &mut [Group]) {
    let (d, m) = (half_at(block, 0), half_at(block, 2));
    fill(out, |_| (d, m), |v| nibble(&block[4..20], v) as i32);
}

/// 32 values: f16 scale, 4 bytes of fifth bits, 16 bytes of low nibbles; offset by 16.
fn q5_0(block: &[u8], out: &mut [Group]) {
    let d = half_at(block, 0);
    fill(out, |_| (d, NO_OFFSET), |v| five_bit(&block[2..6], &block[6..22], v) as i32 - 16);
}

/// 32 values: f16 scale and minimum, 4 bytes of fifth bits, 16 bytes of low nibbles.
fn q5_1(block: &[u8], out: &mut [Group]) {
    let (d, m) = (half_at(block, 0), half_at(block, 2));
    fill(out, |_| (d, m), |v| five_bit(&block[4..8], &block[8..24], v) as i32);
}

/// 32 values: f16 scale, 32 signed bytes.
fn q8_0(block: &[u8], out: &mut [Group]) {
    let d = half_at(block, 0);
    fill(out, |_| (d, NO_OFFSET), |v| block[2 + v] as i8 as i32);
}

/// Value v of a K-quant's 2-bit array (Q2_K, Q3_K): 128 values per 32 bytes, four to a byte.
fn two_bit(qs: &[u8], v: usize) -> u8 {
    let (half, shift, k) = (v / 128, (v % 128) / 32, v % 32);
    (qs[half * 32 + k] >> (2 * shift)) & 3
}

/// 256 values in 16 groups of 16: a byte per group (low nibble scale, high nibble minimum, both
/// times a f16 super-scale), 2-bit values four to a byte.
fn q2_k(block: &[u8], out: &mut [Group]) {
    let (scales, qs) = (&block[0..16], &block[16..80]);
    let (d, dmin) = (half_at(block, 80), half_at(block, 82));
    fill(out, |g| (d * (scales[g] & 0x0F) as f32, -(dmin * (scales[g] >> 4) as f32)), |v| two_bit(qs, v) as i32);
}

/// 256 values in 16 groups of 16: 6-bit signed group scales packed in 12 bytes, 2 low bits per
/// value four to a byte plus a high-bit mask (a clear bit subtracts 4).
fn q3_k(block: &[u8], out: &mut [Group]) {
    let (hmask, qs, packed) = (&block[0..32], &block[32..96], &block[96..108]);
    let d = half_at(block, 108);
    let scale = |g: usize| -> f32 {
        let low = if g < 8 { packed[g] & 0x0F } else { packed[g - 8] >> 4 };
        let high = (packed[8 + g % 4] >> (2 * (g / 4))) & 3;
        ((low | (high << 4)) as i8 - 32) as f32
    };
    let q = |v: usize| {
        let high_clear = ((hmask[v % 32] >> (v / 32)) & 1) ^ 1;
        two_bit(qs, v) as i32 - ((high_clear as i32) << 2)
    };
    fill(out, |g| (d * scale(g), NO_OFFSET), q);
}

/// The eight 6-bit (scale, minimum) pairs of Q4_K/Q5_K, packed in 12 bytes.
fn k_scale_min(packed: &[u8], g: usize) -> (u8, u8) {
    if g < 4 {
        (packed[g] & 0x3F, packed[g + 4] & 0x3F)
    } else {
        (
            (packed[g + 4] & 0x0F) | ((packed[g - 4] >> 2) & 0x30),
            (packed[g + 4] >> 4) | ((packed[g] >> 2) & 0x30),
        )
    }
}

/// Scale and offset of group g (of 16) in a Q4_K/Q5_K block, whose scales cover 32 values each.
fn k_group(block: &[u8], g: usize) -> (f32, f32) {
    let (d, dmin) = (half_at(block, 0), half_at(block, 2));
    let (sc, m) = k_scale_min(&block[4..16], g / 2);
    (d * sc as f32, -(dmin * m as f32))
}

/// Value v's low 4 bits in Q4_K/Q5_K: scale groups 2c and 2c+1 share 32 bytes, low nibbles then high.
fn k_nibble(qs: &[u8], v: usize) -> u8 {
    let (g, k) = (v / 32, v % 32);
    (qs[(g / 2) * 32 + k] >> (4 * (g % 2))) & 0x0F
}

/// 256 values in 8 groups of 32: f16 super-scale and super-minimum, 6-bit group scales and
/// minimums, 4-bit values.
fn q4_k(block: &[u8], out: &mut [Group]) {
    fill(out, |g| k_group(block, g), |v| k_nibble(&block[16..144], v) as i32);
}

/// Q4_K plus a fifth bit per value: bit g of byte k is value k of group g (of 32).
fn q5_k(block: &[u8], out: &mut [Group]) {
    let (qh, qs) = (&block[16..48], &block[48..176]);
    fill(out, |g| k_group(block, g), |v| (k_nibble(qs, v) | (((qh[v % 32] >> (v / 32)) & 1) << 4)) as i32);
}

/// 256 values in 16 groups of 16: signed 8-bit group scales times an f16 super-scale, 6-bit values
/// (4 low bits and 2 high bits in separate arrays) offset by 32.
fn q6_k(block: &[u8], out: &mut [Group]) {
    let (ql, qh, scales) = (&block[0..128], &block[128..192], &block[192..208]);
    let d = half_at(block, 208);
    let q = |v: usize| {
        let (half, within) = (v / 128, v % 128);
        let low = (ql[half * 64 + within % 64] >> (4 * (within / 64))) & 0x0F;
        let high = (qh[half * 32 + within % 32] >> (2 * (within / 32))) & 3;
        (low | (high << 4)) as i32 - 32
    };
    fill(out, |g| (d * (scales[g] as i8) as f32, NO_OFFSET), q);
}
