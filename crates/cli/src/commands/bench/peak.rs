//! The machine's measured fp32 peak: independent fused multiply-add chains on every thread.
//!
//! Percent-of-peak figures divide by this number, measured in the same run, rather than by a
//! datasheet value: shared, throttled or virtualised machines rarely reach their nominal peak.

use std::time::Instant;

use rayon::prelude::*;

/// FMA iterations per measurement; long enough (tens of ms) to hide start-up noise.
const ITERATIONS: usize = 20_000_000;

/// Peak GFLOP/s of the widest FMA this CPU has, on every thread of the current rayon pool, and
/// the instruction set it used.
pub fn measure() -> (f64, &'static str) {
    let threads = rayon::current_num_threads();
    let (per_call, isa) = flops_per_call();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let sink: f32 = (0..threads).into_par_iter().map(|_| run_chains()).sum();
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max(per_call * threads as f64 / seconds / 1e9);
    }
    (best, isa)
}

fn flops_per_call() -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ((ITERATIONS * 12 * 16 * 2) as f64, "AVX-512");
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return ((ITERATIONS * 12 * 8 * 2) as f64, "AVX2+FMA");
        }
    }
    ((ITERATIONS * 8 * 2) as f64, "scalar")
}

fn run_chains() -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { x86::chains_avx512() };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { x86::chains_avx2() };
        }
    }
    chains_scalar()
}

/// Portable fallback: eight independent chains the compiler can keep in registers.
fn chains_scalar() -> f32 {
    let mut acc = [1.0f32; 8];
    let (a, b) = (std::hint::black_box(0.999_999f32), std::hint::black_box(1e-7f32));
    for _ in 0..ITERATIONS {
        for v in &mut acc {
            *v = v.mul_add(a, b);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Twelve independent accumulators, named one by one so they stay in registers: they cover
    /// the FMA latency × throughput of current cores.
    macro_rules! chains {
        ($fmadd:ident, $set1:ident, $a:expr, $b:expr) => {{
            let (a, b) = ($set1($a), $set1($b));
            let (mut v0, mut v1, mut v2, mut v3, mut v4, mut v5) =
                ($set1(1.0), $set1(1.0), $set1(1.0), $set1(1.0), $set1(1.0), $set1(1.0));
            let (mut v6, mut v7, mut v8, mut v9, mut v10, mut v11) =
                ($set1(1.0), $set1(1.0), $set1(1.0), $set1(1.0), $set1(1.0), $set1(1.0));
            for _ in 0..super::ITERATIONS {
                v0 = $fmadd(v0, a, b);
                v1 = $fmadd(v1, a, b);
                v2 = $fmadd(v2, a, b);
                v3 = $fmadd(v3, a, b);
                v4 = $fmadd(v4, a, b);
                v5 = $fmadd(v5, a, b);
                v6 = $fmadd(v6, a, b);
                v7 = $fmadd(v7, a, b);
                v8 = $fmadd(v8, a, b);
                v9 = $fmadd(v9, a, b);
                v10 = $fmadd(v10, a, b);
                v11 = $fmadd(v11, a, b);
            }
            [v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11]
        }};
    }

    #[target_feature(enable = "avx512f")]
    pub fn chains_avx512() -> f32 {
        let acc = chains!(
            _mm512_fmadd_ps,
            _mm512_set1_ps,
            std::hint::black_box(0.999_999),
            std::hint::black_box(1e-7)
        );
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn chains_avx2() -> f32 {
        let acc = chains!(
            _mm256_fmadd_ps,
            _mm256_set1_ps,
            std::hint::black_box(0.999_999),
            std::hint::black_box(1e-7)
        );
        let mut lanes = [0.0f32; 8];
        let mut total = 0.0;
        for v in acc {
            // SAFETY: `lanes` holds exactly the 8 floats the unaligned store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            total += lanes.iter().sum::<f32>();
        }
        total
    }
}
