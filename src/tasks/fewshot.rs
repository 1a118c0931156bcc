//! Few-shot example selection exactly as lm-evaluation-harness draws it, so that a k-shot prompt
//! is the same prompt: its default sampler is Python's `random.Random(1234).sample` over the
//! few-shot split, one draw per evaluated document in document order (one generator per task);
//! MMLU's `first_n` sampler takes the first k. Reproducing the draws needs Python's Mersenne
//! Twister, its seeding and `sample` algorithm, implemented here.

use super::data::Record;
use crate::error::{Error, Result};

/// The seed lm-evaluation-harness uses for few-shot sampling (`fewshot_random_seed`).
pub const HARNESS_SEED: u64 = 1234;

/// CPython's `random.Random` (MT19937 with `init_by_array` seeding) for the operations the
/// harness's sampler uses.
pub struct PyRandom {
    state: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> PyRandom {
        // CPython splits abs(seed) into 32-bit words, least significant first.
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut rng = PyRandom { state: [0; 624], index: 624 };
        rng.init_by_array(&key);
        rng
    }

    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..624 {
            let prev = self.state[i - 1];
            self.state[i] = 1812433253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        const N: usize = 624;
        self.init_genrand(19650218);
        let mt = &mut self.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1664525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1566083941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
    }

    fn next_u32(&mut self) -> u32 {
        const N: usize = 624;
        const M: usize = 397;
        if self.index >= N {
            let mt = &mut self.state;
            for k in 0..N {
                let y = (mt[k] & 0x8000_0000) | (mt[(k + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for 1 <= k <= 64: 32-bit words, least significant first, the last one
    /// keeping its high bits.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!((1..=64).contains(&k));
        if k <= 32 {
            return (self.next_u32() >> (32 - k)) as u64;
        }
        let low = self.next_u32() as u64;
        let high = (self.next_u32() >> (64 - k)) as u64;
        low | high << 32
    }

    /// `_randbelow(n)` (rejection sampling on `n.bit_length()` bits), n > 0.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        let bits = 64 - n.leading_zeros();
        loop {
            let r = self.getrandbits(bits);
            if r < n {
                return r;
            }
        }
    }

    /// `sample(range(n), k)`: k distinct indices in selection order.
    pub fn sample(&mut self, n: usize, k: usize) -> Option<Vec<usize>> {
        if k > n {
            return None;
        }
        // CPython picks the algorithm by comparing n with the size of a set of k items.
        let mut setsize = 21usize;
        if k > 5 {
            let exponent = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(exponent.ceil() as u32);
        }
        let mut result = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow((n - i) as u64) as usize;
                result.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n as u64) as usize;
                while selected.contains(&j) {
                    j = self.randbelow(n as u64) as usize;
                }
                selected.insert(j);
                result.push(j);
            }
        }
        Some(result)
    }
}

/// How a task picks its few-shot examples (the harness's `fewshot_config.sampler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// `default`: a seeded random sample per document.
    Random,
    /// `first_n`: the first k documents of the few-shot split.
    FirstN,
}

/// The few-shot pool of one task and its generator.
pub struct Sampler<'a> {
    kind: SamplerKind,
    pool: &'a [Record],
    /// Remove the evaluated document from the draw (the harness does when the few-shot split is
    /// the evaluated split).
    exclude_eval_doc: bool,
    rng: PyRandom,
}

impl<'a> Sampler<'a> {
    pub fn new(kind: SamplerKind, pool: &'a [Record], exclude_eval_doc: bool) -> Sampler<'a> {
        Sampler { kind, pool, exclude_eval_doc, rng: PyRandom::new(HARNESS_SEED) }
    }

    /// The harness's `ContextSampler.sample(n, eval_doc)` / `FirstNSampler.sample`.
    pub fn sample(&mut self, n: usize, eval_doc: &Record) -> Result<Vec<&'a Record>> {
        let pool = self.pool;
        let too_few = |available: usize| {
            Error::bad_input(format!(
                "--fewshot {n} needs more few-shot documents than the {available} available in the few-shot split"
            ))
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        match self.kind {
            SamplerKind::FirstN => {
                let candidates: Vec<&Record> = pool.iter().filter(|d| !self.exclude_eval_doc || *d != eval_doc).collect();
                if candidates.len() < n {
                    return Err(too_few(candidates.len()));
                }
                Ok(candidates[..n].to_vec())
            }
            SamplerKind::Random if !self.exclude_eval_doc => {
                let picked = self.rng.sample(pool.len(), n).ok_or_else(|| too_few(pool.len()))?;
                Ok(picked.into_iter().map(|i| &pool[i]).collect())
            }
            SamplerKind::Random => {
                // Draw one extra so that dropping the evaluated document still leaves n.
                let picked = self.rng.sample(pool.len(), n + 1).ok_or_else(|| too_few(pool.len().saturating_sub(1)))?;
                let mut chosen: Vec<&Record> = picked.into_iter().map(|i| &pool[i]).filter(|d| *d != eval_doc).take(n).collect();
                if chosen.len() < n {
                    // Several copies of the evaluated document were drawn: redraw without any.
                    let rest: Vec<&Record> = pool.iter().filter(|d| *d != eval_doc).collect();
                    let picked = self.rng.sample(rest.len(), n).ok_or_else(|| too_few(rest.len()))?;
                    chosen = picked.into_iter().map(|i| rest[i]).collect();
                }
                Ok(chosen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by CPython 3.11:
    //   r = random.Random(1234); [r.getrandbits(32) for _ in range(3)]
    //   random.Random(1234).sample(range(10042), 6)        (set-based path)
    //   random.Random(1234).sample(range(10), 4)           (pool path)
    //   random.Random(1234).getrandbits(40)
    //   random.Random(1234).sample(range(50), 10)          (k > 5, pool path)
    //   random.Random(1234).sample(range(100000), 25)      (k > 5, set-based path)
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(1234);
        let words: Vec<u64> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(words, PY_WORDS);
        assert_eq!(PyRandom::new(1234).sample(10042, 6).unwrap(), PY_SAMPLE_LARGE);
        assert_eq!(PyRandom::new(1234).sample(10, 4).unwrap(), PY_SAMPLE_SMALL);
        assert_eq!(PyRandom::new(1234).getrandbits(40), PY_BITS_40);
        assert_eq!(PyRandom::new(1234).sample(50, 10).unwrap(), [49, 28, 7, 0, 5, 37, 2, 42, 45, 6]);
        assert_eq!(
            PyRandom::new(1234).sample(100000, 25).unwrap(),
            [
                57767, 15315, 981, 11880, 76313, 4577, 88023, 90844, 11001, 12900, 46482, 31039, 2284, 4038, 2076, 45362, 84976,
                81694, 63471, 80716, 60758, 19471, 11965, 23998, 93508
            ]
        );
        assert!(PyRandom::new(1234).sample(3, 4).is_none());
    }

    const PY_WORDS: [u64; 3] = [4150886329, 3342196574, 1892932127];
    const PY_SAMPLE_LARGE: [usize; 6] = [7220, 1914, 122, 1485, 9539, 572];
    const PY_SAMPLE_SMALL: [usize; 4] = [7, 1, 0, 9];
    const PY_BITS_40: u64 = 858849378233;
}
