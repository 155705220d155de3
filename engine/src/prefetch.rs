//! Cache prefetch hints, the one place the engine allows `unsafe` (public for the
//! benchmarks' floor, which must overlap its misses as the engine does).
//! A prefetch asks the CPU to start loading a cache line; it never faults, whatever the
//! address, and has no effect the program can observe other than timing.

/// Starts loading the cache line holding `p` (and nothing else). No-op off x86-64.
#[inline(always)]
#[allow(unsafe_code)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint: it dereferences nothing, cannot fault on any
    // address (valid or not) and changes no program-visible state. SSE, which it needs,
    // is part of the x86-64 baseline, so the instruction always exists.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
