//! What the hand-written AVX2 kernels share.

/// f32 lanes of an AVX2 register.
pub(crate) const LANES: usize = 8;

/// The lanes below `lanes` set, for the masked loads and stores of a row's last partial group.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn lane_mask(lanes: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let on = |l: i32| if (l as usize) < lanes { -1 } else { 0 };
    _mm256_setr_epi32(on(0), on(1), on(2), on(3), on(4), on(5), on(6), on(7))
}
