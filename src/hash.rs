//! FNV-1a 64: a small content hash that is stable across runs, platforms and Rust versions, for
//! resume logs and sweep fingerprints.

/// Incremental FNV-1a 64.
#[derive(Clone)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf29ce484222325)
    }
}

impl Fnv1a {
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        for &byte in bytes {
            self.0 ^= byte as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
        self
    }

    /// A field followed by a separator, so that ("ab", "c") and ("a", "bc") differ.
    pub fn field(&mut self, text: &str) -> &mut Self {
        self.update(text.as_bytes()).update(&[0xff])
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
