//! The CPU-bound work of the `cpu_burn` example, shared with `benches/overhead.rs`.

/// Real arithmetic the optimiser cannot remove: an xorshift walk folded into a checksum.
///
/// Written with operators on integers only (no range iterator, no `wrapping_add`), so no
/// library function is inlined into it and every sample's innermost frame is `burn_cpu`
/// itself: a profile's lines come from one sample per stack, which could otherwise name
/// an inlined helper such as `unchecked_add` as the leaf.
#[inline(never)]
pub(crate) fn burn_cpu(iterations: u64, seed: u64) -> u64 {
    let mut state = seed | 1;
    let mut checksum = 0_u64;
    let mut i = 0;
    while i < iterations {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        checksum ^= state >> (i % 63);
        i += 1;
    }
    std::hint::black_box(checksum)
}
