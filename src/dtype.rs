//! How checkpoint weights are stored: element types and the quantized group layout. The bottom
//! of the module graph: `model/` produces tensors in these forms and `gpu/` uploads and reads
//! them, so neither depends on the other for it.

/// Element type of a checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Quantized (GGUF) weights: groups of [`GROUP`] consecutive values of a row, each stored as
    /// 8-bit integers `q` with an f32 scale and offset, value = scale * q + offset (see [`Group`]).
    Int8Groups,
}

impl DType {
    /// Bytes of a row of `cols` values (`cols` a multiple of [`GROUP`] for `Int8Groups`).
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            DType::F32 => cols * 4,
            DType::F16 | DType::BF16 => cols * 2,
            DType::Int8Groups => cols.div_ceil(GROUP) * Group::BYTES,
        }
    }
}

/// Values per [`Group`].
pub const GROUP: usize = 16;

/// The GPU's form of every quantized GGUF block type: each ggml type is an integer times a scale
/// plus an offset, with scale and offset shared by 16 or 32 values, so one group layout holds them
/// all at 1.5 bytes per weight (f32: 4) and reproduces ggml's dequantized values bit for bit: the
/// product of a ggml scale and its integer is exact in f32, so `scale * q + offset` rounds once,
/// fused or not, exactly as ggml's `d * q + m` (or `- m`) does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub scale: f32,
    /// -0.0 for the types without one, so that adding it leaves every product, -0.0 included, unchanged.
    pub offset: f32,
    pub q: [i8; GROUP],
}

impl Group {
    /// Stored as scale, offset (little-endian f32), then the 16 integers: 24 bytes.
    pub const BYTES: usize = 8 + GROUP;

    pub fn value(&self, j: usize) -> f32 {
        self.scale * self.q[j] as f32 + self.offset
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.scale.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend(self.q.iter().map(|&q| q as u8));
    }

    pub fn read(bytes: &[u8]) -> Group {
        let f = |at: usize| f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        Group { scale: f(0), offset: f(4), q: std::array::from_fn(|j| bytes[8 + j] as i8) }
    }
}
