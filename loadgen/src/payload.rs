//! Payloads of a configured size, sliced from one pre-generated block of text so that
//! producing one allocates nothing and consecutive payloads differ.

use rand::{Rng, SeedableRng, rngs::SmallRng};

const WINDOWS: usize = 997;

/// A source of `size`-byte ASCII payloads.
#[derive(Debug, Clone)]
pub struct Payloads {
    block: String,
    size: usize,
}

impl Payloads {
    /// Payloads of exactly `size` bytes.
    pub fn new(size: usize, seed: u64) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut rng = SmallRng::seed_from_u64(seed);
        let block = (0..size + WINDOWS).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
        Self { block, size }
    }

    /// The payload for event `id`.
    pub fn get(&self, id: u64) -> &str {
        let at = (id % WINDOWS as u64) as usize;
        &self.block[at..at + self.size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_size_and_vary() {
        let p = Payloads::new(256, 3);
        assert_eq!(p.get(0).len(), 256);
        assert_eq!(p.get(12_345).len(), 256);
        assert_ne!(p.get(0), p.get(1));
        assert_eq!(Payloads::new(0, 3).get(5), "");
    }
}
