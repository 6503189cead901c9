//! Per-message choices (partition, key, size) from a small inline PRNG: a generator thread
//! makes millions of them a second, so they must cost a few nanoseconds and no allocation.

use super::scenario::{KeyDistribution, MessageSize};

/// SplitMix64: fast, tiny state, good enough spread for picking keys and sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks keys. Keys are the decimal key number, written into a reused stack buffer.
pub struct KeyGen {
    dist: KeyDistribution,
    space: u64,
    ln_space: f64,
    buf: [u8; 20],
}

impl KeyGen {
    pub fn new(dist: KeyDistribution, space: u64) -> Self {
        KeyGen {
            dist,
            space,
            ln_space: ((space + 1) as f64).ln(),
            buf: [0; 20],
        }
    }

    /// The next key number, or `None` for null keys.
    pub fn next_key(&mut self, rng: &mut Rng) -> Option<u64> {
        match self.dist {
            KeyDistribution::None => None,
            KeyDistribution::Uniform => Some(rng.below(self.space)),
            // Inverse of the continuous 1/x law on [1, space+1): P(k) ~ 1/(k+1). Exact Zipf
            // would need a table or rejection sampling; the skew is what matters here.
            KeyDistribution::Zipf => {
                let k = (rng.unit() * self.ln_space).exp() as u64 - 1;
                Some(k.min(self.space - 1))
            }
        }
    }

    /// The bytes of key number `k`.
    pub fn key_bytes(&mut self, mut k: u64) -> &[u8] {
        let mut i = self.buf.len();
        loop {
            i -= 1;
            self.buf[i] = b'0' + (k % 10) as u8;
            k /= 10;
            if k == 0 {
                break;
            }
        }
        &self.buf[i..]
    }
}

/// Spreads key numbers over partitions (Fibonacci hashing: cheap and well mixed).
pub fn key_hash(k: u64) -> u64 {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

/// Picks message sizes.
pub fn message_size(size: MessageSize, rng: &mut Rng) -> usize {
    match size {
        MessageSize::Fixed(n) => n,
        MessageSize::Uniform { min, max } => min + rng.below((max - min + 1) as u64) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let mut rng = Rng::new(1);
        let mut g = KeyGen::new(KeyDistribution::Zipf, 1000);
        let mut hits = vec![0u32; 1000];
        for _ in 0..100_000 {
            hits[g.next_key(&mut rng).unwrap() as usize] += 1;
        }
        // P(0) ~ ln(2)/ln(1001) ~ 10%; the tail key far below that.
        assert!((8_000..12_000).contains(&hits[0]), "{}", hits[0]);
        assert!(hits[999] < 100);
        assert_eq!(g.key_bytes(40213), b"40213");
        assert_eq!(g.key_bytes(0), b"0");
    }

    #[test]
    fn sizes_stay_in_their_range() {
        let mut rng = Rng::new(2);
        let range = MessageSize::Uniform { min: 10, max: 12 };
        let mut seen = [false; 3];
        for _ in 0..1000 {
            seen[message_size(range, &mut rng) - 10] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
