//! The CPU-bound work of the `cpu_burn` example, shared with `benches/overhead.rs`.

/// Real arithmetic the optimiser cannot remove: an xorshift walk folded into a sum.
#[inline(never)]
pub(crate) fn burn_cpu(iterations: u64, seed: u64) -> u64 {
    let mut state = seed | 1;
    let mut sum = 0_u64;
    for i in 0..iterations {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        sum = sum.wrapping_add(state.rotate_left((i % 63) as u32));
    }
    std::hint::black_box(sum)
}
