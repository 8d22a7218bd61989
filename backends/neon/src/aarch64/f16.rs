//! The two F16 dot products of ../shared/docs/format.md §4.3, lane for lane on 4-lane registers, and
//! f16 rounding.
//!
//! - `dot16` (`vec_dot_f16_Rx1_neon`): the scalar's four 8-lane accumulators are eight
//!   `float32x4_t` (accumulator `a`, lanes `4h .. 4h+4` in register `[a][h]`), each element
//!   added with one `fmla` (the scalar's `mul_add`); the reduction is the scalar's, lane-wise
//!   (`s = (acc0 + acc2) + (acc1 + acc3)`, `t = s[0..4] + s[4..8]`, `r = (t0 + t1) + (t2 +
//!   t3)`); elements past the last multiple of 32 are added in f64, one at a time.
//! - `dotblas` (`vec_dot_f16_f32_Rx1_neon`): the scalar's one 8-lane accumulator is two
//!   registers; `t = acc[4..8] + acc[0..4]`, `r = (t0 + t2) + (t1 + t3)`; a tail shorter than
//!   8 continues the same lanes with scalar `mul_add`.
//! - f16 conversions are `fcvtl` / `fcvtn` (round to nearest even).
//!
//! Weights are f16 bytes (`R` rows `row_stride` bytes apart); `dot16` takes the other
//! operand as f16-rounded values widened to f32 (exact), `dotblas` as plain f32.

use std::arch::aarch64::*;

use half::f16;

use super::{cvt_f16x4, cvt_f32x4_f16, Isa};

impl Isa {
    /// `dot16` of rows `r < R` of `w` with `x[..k]`.
    ///
    /// # Panics
    /// If a row or `x` is shorter than `k`.
    pub(crate) fn dot16_rows<const R: usize>(self, w: &[u8], row_stride: usize, x: &[f32], k: usize) -> [f32; R] {
        const { assert!(R > 0) };
        assert!((R - 1) * row_stride + 2 * k <= w.len() && k <= x.len(), "dot16_rows: {R} rows of {k} exceed the slices");
        let np = k - k % 32;
        // SAFETY: NEON is the baseline; element `i < np ≤ k` of row `r` is at byte
        // `r·row_stride + 2i`, inside `w` by the assert, and `x[i]` inside `x`.
        let mut out = unsafe {
            let mut acc = [[[vdupq_n_f32(0.0); 2]; 4]; R];
            for base in (0..np).step_by(32) {
                for a in 0..4 {
                    for h in 0..2 {
                        let i = base + 8 * a + 4 * h;
                        let xv = vld1q_f32(x.as_ptr().add(i));
                        for (r, acc_r) in acc.iter_mut().enumerate() {
                            let wv = cvt_f16x4(vld1_u16(w.as_ptr().add(r * row_stride + 2 * i).cast()));
                            acc_r[a][h] = vfmaq_f32(acc_r[a][h], wv, xv);
                        }
                    }
                }
            }
            let mut out = [0.0f32; R];
            for (o, acc_r) in out.iter_mut().zip(&acc) {
                let s = |h: usize| vaddq_f32(vaddq_f32(acc_r[0][h], acc_r[2][h]), vaddq_f32(acc_r[1][h], acc_r[3][h]));
                let t = vaddq_f32(s(0), s(1));
                let (t0, t1, t2, t3) =
                    (vgetq_lane_f32::<0>(t), vgetq_lane_f32::<1>(t), vgetq_lane_f32::<2>(t), vgetq_lane_f32::<3>(t));
                *o = (t0 + t1) + (t2 + t3);
            }
            out
        };
        for (r, o) in out.iter_mut().enumerate() {
            let row = &w[r * row_stride..r * row_stride + 2 * k];
            let mut sum = f64::from(*o);
            for i in np..k {
                let p: f32 = f16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32() * x[i];
                sum += f64::from(p);
            }
            *o = sum as f32;
        }
        out
    }

    /// `dotblas` of rows `r < R` of `w` with `x[..k]`.
    ///
    /// # Panics
    /// If a row or `x` is shorter than `k`.
    pub(crate) fn dotblas_rows<const R: usize>(self, w: &[u8], row_stride: usize, x: &[f32], k: usize) -> [f32; R] {
        const { assert!(R > 0) };
        assert!((R - 1) * row_stride + 2 * k <= w.len() && k <= x.len(), "dotblas_rows: {R} rows of {k} exceed the slices");
        let n8 = k - k % 8;
        // SAFETY: as in `dot16_rows`, for elements `i < n8 ≤ k`.
        let lanes = unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 2]; R];
            for i in (0..n8).step_by(8) {
                let (x0, x1) = (vld1q_f32(x.as_ptr().add(i)), vld1q_f32(x.as_ptr().add(i + 4)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let p = w.as_ptr().add(r * row_stride + 2 * i);
                    acc_r[0] = vfmaq_f32(acc_r[0], cvt_f16x4(vld1_u16(p.cast())), x0);
                    acc_r[1] = vfmaq_f32(acc_r[1], cvt_f16x4(vld1_u16(p.add(8).cast())), x1);
                }
            }
            let mut lanes = [[0.0f32; 8]; R];
            for (l, a) in lanes.iter_mut().zip(&acc) {
                vst1q_f32(l.as_mut_ptr(), a[0]);
                vst1q_f32(l.as_mut_ptr().add(4), a[1]);
            }
            lanes
        };
        let mut out = [0.0f32; R];
        for (r, (o, mut acc)) in out.iter_mut().zip(lanes).enumerate() {
            let row = &w[r * row_stride..r * row_stride + 2 * k];
            for i in n8..k {
                let wi = f16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32();
                acc[i % 8] = wi.mul_add(x[i], acc[i % 8]);
            }
            let t = [acc[4] + acc[0], acc[5] + acc[1], acc[6] + acc[2], acc[7] + acc[3]];
            *o = (t[0] + t[2]) + (t[1] + t[3]);
        }
        out
    }

    /// `dst[i] = f32(f16(src[i]))` (round to nearest even, widened back exactly).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn round_f16(self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "round_f16: lengths");
        let n4 = src.len() - src.len() % 4;
        // SAFETY: NEON is the baseline; `i + 4 ≤ n4` keeps loads and stores in the slices.
        unsafe {
            for i in (0..n4).step_by(4) {
                let v = cvt_f16x4(cvt_f32x4_f16(vld1q_f32(src.as_ptr().add(i))));
                vst1q_f32(dst.as_mut_ptr().add(i), v);
            }
        }
        for (d, &s) in dst[n4..].iter_mut().zip(&src[n4..]) {
            *d = f16::from_f32(s).to_f32();
        }
    }

    /// `dst[i] = f16(src[i])` (round to nearest even).
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn to_f16(self, src: &[f32], dst: &mut [f16]) {
        assert_eq!(src.len(), dst.len(), "to_f16: lengths");
        let n4 = src.len() - src.len() % 4;
        // SAFETY: NEON is the baseline; `i + 4 ≤ n4` keeps loads and stores in the slices
        // (`f16` is a 2-byte plain value, stored as its bits).
        unsafe {
            for i in (0..n4).step_by(4) {
                vst1_u16(dst.as_mut_ptr().add(i).cast(), cvt_f32x4_f16(vld1q_f32(src.as_ptr().add(i))));
            }
        }
        for (d, &s) in dst[n4..].iter_mut().zip(&src[n4..]) {
            *d = f16::from_f32(s);
        }
    }
}
