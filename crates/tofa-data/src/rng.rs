//! Seed derivation: every random draw is keyed by values, never by thread scheduling.

use rand::SeedableRng;

/// splitmix64's finaliser.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Mixes a sequence of keys into one 64-bit seed.
pub fn mix(keys: &[u64]) -> u64 {
    keys.iter()
        .fold(0x243f_6a88_85a3_08d3, |h, &k| splitmix(h ^ splitmix(k)))
}

/// A ChaCha8 generator keyed by `keys`.
pub fn rng_for(keys: &[u64]) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(mix(keys))
}
