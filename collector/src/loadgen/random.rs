//! Random identifiers and durations drawn from the generator's seeded RNG.

use rand::rngs::StdRng;
use rand::{Rng, RngCore};

/// A random, non-zero 16-byte trace id (all-zero ids are invalid in OTLP).
pub(super) fn trace_id(rng: &mut StdRng) -> Vec<u8> {
    let mut id = [0_u8; 16];
    while id == [0; 16] {
        rng.fill_bytes(&mut id);
    }
    id.to_vec()
}

/// A random, non-zero 8-byte span id.
pub(super) fn span_id(rng: &mut StdRng) -> Vec<u8> {
    let mut id = [0_u8; 8];
    while id == [0; 8] {
        rng.fill_bytes(&mut id);
    }
    id.to_vec()
}

/// A log-normally distributed duration in nanoseconds with the given median (in
/// milliseconds) and shape `sigma`; at least one microsecond.
///
/// Latencies of real services are close to log-normal: most requests near the median, a
/// long right tail. With `sigma = 0.5` the 99th percentile is about 3.2 × the median.
pub(super) fn log_normal_nanos(rng: &mut StdRng, median_ms: f64, sigma: f64) -> u64 {
    let millis = median_ms * (sigma * standard_normal(rng)).exp();
    let nanos = (millis * 1_000_000.0).round();
    // `as` saturates for floats; the tail is bounded by the normal sample anyway.
    (nanos as u64).max(1_000)
}

/// A standard normal sample (Box–Muller), so that no distribution crate is needed.
fn standard_normal(rng: &mut StdRng) -> f64 {
    // `random::<f64>()` is in [0, 1); 1 - u is in (0, 1], so the logarithm is finite.
    let uniform_nonzero = 1.0 - rng.random::<f64>();
    let angle = std::f64::consts::TAU * rng.random::<f64>();
    (-2.0 * uniform_nonzero.ln()).sqrt() * angle.cos()
}

/// `length` random characters from `[a-z0-9]`.
pub(super) fn alphanumeric(rng: &mut StdRng, length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..length)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// `length` random characters from `[A-Z0-9]`.
pub(super) fn upper_alphanumeric(rng: &mut StdRng, length: usize) -> String {
    alphanumeric(rng, length).to_ascii_uppercase()
}

/// A random version-4-looking UUID string.
pub(super) fn uuid(rng: &mut StdRng) -> String {
    let mut bytes = [0_u8; 16];
    rng.fill_bytes(&mut bytes);
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}
