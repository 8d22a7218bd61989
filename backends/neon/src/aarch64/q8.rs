//! Q8_0 and Q4_0 output heads: the Q8_0 activation quantizer (`quantize_row_q8_0_act_neon`)
//! and the block dot products (`vec_dot_q8_0_q8_0_neon`, `vec_dot_q4_0_q8_0_neon`), bit-exact
//! with the scalar `quantize_row_q8_0_act`, `vec_dot_q8_0_q8_0` and `vec_dot_q4_0_q8_0`
//! (../shared/docs/format.md §4.6.2).
//!
//! ## Quantizer
//! Per block of 32: `amax` is a lane-wise `fmax` of `|x|` (the scalar's sequential maximum
//! when the block holds no NaN; a block with a NaN redoes it sequentially), `d = f16(amax /
//! 127)`, `m = 127 / amax` (0 for `amax = 0`), `q = fcvtns(x·m)` (round to nearest even)
//! with NaN products and products of magnitude ≥ 2³¹ set to `i32::MIN` (the scalar's
//! `cvtps2dq`; a NaN earlier in the block can leave `amax` below a later `|x|`), then
//! saturating narrows (the clamp).
//!
//! ## Dot products
//! Lane `j` of the scalar's 8 f32 accumulators takes, per block, `fma(D, f32(S_j), acc[j])`
//! with `S_j` over elements `4j .. 4j+4`; here lanes 0..3 and 4..7 are two registers (the
//! block's first and second 16 elements). `S_j` is formed as AVX2 forms it: `|w|·sign(a,
//! w)`, pairs added with i16 saturation, then in i32. Where the activation row holds no
//! −128 this is the exact `Σ w·a` (`|w| ≤ 128`, `|a| ≤ 127`: no saturation, no sign wrap),
//! which `sdot` computes when the CPU has it; otherwise the kernel reproduces the AVX2 steps
//! (`abs`, `neg`-select, i16 products, `sqadd` of the pairs, `saddlp`). The reduction is the
//! scalar's: `r = acc[0..4] + acc[4..8]`, `(r0 + r2) + (r1 + r3)`.

use std::arch::aarch64::*;

use half::f16;

use super::{sdot, Isa};

/// Bytes per Q8_0 block (f16 scale, 32 × i8).
pub(crate) const Q8_0_BYTES: usize = 34;
/// Bytes per Q4_0 block (f16 scale, 16 bytes of nibbles).
pub(crate) const Q4_0_BYTES: usize = 18;

impl Isa {
    /// Quantizes `x` (a multiple of 32 long) into Q8_0 activation blocks in `out`.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of 32 or `out` does not hold `x.len()/32` blocks.
    pub(crate) fn quantize_q8_0_act(self, x: &[f32], out: &mut [u8]) {
        assert!(x.len().is_multiple_of(32) && out.len() == x.len() / 32 * Q8_0_BYTES, "quantize_q8_0_act: lengths");
        for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
            // SAFETY: NEON is the baseline; the loads read the block's 32 values.
            let (vmax, nan) = unsafe {
                let (mut m, mut nan) = (vdupq_n_f32(0.0), vdupq_n_u32(0));
                for i in (0..32).step_by(4) {
                    let v = vld1q_f32(xb.as_ptr().add(i));
                    nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(v, v)));
                    m = vmaxq_f32(m, vabsq_f32(v));
                }
                (vmaxvq_f32(m), vmaxvq_u32(nan) != 0)
            };
            let amax = match nan {
                false => vmax,
                true => {
                    let mut amax = 0.0f32;
                    for &v in xb {
                        let a = v.abs();
                        amax = if amax > a { amax } else { a };
                    }
                    amax
                }
            };
            let d: f32 = amax / 127.0;
            ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            let m: f32 = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            // SAFETY: NEON is the baseline; loads read the block's 32 values, the stores
            // write the 32 bytes after the scale.
            unsafe {
                let mv = vdupq_n_f32(m);
                let mut w = [vdupq_n_s32(0); 8];
                for (i, wi) in w.iter_mut().enumerate() {
                    let p = vmulq_f32(vld1q_f32(xb.as_ptr().add(4 * i)), mv);
                    // In range of i32 (|p| < 2³¹; false for NaN), else `cvtps2dq`'s i32::MIN.
                    let ok = vcaltq_f32(p, vdupq_n_f32(2147483648.0));
                    *wi = vbslq_s32(ok, vcvtnq_s32_f32(p), vdupq_n_s32(i32::MIN));
                }
                for h in 0..2 {
                    let a = vcombine_s16(vqmovn_s32(w[4 * h]), vqmovn_s32(w[4 * h + 1]));
                    let b = vcombine_s16(vqmovn_s32(w[4 * h + 2]), vqmovn_s32(w[4 * h + 3]));
                    vst1q_s8(ob.as_mut_ptr().add(2 + 16 * h).cast(), vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
                }
            }
        }
    }

    /// Whether an activation row (Q8_0 blocks) holds no −128, so that its dot products are
    /// the exact integer sums (module notes) and `sdot` may form them.
    pub(crate) fn q8_0_act_exact(self, a: &[u8]) -> bool {
        a.chunks_exact(Q8_0_BYTES).all(|b| b[2..].iter().all(|&q| q != 0x80))
    }

    /// `vec_dot_q8_0_q8_0` (`q4: false`) or `vec_dot_q4_0_q8_0` (`q4: true`) of weight row
    /// `w` with activation row `a`, `nb` blocks each; `exact`: the caller checked
    /// [`Isa::q8_0_act_exact`] for `a` (the `sdot` kernel may then be used).
    ///
    /// # Panics
    /// If a row is shorter than `nb` blocks.
    pub(crate) fn q_dot(self, q4: bool, exact: bool, w: &[u8], a: &[u8], nb: usize) -> f32 {
        let wb = if q4 { Q4_0_BYTES } else { Q8_0_BYTES };
        assert!(w.len() >= nb * wb && a.len() >= nb * Q8_0_BYTES, "q_dot: rows shorter than {nb} blocks");
        let sdot = exact && self.dotprod;
        let mut acc = [[0.0f32; 4]; 2];
        for b in 0..nb {
            let (wb, ab) = (&w[b * wb..(b + 1) * wb], &a[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES]);
            let dw = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
            let da = f16::from_le_bytes([ab[0], ab[1]]).to_f32();
            let d: f32 = dw * da;
            // SAFETY: NEON is the baseline (`sdot` only where `self.dotprod` proves it); the
            // loads read the block's bytes after the scales (16 nibble bytes or 32 i8, and 32
            // activations), inside the slices asserted above.
            unsafe {
                let qw = if q4 {
                    let nib = vld1q_u8(wb.as_ptr().add(2));
                    let lo = vreinterpretq_s8_u8(vandq_u8(nib, vdupq_n_u8(15)));
                    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(nib));
                    [vsubq_s8(lo, vdupq_n_s8(8)), vsubq_s8(hi, vdupq_n_s8(8))]
                } else {
                    [vld1q_s8(wb.as_ptr().add(2).cast()), vld1q_s8(wb.as_ptr().add(18).cast())]
                };
                let qa = [vld1q_s8(ab.as_ptr().add(2).cast()), vld1q_s8(ab.as_ptr().add(18).cast())];
                let dv = vdupq_n_f32(d);
                for h in 0..2 {
                    let s = match sdot {
                        true => sdot_entry(qw[h], qa[h]),
                        false => lane_sums_avx2(qw[h], qa[h]),
                    };
                    let cur = vld1q_f32(acc[h].as_ptr());
                    vst1q_f32(acc[h].as_mut_ptr(), vfmaq_f32(cur, dv, vcvtq_f32_s32(s)));
                }
            }
        }
        let r = [acc[0][0] + acc[1][0], acc[0][1] + acc[1][1], acc[0][2] + acc[1][2], acc[0][3] + acc[1][3]];
        (r[0] + r[2]) + (r[1] + r[3])
    }
}

/// `S_j` of 16 elements (lanes j = 0..3, four elements each) as AVX2 forms it: `|w|` times
/// `a` with `w`'s sign moved onto it (`−(−128)` wraps), pairs added with i16 saturation,
/// then pairs of those in i32.
///
/// # Safety
/// None beyond NEON.
#[inline(always)]
unsafe fn lane_sums_avx2(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: register-only NEON operations.
    unsafe {
        let ax = vreinterpretq_u8_s8(vabsq_s8(w)); // 128 for −128
        let neg = vcltzq_s8(w);
        let zero = vceqzq_s8(w);
        let sy = vbslq_s8(neg, vnegq_s8(a), a); // wrapping negation
        let sy = vbslq_s8(zero, vdupq_n_s8(0), sy);
        // Exact i16 products (|·| ≤ 128·128).
        let p_lo = vmulq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(ax))), vmovl_s8(vget_low_s8(sy)));
        let p_hi = vmulq_s16(vreinterpretq_s16_u16(vmovl_high_u8(ax)), vmovl_high_s8(sy));
        // Pairs (2i, 2i+1) with i16 saturation: maddubs.
        let pairs_lo = vqaddq_s16(vuzp1q_s16(p_lo, p_hi), vuzp2q_s16(p_lo, p_hi));
        // vuzp keeps pair order: pair i of the 16 elements is lane i; pairs (2j, 2j+1) → S_j.
        vpaddlq_s16(pairs_lo)
    }
}

/// The four `S_j` of 16 elements with `sdot` (exact `Σ w·a` per four elements).
///
/// # Safety
/// The CPU must support `dotprod`.
#[target_feature(enable = "dotprod")]
unsafe fn sdot_entry(w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: the caller guarantees `dotprod`.
    unsafe { sdot(vdupq_n_s32(0), w, a) }
}
