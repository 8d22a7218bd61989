//! The AVX2 + FMA + F16C kernels: the only `unsafe` code of this crate.
//!
//! ## Layout of every kernel
//! - A **safe wrapper**, a method on [`Isa`], checks every length and offset with `assert!`
//!   (the backend's `eval` has already turned bad shapes into errors, so an assert firing
//!   is a bug in this crate), then calls
//! - the **entry point**, an `unsafe fn` with `#[target_feature(enable = "avx2,fma,f16c")]`
//!   and nothing else in it, which calls
//! - the **body**, an `#[inline(always)] unsafe fn` without `#[target_feature]`: it is
//!   inlined into the entry point and compiled with its features. Small vector helpers
//!   are `#[inline(always)]` too.
//!
//! So `#[target_feature]` sits on entry points only, every intrinsic call is inside an
//! `unsafe` block of a function that does not enable the feature itself (the same code is
//! valid on every Rust version), and owning an [`Isa`] is the proof that the CPU has the
//! features. All loads and stores are unaligned (`loadu`/`storeu`): weights come straight
//! from the mmapped file.
//!
//! Numerics: every kernel reproduces its scalar twin in `backend-scalar` (`kernels/*.rs`)
//! bit for bit; each file says how (lane order, reductions, tails, NaN).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

pub(crate) mod elementwise;
pub(crate) mod f16;
pub(crate) mod i2s;
pub(crate) mod lanes;
pub(crate) mod norm;
pub(crate) mod q4_0;
pub(crate) mod q6k;
pub(crate) mod q8_0;
pub(crate) mod q8_k;
pub(crate) mod quant;
pub(crate) mod rope;
pub(crate) mod softmax;
pub(crate) mod tq;

/// Proof that the running CPU supports AVX2, FMA and F16C: the only way to call a kernel.
///
/// It can only be built by [`Isa::detect`], which checks the CPU (once, cached).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Isa {
    _private: (),
}

impl Isa {
    /// The token, if this CPU has AVX2, FMA and F16C.
    pub(crate) fn detect() -> Option<Isa> {
        if crate::cpu_has_avx2_fma_f16c() {
            Some(Isa { _private: () })
        } else {
            None
        }
    }
}

/// Proof that the running CPU also supports AVX-VNNI (`vpdpbusd` on 256-bit registers,
/// VEX-encoded: Alder Lake, Sapphire Rapids, Zen 5 and later) on top of [`Isa`]'s
/// features. Built only by [`Vnni::detect`] (checked once, cached).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni {
    _private: (),
}

impl Vnni {
    /// The token, if this CPU has AVX2, FMA, F16C and AVX-VNNI.
    pub(crate) fn detect() -> Option<Vnni> {
        if crate::cpu_has_avx2_fma_f16c() && crate::cpu_has_avx_vnni() {
            Some(Vnni { _private: () })
        } else {
            None
        }
    }
}

/// Wrapping sum of the eight i32 lanes (integer addition: any order gives the same bits).
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    // SAFETY: the caller guarantees AVX2 (and so SSE2/SSSE3); register-only operations.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// ggml's `hsum_float_8` of each vector: `r_j = l_j + l_{j+4}`, then `(r0 + r2) + (r1 + r3)`.
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn hsum_float_8_each<const N: usize>(acc: &[__m256; N]) -> [f32; N] {
    let mut out = [0.0f32; N];
    for (o, v) in out.iter_mut().zip(acc) {
        // SAFETY: the caller guarantees AVX.
        let l = unsafe { lanes(*v) };
        let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
        *o = (r[0] + r[2]) + (r[1] + r[3]);
    }
    out
}

/// The eight f32 lanes of a vector, lane 0 first.
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn lanes(v: __m256) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    // SAFETY: the caller guarantees AVX; `out` has room for exactly 8 f32 (unaligned store).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// Loads 8 f16 (16 bytes at `p`, unaligned, little-endian) widened to f32 (exact).
///
/// # Safety
/// The CPU must support AVX and F16C, and `p` must be readable for 16 bytes.
#[inline(always)]
unsafe fn load_f16x8(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees F16C and 16 readable bytes at `p`; `loadu` has no
    // alignment requirement.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
}

/// One f16 (2 bytes at `p`, little-endian) widened to f32 (exact), with F16C.
///
/// # Safety
/// The CPU must support F16C, and `p` must be readable for 2 bytes.
#[inline(always)]
unsafe fn load_f16x1(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees F16C and 2 readable bytes at `p` (read unaligned).
    unsafe {
        let bits = p.cast::<u16>().read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// A mask whose first `n` (0..=8) i32 lanes are all ones, for tails.
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
unsafe fn first_lanes(n: usize) -> __m256i {
    // SAFETY: the caller guarantees AVX2; register-only operations (`n ≤ 8` fits an i32).
    unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
}

/// Whether any lane is NaN.
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn any_nan(v: __m256) -> bool {
    // SAFETY: the caller guarantees AVX; register-only operations.
    unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0 }
}

/// Largest of the eight lanes (lanes hold no NaN, so every order gives the same value up
/// to the sign of a zero).
///
/// # Safety
/// The CPU must support AVX.
#[inline(always)]
unsafe fn hmax_ps(v: __m256) -> f32 {
    // SAFETY: the caller guarantees AVX; register-only operations.
    let l = unsafe { lanes(v) };
    l.iter().fold(f32::NEG_INFINITY, |m, &x| if m > x { m } else { x })
}
