//! Which SIMD instruction set the hand-written kernels use, and what the AVX2 kernels share.
//!
//! The kernels ask [`isa`] rather than the CPU directly, so that one variable,
//! `STRIDE_MAX_ISA`, can hold every kernel below the CPU's widest set: to compare two instruction
//! sets in the same binary on the same machine, or to reproduce on an AVX-512 machine what an
//! AVX2 one computes (the register-blocked GEMM gives the same bits either way). oneDNN's
//! `ONEDNN_MAX_CPU_ISA` does the same for PyTorch.

use std::sync::OnceLock;

/// The environment variable that caps the instruction set: `portable`, `avx2` or `avx512`.
pub const MAX_ISA_VARIABLE: &str = "STRIDE_MAX_ISA";

/// The instruction sets stride has kernels for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust the compiler vectorises for the build's baseline target.
    Portable,
    /// AVX2 with fused multiply-adds (x86-64-v3).
    Avx2,
    /// AVX-512 Foundation (x86-64-v4) on top of AVX2 and FMA.
    Avx512,
}

impl Isa {
    /// The name `STRIDE_MAX_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }

    /// The widest set this CPU runs.
    pub fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                return if has!("avx512f") { Isa::Avx512 } else { Isa::Avx2 };
            }
        }
        Isa::Portable
    }
}

/// The cap `STRIDE_MAX_ISA` sets: `Ok(None)` when unset, an error naming the accepted values
/// when it holds anything else. Front ends call this at start-up to reject a misspelt value;
/// [`isa`] ignores one.
pub fn max_isa_from_env() -> Result<Option<Isa>, String> {
    match std::env::var(MAX_ISA_VARIABLE) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Isa::parse(&value).map(Some).ok_or_else(|| {
            format!("{MAX_ISA_VARIABLE}={value:?} is not an instruction set stride knows: use portable, avx2 or avx512")
        }),
        Err(std::env::VarError::NotUnicode(value)) => {
            Err(format!("{MAX_ISA_VARIABLE}={value:?} is not valid UTF-8: use portable, avx2 or avx512"))
        }
    }
}

/// The instruction set the kernels use: the CPU's widest, capped by `STRIDE_MAX_ISA`. Read
/// once per process.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let detected = Isa::detected();
        match max_isa_from_env() {
            Ok(Some(cap)) => detected.min(cap),
            _ => detected,
        }
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_narrowest_first() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::parse("sse4"), None);
        assert!(Isa::Portable < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert!(isa() <= Isa::detected());
    }
}
