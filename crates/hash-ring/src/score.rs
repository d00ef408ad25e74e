//! The arithmetic behind a member's score for a key: a hand-written 64-bit hash and a
//! logarithm built only from IEEE-754 add, multiply and divide (which every platform rounds the
//! same way), so placement never depends on the platform's `libm`.

/// Odd constants from the golden ratio and MurmurHash3's finalizer.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX_1: u64 = 0xFF51_AFD7_ED55_8CCD;
const MIX_2: u64 = 0xC4CE_B9FE_1A85_EC53;

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(MIX_1);
    x ^= x >> 33;
    x = x.wrapping_mul(MIX_2);
    x ^ (x >> 33)
}

/// A stable 64-bit hash of `bytes`: eight little-endian bytes at a time, each mixed in with a
/// multiply and a rotate, the length folded in, then a full finalizer. Frozen: changing it moves
/// every key.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut state = GOLDEN;
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let mut buffer = [0u8; 8];
        buffer.copy_from_slice(word);
        state = (state ^ u64::from_le_bytes(buffer))
            .wrapping_mul(GOLDEN)
            .rotate_left(31);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut buffer = [0u8; 8];
        buffer[..tail.len()].copy_from_slice(tail);
        state = (state ^ u64::from_le_bytes(buffer))
            .wrapping_mul(GOLDEN)
            .rotate_left(31);
    }
    fmix64(state ^ bytes.len() as u64)
}

/// The per-member seed that makes each member's scores independent of every other member's.
pub(crate) fn member_seed(id: u64) -> u64 {
    fmix64(id.wrapping_mul(GOLDEN) ^ MIX_2)
}

/// A uniform value strictly inside (0, 1) for (key, member): the top 53 bits of a mix of both,
/// offset by half a step so neither 0 nor 1 can come out.
pub(crate) fn unit_interval(key_hash: u64, seed: u64) -> f64 {
    let mixed = fmix64(key_hash ^ seed).wrapping_mul(GOLDEN);
    let mixed = fmix64(mixed);
    const STEPS: f64 = (1u64 << 53) as f64;
    ((mixed >> 11) as f64 + 0.5) / STEPS
}

/// `-ln(u)` for `u` in (0, 1), from basic arithmetic only: `u = m * 2^e` with `m` in
/// [sqrt(1/2), sqrt(2)), and `ln(m) = 2 atanh(s)`, `s = (m - 1) / (m + 1)`, summed as a series
/// (|s| <= 0.172, so 12 terms are far below f64 precision).
pub(crate) fn neg_ln_unit(u: f64) -> f64 {
    debug_assert!(u > 0.0 && u < 1.0 && u.is_normal());
    let bits = u.to_bits();
    let mut exponent = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s_squared = s * s;
    let mut term = s;
    let mut series = 0.0;
    for k in 0..12 {
        series += term / f64::from(2 * k + 1);
        term *= s_squared;
    }
    let ln_u = exponent as f64 * std::f64::consts::LN_2 + 2.0 * series;
    -ln_u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logarithm_matches_the_platforms() {
        let mut u = 1e-16;
        while u < 1.0 {
            let ours = neg_ln_unit(u);
            let platform = -u.ln();
            let tolerance = 1e-14 * platform.abs().max(1e-3);
            assert!(
                (ours - platform).abs() <= tolerance,
                "u = {u}: {ours} vs {platform}"
            );
            u *= 1.37;
        }
        assert!(neg_ln_unit(unit_interval(0, 0)) > 0.0);
    }

    /// Placement of every existing blob depends on these values: if this test fails, the change
    /// would move data across the whole cluster.
    #[test]
    fn hash_is_frozen() {
        assert_eq!(hash_bytes(b""), GOLDEN_EMPTY);
        assert_eq!(hash_bytes(b"sha256:abc"), GOLDEN_SHORT);
        assert_eq!(member_seed(7), GOLDEN_SEED_7);
    }

    /// A key's score for a member is frozen too, and strictly inside (0, 1) at the extremes.
    #[test]
    fn unit_interval_is_frozen_and_open() {
        for (key, seed) in [(0, 0), (u64::MAX, 0), (0, u64::MAX), (u64::MAX, u64::MAX)] {
            let u = unit_interval(key, seed);
            assert!(u > 0.0 && u < 1.0, "{key} {seed}: {u}");
        }
        let u = unit_interval(hash_bytes(b"sha256:abc"), member_seed(7));
        assert_eq!(u.to_bits(), GOLDEN_UNIT, "{u}");
    }

    const GOLDEN_UNIT: u64 = 4_596_935_891_375_753_998;
    const GOLDEN_EMPTY: u64 = 11_286_133_854_226_296_554;
    const GOLDEN_SHORT: u64 = 9_981_960_760_240_378_395;
    const GOLDEN_SEED_7: u64 = 10_382_557_984_345_131_359;
}
