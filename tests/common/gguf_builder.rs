//! Writes GGUF files for tests: key/values, tensor entries and data, in the v3 layout. Included
//! by the test binaries that build GGUF files (`#[path = "common/gguf_builder.rs"] mod gguf_builder;`).
#![allow(dead_code)]

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file under construction: key/values, tensor entries and data (32-byte aligned).
#[derive(Default, Clone)]
pub struct Builder {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

pub const F32: u32 = 0;
pub const Q4_0: u32 = 2;

/// The hyperparameters of a small llama file, as its `llama.*` metadata states them.
pub struct LlamaShape {
    pub layers: u32,
    pub context: u32,
    pub hidden: u32,
    pub ff: u32,
    pub heads: u32,
    pub kv_heads: u32,
}

impl Builder {
    pub fn arch(arch: &str) -> Builder {
        let mut b = Builder::default();
        b.string("general.architecture", arch);
        b
    }
    /// A llama file with `shape`'s metadata and RMS norm epsilon 1e-5; tensors and the tokenizer
    /// are the caller's.
    pub fn llama(shape: LlamaShape) -> Builder {
        let mut b = Builder::arch("llama");
        b.u32("llama.block_count", shape.layers)
            .u32("llama.context_length", shape.context)
            .u32("llama.embedding_length", shape.hidden)
            .u32("llama.feed_forward_length", shape.ff)
            .u32("llama.attention.head_count", shape.heads)
            .u32("llama.attention.head_count_kv", shape.kv_heads)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
        b
    }
    pub fn key(&mut self, key: &str, type_id: u32) -> &mut Vec<u8> {
        self.n_kv += 1;
        put_str(&mut self.kv, key);
        self.kv.extend_from_slice(&type_id.to_le_bytes());
        &mut self.kv
    }
    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.key(key, 4).extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.key(key, 6).extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.key(key, 7).push(v as u8);
        self
    }
    pub fn string(&mut self, key: &str, v: &str) -> &mut Self {
        put_str(self.key(key, 8), v);
        self
    }
    pub fn strings(&mut self, key: &str, v: &[&str]) -> &mut Self {
        let out = self.key(key, 9);
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for s in v {
            put_str(out, s);
        }
        self
    }
    pub fn numbers<T: Copy>(&mut self, key: &str, item_type: u32, v: &[T], bytes: impl Fn(T) -> Vec<u8>) -> &mut Self {
        let out = self.key(key, 9);
        out.extend_from_slice(&item_type.to_le_bytes());
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for &x in v {
            out.extend_from_slice(&bytes(x));
        }
        self
    }
    /// A tensor with `dims` in ggml order (row length first) and raw `data`.
    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, data: &[u8]) -> &mut Self {
        self.n_tensors += 1;
        put_str(&mut self.infos, name);
        self.infos.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&type_id.to_le_bytes());
        self.infos.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        self.data.extend_from_slice(data);
        self.data.resize(self.data.len().next_multiple_of(32), 0);
        self
    }
    pub fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
        self.tensor(name, dims, F32, bytemuck::cast_slice(values))
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend_from_slice(&self.data);
        out
    }
}
