//! The weight gradient of a layer with few filters, as dot products over the positions.
//!
//! [`super::fast`]'s weight gradient is a GEMM whose columns are the layer's filters
//! (`C_out/G`): with six (LeNet's first layer) it fills 6 of the AVX2 micro-kernel's 16 columns.
//! Here both operands are read as rows, the padded image shifted per tap and `dy` in the same
//! numbering of the positions, and the lanes of a register run along the positions, so every
//! lane does useful work whatever the number of filters: a block of 4 taps × 3 filters keeps 12
//! sums in registers and loads 7 vectors per 12 multiply-adds.

/// Filters per group up to which [`super::fast`] takes this path: half the AVX2 kernel's columns.
pub(super) const MAX_FILTERS: usize = 8;

/// `out[t·cout + k] += Σ_{p < span} x[offsets[t] + p] · dy[k·span + p]` for every tap row `t`
/// of `offsets` and filter `k < cout`. `x` holds every row's `span` values from its offset;
/// `dy` is `[cout × span]`.
pub(super) fn accumulate(
    x: &[f32],
    offsets: &[usize],
    dy: &[f32],
    span: usize,
    cout: usize,
    out: &mut [f32],
) {
    assert!(offsets.iter().all(|&o| o + span <= x.len()), "a tap row runs past the input");
    assert!(dy.len() >= cout * span && out.len() >= offsets.len() * cout, "dy or out too short");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::isa() >= crate::simd::Isa::Avx2 {
        // SAFETY: AVX2 and FMA are present (checked above), and the asserts bound every read.
        unsafe { x86::accumulate_avx2(x, offsets, dy, span, cout, out) };
        return;
    }
    accumulate_portable(x, offsets, dy, span, cout, out);
}

/// The plain loops: the reference the AVX2 kernel is tested against, and the path elsewhere.
fn accumulate_portable(x: &[f32], offsets: &[usize], dy: &[f32], span: usize, cout: usize, out: &mut [f32]) {
    for (t, &offset) in offsets.iter().enumerate() {
        let row = &x[offset..offset + span];
        for k in 0..cout {
            let sum: f32 = row.iter().zip(&dy[k * span..(k + 1) * span]).map(|(a, b)| a * b).sum();
            out[t * cout + k] += sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::{LANES, lane_mask};

    /// Blocks of up to 4 taps × 3 filters; each block runs over all the positions, eight at a
    /// time, the last partial eight through masked loads (the lanes past `span` read nothing).
    ///
    /// # Safety
    /// AVX2 and FMA must be present, and the slices as [`super::accumulate`] asserts.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate_avx2(
        x: &[f32],
        offsets: &[usize],
        dy: &[f32],
        span: usize,
        cout: usize,
        out: &mut [f32],
    ) {
        for t0 in (0..offsets.len()).step_by(4) {
            let taps = &offsets[t0..(t0 + 4).min(offsets.len())];
            for k0 in (0..cout).step_by(3) {
                let filters = (cout - k0).min(3);
                // SAFETY: as the caller promised; `block` reads `span` values from each row.
                let sums = unsafe {
                    match (taps.len(), filters) {
                        (4, 3) => block::<4, 3>(x, taps, dy, span, k0),
                        (4, 2) => block::<4, 2>(x, taps, dy, span, k0),
                        (4, _) => block::<4, 1>(x, taps, dy, span, k0),
                        (3, 3) => block::<3, 3>(x, taps, dy, span, k0),
                        (3, 2) => block::<3, 2>(x, taps, dy, span, k0),
                        (3, _) => block::<3, 1>(x, taps, dy, span, k0),
                        (2, 3) => block::<2, 3>(x, taps, dy, span, k0),
                        (2, 2) => block::<2, 2>(x, taps, dy, span, k0),
                        (2, _) => block::<2, 1>(x, taps, dy, span, k0),
                        (_, 3) => block::<1, 3>(x, taps, dy, span, k0),
                        (_, 2) => block::<1, 2>(x, taps, dy, span, k0),
                        (_, _) => block::<1, 1>(x, taps, dy, span, k0),
                    }
                };
                for (i, row) in sums.iter().enumerate().take(taps.len()) {
                    for (j, &sum) in row.iter().enumerate().take(filters) {
                        out[(t0 + i) * cout + k0 + j] += sum;
                    }
                }
            }
        }
    }

    /// `T` taps × `K` filters from `k0`: the sums over all positions, in registers.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const T: usize, const K: usize>(
        x: &[f32],
        taps: &[usize],
        dy: &[f32],
        span: usize,
        k0: usize,
    ) -> [[f32; 3]; 4] {
        let (x, dy) = (x.as_ptr(), dy.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); K]; T];
        let full = span / LANES * LANES;
        // SAFETY: every full chunk lies within `span` of its row; the tail's masked loads touch
        // only lanes below `span`.
        unsafe {
            let mut p = 0;
            while p < full {
                let d: [__m256; K] = std::array::from_fn(|j| _mm256_loadu_ps(dy.add((k0 + j) * span + p)));
                for (i, sums) in acc.iter_mut().enumerate() {
                    let v = _mm256_loadu_ps(x.add(taps[i] + p));
                    for (sum, &d) in sums.iter_mut().zip(&d) {
                        *sum = _mm256_fmadd_ps(v, d, *sum);
                    }
                }
                p += LANES;
            }
            if full < span {
                let mask = lane_mask(span - full);
                let d: [__m256; K] =
                    std::array::from_fn(|j| _mm256_maskload_ps(dy.add((k0 + j) * span + full), mask));
                for (i, sums) in acc.iter_mut().enumerate() {
                    let v = _mm256_maskload_ps(x.add(taps[i] + full), mask);
                    for (sum, &d) in sums.iter_mut().zip(&d) {
                        *sum = _mm256_fmadd_ps(v, d, *sum);
                    }
                }
            }
        }
        let mut sums = [[0.0f32; 3]; 4];
        for (row, acc) in sums.iter_mut().zip(&acc) {
            for (sum, &v) in row.iter_mut().zip(acc) {
                *sum = horizontal_sum(v);
            }
        }
        sums
    }

    /// The eight lanes' sum, in a fixed order.
    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The kernel (AVX2 where present) against the plain loops: tap and filter counts that
        /// leave partial blocks, spans with and without a partial eight, rows at any offset.
        #[test]
        fn matches_the_plain_loops(
            taps in 1usize..11,
            cout in 1usize..9,
            span in 1usize..70,
            slack in 0usize..9,
            seed in any::<u32>(),
        ) {
            let len = span + slack + 3 * taps;
            let value = |i: usize| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5;
            let x: Vec<f32> = (0..len).map(value).collect();
            let dy: Vec<f32> = (0..cout * span).map(|i| value(i + 7919)).collect();
            let offsets: Vec<usize> = (0..taps).map(|t| (3 * t + seed as usize % (slack + 1)).min(len - span)).collect();
            let start: Vec<f32> = (0..taps * cout).map(|i| i as f32).collect();
            let (mut fast, mut plain) = (start.clone(), start);
            accumulate(&x, &offsets, &dy, span, cout, &mut fast);
            accumulate_portable(&x, &offsets, &dy, span, cout, &mut plain);
            for (i, (a, b)) in fast.iter().zip(&plain).enumerate() {
                prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()) * span as f32, "{i}: {a} vs {b}");
            }
        }
    }
}
