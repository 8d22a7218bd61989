//! The attention softmax (`softmax_f32_neon`), bit-exact with scalar `softmax_f32`
//! (../shared/docs/format.md §4.2), and ggml's vector `exp` four lanes at a time.
//!
//! - The maximum is a lane-wise `fmax` when the row holds no NaN (every order then gives
//!   the scalar's sequential C `MAX`); a row with a NaN redoes it sequentially.
//! - `vexp` is the scalar `vexp_f32` step for step: each `mul_add` one `fmla`, each plain
//!   product one `fmul`, the integer steps on the bit patterns, and its three branches as
//!   lane selects (`|n| > 126`, `|n| > 192` with `facgt`, `n ≤ 0` with `fcmle`: ordered, false
//!   for NaN, as in the scalar).
//! - The sum is the scalar's per 8-lane chunk (`h = e[4..8] + e[0..4]`, `(h0 + h2) + (h1 +
//!   h3)` in f32, added to an f64), elements past the row's end counting as 0; then `w ·=
//!   f32(1/sum)`.

use std::arch::aarch64::*;

use super::Isa;

/// f32 from its bit pattern (the hex-float constants of ggml's `ggml_v_expf`; the scalar
/// `vexp_f32` documents each).
const fn c(bits: u32) -> f32 {
    f32::from_bits(bits)
}

impl Isa {
    /// Softmax of one row in place.
    pub(crate) fn softmax(self, w: &mut [f32]) {
        let mx = row_max(w);
        let n4 = w.len() - w.len() % 4;
        // SAFETY: NEON is the baseline; `i + 4 ≤ n4` keeps loads and stores in `w`.
        unsafe {
            let m = vdupq_n_f32(mx);
            for i in (0..n4).step_by(4) {
                let p = w.as_mut_ptr().add(i);
                vst1q_f32(p, vexp(vsubq_f32(vld1q_f32(p), m)));
            }
        }
        if n4 < w.len() {
            let mut t = [0.0f32; 4];
            t[..w.len() - n4].copy_from_slice(&w[n4..]);
            // SAFETY: NEON is the baseline; `t` holds 4 values.
            let e = unsafe { vexp(vsubq_f32(vld1q_f32(t.as_ptr()), vdupq_n_f32(mx))) };
            let mut te = [0.0f32; 4];
            // SAFETY: as above.
            unsafe { vst1q_f32(te.as_mut_ptr(), e) };
            let n = w.len() - n4;
            w[n4..].copy_from_slice(&te[..n]);
        }
        let mut sum = 0.0f64;
        for chunk in w.chunks(8) {
            let mut e = [0.0f32; 8];
            e[..chunk.len()].copy_from_slice(chunk);
            let h = [e[4] + e[0], e[5] + e[1], e[6] + e[2], e[7] + e[3]];
            let part: f32 = (h[0] + h[2]) + (h[1] + h[3]);
            sum += f64::from(part);
        }
        let inv = (1.0f64 / sum) as f32;
        // SAFETY: as in the first loop.
        unsafe {
            let iv = vdupq_n_f32(inv);
            for i in (0..n4).step_by(4) {
                let p = w.as_mut_ptr().add(i);
                vst1q_f32(p, vmulq_f32(vld1q_f32(p), iv));
            }
        }
        for v in &mut w[n4..] {
            *v *= inv;
        }
    }
}

/// C's sequential `MAX` from −inf (`mx = mx > v ? mx : v`), lane-wise when `w` has no NaN.
fn row_max(w: &[f32]) -> f32 {
    let n4 = w.len() - w.len() % 4;
    // SAFETY: NEON is the baseline; `i + 4 ≤ n4` keeps the loads in `w`.
    let (mut mx, nan) = unsafe {
        let (mut m, mut nan) = (vdupq_n_f32(f32::NEG_INFINITY), vdupq_n_u32(0));
        for i in (0..n4).step_by(4) {
            let v = vld1q_f32(w.as_ptr().add(i));
            nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(v, v)));
            m = vmaxq_f32(m, v);
        }
        (vmaxvq_f32(m), vmaxvq_u32(nan) != 0)
    };
    if nan || w[n4..].iter().any(|v| v.is_nan()) {
        mx = f32::NEG_INFINITY;
        for &v in w {
            mx = if mx > v { mx } else { v };
        }
        return mx;
    }
    for &v in &w[n4..] {
        mx = if mx > v { mx } else { v };
    }
    mx
}

/// ggml's `ggml_v_expf` on four lanes (module notes; the scalar `vexp_f32` step by step).
///
/// # Safety
/// None beyond NEON.
#[inline(always)]
pub(crate) unsafe fn vexp(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only NEON operations.
    unsafe {
        let f = vdupq_n_f32;
        let shift = f(c(0x4B40_0000));
        let z = vfmaq_f32(shift, x, f(c(0x3FB8_AA3B)));
        let n = vsubq_f32(z, shift);
        let neg_n = vnegq_f32(n);
        let b = vfmaq_f32(vfmaq_f32(x, neg_n, f(c(0x3F31_7200))), neg_n, f(c(0x35BF_BE8E)));
        let e = vshlq_n_u32::<23>(vreinterpretq_u32_f32(z));
        let k = vreinterpretq_f32_u32(vaddq_u32(e, vdupq_n_u32(1.0f32.to_bits())));
        let u = vmulq_f32(b, b);
        let p1b = vmulq_f32(f(c(0x3F7F_FFF6)), b);
        let p54 = vfmaq_f32(f(c(0x3D2B_9F17)), f(c(0x3C07_2010)), b);
        let p32 = vfmaq_f32(f(c(0x3EFF_FEDB)), f(c(0x3E2A_AF33)), b);
        let j = vfmaq_f32(p1b, vfmaq_f32(p32, p54, u), u);
        let small = vfmaq_f32(k, k, j);
        let c126 = vcagtq_f32(n, f(126.0));
        if vmaxvq_u32(c126) == 0 {
            return small;
        }
        let g = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x8200_0000));
        let s1 = vreinterpretq_f32_u32(vaddq_u32(g, vdupq_n_u32(0x7F00_0000)));
        let s2 = vreinterpretq_f32_u32(vsubq_u32(e, g));
        let big = vmulq_f32(s1, s1);
        let mid = vmulq_f32(vfmaq_f32(s2, s2, j), s1);
        let c192 = vcagtq_f32(n, f(192.0));
        vbslq_f32(c126, vbslq_f32(c192, big, mid), small)
    }
}
