//! Per-token int8 activation quantizer of the I2_S matmul (`quantize_row_i8_neon`),
//! bit-exact with scalar `quantize_row_i8` (../shared/docs/format.md §4.2).
//!
//! - `max|x|` is a lane-wise `fmax` of `|x|` reduced over the lanes; a row holding a NaN
//!   redoes the maximum with the scalar's sequential rule ([`graph::quant::i8_row_scale`]).
//! - `q = clamp(rne(f32(x·s)), −128, 127)`: the f32 product, `fcvtns` (round to nearest
//!   even, NaN → 0, saturating to i32), then saturating narrows to i16 and i8, which is the
//!   clamp. The i32 sum adds the narrowed lanes (exact integers).
//! - A tail shorter than 16 goes through the same code on a zero-padded copy (a padding
//!   zero quantizes to 0 and adds nothing).

use std::arch::aarch64::*;

use super::Isa;

impl Isa {
    /// Quantizes `x` into `q`, returning `(s, Σ q)`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub(crate) fn quantize_i8(self, x: &[f32], q: &mut [i8]) -> (f32, i32) {
        assert_eq!(x.len(), q.len(), "quantize_i8: output length");
        let s = graph::quant::i8_row_scale(abs_max(x), x);
        let n16 = x.len() - x.len() % 16;
        let mut sum = 0i32;
        for (xc, qc) in x[..n16].chunks_exact(16).zip(q[..n16].chunks_exact_mut(16)) {
            sum += quantize16(xc.try_into().expect("16 values"), s, qc.try_into().expect("16 bytes"));
        }
        if n16 < x.len() {
            let (mut xt, mut qt) = ([0.0f32; 16], [0i8; 16]);
            xt[..x.len() - n16].copy_from_slice(&x[n16..]);
            sum += quantize16(&xt, s, &mut qt);
            q[n16..].copy_from_slice(&qt[..x.len() - n16]);
        }
        (s, sum)
    }
}

/// `max_i |x[i]|`, or `None` if `x` holds a NaN (0 for an empty row).
fn abs_max(x: &[f32]) -> Option<f32> {
    let n4 = x.len() - x.len() % 4;
    // SAFETY: NEON is the aarch64 baseline; loads read `x[i .. i+4]` with `i + 4 ≤ n4`.
    let (mut m, nan) = unsafe {
        let (mut mx, mut nan) = (vdupq_n_f32(0.0), vdupq_n_u32(0));
        for i in (0..n4).step_by(4) {
            let v = vld1q_f32(x.as_ptr().add(i));
            // NaN lanes compare unequal to themselves.
            nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(v, v)));
            mx = vmaxq_f32(mx, vabsq_f32(v));
        }
        (vmaxvq_f32(mx), vmaxvq_u32(nan) != 0)
    };
    if nan {
        return None;
    }
    for &v in &x[n4..] {
        let a = v.abs();
        if a.is_nan() {
            return None;
        }
        m = if m > a { m } else { a };
    }
    Some(m)
}

/// Quantizes 16 values with scale `s`, returning their sum.
fn quantize16(x: &[f32; 16], s: f32, q: &mut [i8; 16]) -> i32 {
    // SAFETY: NEON is the baseline; the loads read the 16 values of `x`, the store writes
    // the 16 bytes of `q`.
    unsafe {
        let sv = vdupq_n_f32(s);
        let mut w = [vdupq_n_s32(0); 4];
        for (i, wi) in w.iter_mut().enumerate() {
            *wi = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x.as_ptr().add(4 * i)), sv));
        }
        let h0 = vcombine_s16(vqmovn_s32(w[0]), vqmovn_s32(w[1]));
        let h1 = vcombine_s16(vqmovn_s32(w[2]), vqmovn_s32(w[3]));
        let b = vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
        vst1q_s8(q.as_mut_ptr(), b);
        vaddlvq_s8(b).into()
    }
}
