//! The NEON kernels: every `unsafe` block of the crate is here. NEON (Advanced SIMD) is part
//! of the aarch64 baseline, so its intrinsics need no `#[target_feature]`; the `sdot`
//! kernels do (`dotprod`), and are entered only through an [`Isa`] that detected it.

pub(crate) mod f16;
pub(crate) mod i2s;
pub(crate) mod q8;
pub(crate) mod quant;
pub(crate) mod softmax;

use std::arch::aarch64::*;

/// The CPU features the kernels may use, detected once. Owning an `Isa` is the proof that
/// NEON is there, and that `sdot` is when [`Isa::dotprod`] is true.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Isa {
    dotprod: bool,
}

impl Isa {
    /// NEON (and `dotprod` unless `no_dotprod`), or `None` without NEON.
    pub(crate) fn detect(no_dotprod: bool) -> Option<Isa> {
        if !std::arch::is_aarch64_feature_detected!("neon") {
            return None;
        }
        Some(Isa { dotprod: !no_dotprod && std::arch::is_aarch64_feature_detected!("dotprod") })
    }

    /// Whether the `sdot` kernels are used.
    pub(crate) fn dotprod(self) -> bool {
        self.dotprod
    }

    /// The same ISA without `sdot` (the plain NEON kernels; for tests).
    pub(crate) fn without_dotprod(self) -> Isa {
        Isa { dotprod: false }
    }
}

/// `f16 → f32` of four values (`fcvtl`, exact).
///
/// # Safety
/// None beyond NEON (the aarch64 baseline); marked unsafe as it is an `asm!` block.
#[inline(always)]
unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: `fcvtl` is a base Advanced SIMD instruction (FP16 conversions are in the
    // aarch64 baseline); it reads and writes registers only.
    unsafe { std::arch::asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) r, in(vreg) h, options(pure, nomem, nostack)) };
    r
}

/// `f32 → f16` of four values, rounded to nearest even (`fcvtn` under the default FPCR
/// rounding mode, which Linux leaves at round-to-nearest; the `half` crate's rule).
///
/// # Safety
/// None beyond NEON; marked unsafe as it is an `asm!` block.
#[inline(always)]
unsafe fn cvt_f32x4_f16(x: float32x4_t) -> uint16x4_t {
    let r: uint16x4_t;
    // SAFETY: `fcvtn` is a base Advanced SIMD instruction; registers only.
    unsafe { std::arch::asm!("fcvtn {0:v}.4h, {1:v}.4s", out(vreg) r, in(vreg) x, options(pure, nomem, nostack)) };
    r
}

/// `acc + sdot(a, b)`: each i32 lane adds the four products of its bytes.
///
/// # Safety
/// The CPU must support `dotprod`.
#[inline(always)]
pub(crate) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller guarantees `dotprod`; `sdot` reads and writes registers only.
    unsafe {
        std::arch::asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack)
        )
    };
    acc
}
