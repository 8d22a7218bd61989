//! ggml's vector `exp` and the softmax of attention rows, ../shared/docs/format.md §4.2.

/// f32 from its bit pattern (the hex-float constants of ggml's `ggml_v_expf`).
const fn c(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// `0x1.8p23`: 1.5·2²³, the round-to-integer shifter.
const SHIFT: f32 = c(0x4B40_0000);
/// `0x1.715476p+0`: log2(e).
const LOG2E: f32 = c(0x3FB8_AA3B);
/// `0x1.62e4p-1`: ln 2, high part.
const LN2_HI: f32 = c(0x3F31_7200);
/// `0x1.7f7d1cp-20`: ln 2, low part.
const LN2_LO: f32 = c(0x35BF_BE8E);
/// `0x1.0e4020p-7`: polynomial coefficient of b⁵.
const P5: f32 = c(0x3C07_2010);
/// `0x1.573e2ep-5`: polynomial coefficient of b⁴.
const P4: f32 = c(0x3D2B_9F17);
/// `0x1.555e66p-3`: polynomial coefficient of b³.
const P3: f32 = c(0x3E2A_AF33);
/// `0x1.fffdb6p-2`: polynomial coefficient of b².
const P2: f32 = c(0x3EFF_FEDB);
/// `0x1.ffffecp-1`: polynomial coefficient of b.
const P1: f32 = c(0x3F7F_FFF6);

/// ggml's vector `exp` (`ggml_v_expf`, AVX2 + FMA), evaluated for one lane.
///
/// Every step is one f32 operation; `fma` is a single rounding ([`f32::mul_add`]) and the
/// integer steps are wrapping u32 operations on the bit patterns:
///
/// ```text
/// z = fma(x, 0x1.715476p+0, 0x1.8p23);  n = z − 0x1.8p23
/// b = fma(−n, 0x1.7f7d1cp−20, fma(−n, 0x1.62e4p−1, x))
/// e = to_bits(z) << 23;  k = from_bits(e + 0x3F800000)                    # 2^n
/// u = b·b
/// j = fma(fma(fma(0x1.0e4020p−7, b, 0x1.573e2ep−5), u, fma(0x1.555e66p−3, b, 0x1.fffdb6p−2)),
///         u, f32(0x1.ffffecp−1·b))
/// if !(|n| > 126): return fma(k, j, k)
/// g  = (n ≤ 0) ? 0x82000000 : 0
/// s1 = from_bits(0x7F000000 + g);  s2 = from_bits(e − g)
/// if |n| > 192: return s1·s1          # 0 for very negative x (also x = −inf), +inf for large x
/// return fma(s2, j, s2)·s1
/// ```
///
/// Comparisons are ordered (false for NaN), as `_CMP_GT_OQ` / `_CMP_LE_OQ` are.
// `!(|n| > 126)` is deliberate: a NaN `n` must take the first branch, as in the kernel.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn vexp_f32(x: f32) -> f32 {
    let z = x.mul_add(LOG2E, SHIFT);
    let n: f32 = z - SHIFT;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u: f32 = b * b;
    let p1b: f32 = P1 * b;
    let j = P5.mul_add(b, P4).mul_add(u, P3.mul_add(b, P2)).mul_add(u, p1b);
    if !(n.abs() > 126.0) {
        return k.mul_add(j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7F00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        return s1 * s1;
    }
    let t: f32 = s2.mul_add(j, s2);
    t * s1
}

/// Softmax of one row in place, in ggml's order (`soft_max_f32` / `ggml_vec_soft_max_f32`,
/// AVX2 path).
///
/// ```text
/// mx   = −inf;  for each w[i] in order: mx = (mx > w[i]) ? mx : w[i]     # C's MAX
/// e[i] = vexp(f32(w[i] − mx))                                             # vexp_f32, not expf
/// sum  = 0.0 (f64)
/// for each 8-aligned chunk e0..e7 (elements past the row's end count as 0):
///     h_l = f32(e_{l+4} + e_l)   (l = 0..3)
///     sum += f64( f32( f32(h0 + h2) + f32(h1 + h3) ) )
/// w[i] = f32( e[i] · f32(1.0 / sum) )                                      # f64 reciprocal → f32
/// ```
///
/// Masked entries (`−inf`) give exactly 0. A row whose entries are all `−inf` gives NaN.
///
/// ggml itself evaluates a tail shorter than 8 with libm `expf` and adds it to `sum` one
/// element at a time; attention rows are always a multiple of 8 long (n_kv is padded to
/// 32), so that path is never taken there. This function instead treats every length
/// as zero-padded to a multiple of 8, so it equals ggml for lengths that are multiples of 8.
pub fn softmax_f32(w: &mut [f32]) {
    let mut mx = f32::NEG_INFINITY;
    for &v in w.iter() {
        mx = if mx > v { mx } else { v };
    }
    for v in w.iter_mut() {
        *v = vexp_f32(*v - mx);
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
    for v in w.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite positive f32.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn constants_are_the_hex_floats() {
        // 0x1.MMMMMMp±E = 0x1MMMMMM · 2^(E − 24): exact in f64.
        let hex = |m: u32, e: i32| f64::from(m) * 2f64.powi(e - 24);
        assert_eq!(f64::from(SHIFT), hex(0x180_0000, 23));
        assert_eq!(f64::from(LOG2E), hex(0x171_5476, 0));
        assert_eq!(f64::from(LN2_HI), hex(0x162_e400, -1));
        assert_eq!(f64::from(LN2_LO), hex(0x17f_7d1c, -20));
        assert_eq!(f64::from(P5), hex(0x10e_4020, -7));
        assert_eq!(f64::from(P4), hex(0x157_3e2e, -5));
        assert_eq!(f64::from(P3), hex(0x155_5e66, -3));
        assert_eq!(f64::from(P2), hex(0x1ff_fdb6, -2));
        assert_eq!(f64::from(P1), hex(0x1ff_ffec, -1));
    }

    #[test]
    fn vexp_close_to_exp() {
        // Normal range, including the special-case branch (|n| > 126) near the ends.
        let mut x = -103.0f32;
        while x < 88.7 {
            let want = f64::from(x).exp();
            let got = vexp_f32(x);
            if want >= f64::from(f32::MIN_POSITIVE) {
                let w32 = want as f32;
                assert!(ulps(got, w32) <= 3, "x = {x}: {got} vs {w32}");
            } else {
                // Subnormal results: absolute error within a few subnormal ulps.
                assert!((f64::from(got) - want).abs() <= 4.0 * 1.4e-45, "x = {x}: {got} vs {want}");
            }
            x += 0.0137;
        }
        assert_eq!(vexp_f32(0.0), 1.0);
        assert_eq!(vexp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(vexp_f32(-1000.0), 0.0);
        assert_eq!(vexp_f32(1000.0), f32::INFINITY);
        assert!(vexp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_masks_and_normalises() {
        let mut w = [1.0f32, 2.0, f32::NEG_INFINITY, 0.5, -3.0, f32::NEG_INFINITY, 0.0, 4.0, 1.5, f32::NEG_INFINITY];
        softmax_f32(&mut w);
        for i in [2, 5, 9] {
            assert_eq!(w[i].to_bits(), 0);
        }
        let s: f64 = w.iter().map(|&v| f64::from(v)).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!(w[7] > w[1] && w[1] > w[0]);
        // A single live entry is exactly 1.
        let mut one = [f32::NEG_INFINITY, 0.25, f32::NEG_INFINITY, f32::NEG_INFINITY];
        softmax_f32(&mut one);
        assert_eq!(one, [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn softmax_chunk_sum_order() {
        // 16 entries: the sum is f64(chunk0) + f64(chunk1), each chunk reduced in f32 as
        // ((e4+e0) + (e6+e2)) + ((e5+e1) + (e7+e3)).
        let src: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut w = src.clone();
        softmax_f32(&mut w);
        let mx = src.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = src.iter().map(|&v| vexp_f32(v - mx)).collect();
        let mut sum = 0.0f64;
        for c in e.chunks(8) {
            sum += f64::from(((c[4] + c[0]) + (c[6] + c[2])) + ((c[5] + c[1]) + (c[7] + c[3])));
        }
        let inv = (1.0 / sum) as f32;
        for i in 0..16 {
            assert_eq!(w[i].to_bits(), (e[i] * inv).to_bits());
        }
    }
}
