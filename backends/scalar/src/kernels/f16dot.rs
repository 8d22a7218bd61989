//! The two F16 dot products of bitnet.cpp (../shared/docs/format.md §4.3) and f16 rounding.
//!
//! Which one a product uses depends on the batch (§4.4): with one column the f32 operand is
//! rounded to f16 ([`f16_round`] / `half::f16::from_f32`) and [`vec_dot_f16`] is used; with
//! two or more columns llamafile's tinyBLAS takes the f32 operand as it is
//! ([`vec_dot_f16_f32`]).

use half::f16;

/// Rounds an f32 to the nearest f16 (ties to even, as F16C `vcvtps2ph` with immediate 0)
/// and widens it back to f32 (exact).
pub fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// ggml `ggml_vec_dot_f16` ("dot16"; AVX2 + F16C + FMA): `Σ x[i]·y[i]`, both operands f16.
///
/// Four 8-lane f32 accumulators; element `i` goes to accumulator `a = (i % 32) / 8`, lane
/// `l = i % 8` (by absolute index):
///
/// ```text
/// acc[a][l] = 0
/// for base in (0, 32, 64, …) while base + 32 ≤ n:
///     for a in 0..4, l in 0..8: i = base + 8a + l;  acc[a][l] = fma(x[i], y[i], acc[a][l])
/// s_l = f32( f32(acc[0][l] + acc[2][l]) + f32(acc[1][l] + acc[3][l]) )
/// t_l = f32(s_l + s_{l+4})   (l = 0..3)
/// r   = f32( f32(t0 + t1) + f32(t2 + t3) )
/// ```
///
/// Elements past the last multiple of 32 are added afterwards in f64, one at a time:
/// `result = f32( f64(r) + Σ_tail f64(f32(x[i]·y[i])) )` (the f16 × f16 product is exact in
/// f32). With `n < 32` only this tail exists and `r = 0`.
///
/// # Panics
/// If the lengths differ.
pub fn vec_dot_f16(x: &[f16], y: &[f16]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16: lengths");
    let n = x.len();
    let np = n - n % 32;
    let mut acc = [[0.0f32; 8]; 4];
    for base in (0..np).step_by(32) {
        for (a, lanes) in acc.iter_mut().enumerate() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                let i = base + 8 * a + l;
                *lane = x[i].to_f32().mul_add(y[i].to_f32(), *lane);
            }
        }
    }
    let mut s = [0.0f32; 8];
    for (l, sl) in s.iter_mut().enumerate() {
        *sl = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    let r: f32 = (t[0] + t[1]) + (t[2] + t[3]);
    let mut sum = f64::from(r);
    for i in np..n {
        let p: f32 = x[i].to_f32() * y[i].to_f32();
        sum += f64::from(p);
    }
    sum as f32
}

/// llamafile tinyBLAS F16 × F32 dot product ("dotblas"): `Σ a[i]·b[i]` with `a` an f16
/// weight row (widened exactly) and `b` f32 activations, not rounded.
///
/// One 8-lane f32 accumulator; element `i` goes to lane `i % 8`:
///
/// ```text
/// acc[l] = 0;  for i in index order: acc[i % 8] = fma(a[i], b[i], acc[i % 8])
/// t_l = f32(acc[l+4] + acc[l])   (l = 0..3)
/// result = f32( f32(t0 + t2) + f32(t1 + t3) )
/// ```
///
/// tinyBLAS itself only accepts `n` a multiple of 8. For other lengths this function
/// behaves as if both operands were zero-padded to the next multiple of 8 (the missing
/// elements are simply skipped, lanes stay index-aligned).
///
/// # Panics
/// If the lengths differ.
pub fn vec_dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vec_dot_f16_f32: lengths");
    let mut acc = [0.0f32; 8];
    for (i, (&ai, &bi)) in a.iter().zip(b).enumerate() {
        let l = i % 8;
        acc[l] = ai.to_f32().mul_add(bi, acc[l]);
    }
    let t = [acc[4] + acc[0], acc[5] + acc[1], acc[6] + acc[2], acc[7] + acc[3]];
    (t[0] + t[2]) + (t[1] + t[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::rng::Rng;

    fn f16_vec(rng: &mut Rng, n: usize) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(rng.f32(-1.0, 1.0))).collect()
    }

    fn exact(x: &[f16], y: &[f32]) -> f64 {
        x.iter().zip(y).map(|(a, &b)| f64::from(a.to_f32()) * f64::from(b)).sum()
    }

    #[test]
    fn f16_round_is_nearest_even() {
        // 1 + 2⁻¹¹ is halfway between 1 and 1 + 2⁻¹⁰: ties to even → 1.
        assert_eq!(f16_round(1.0 + 2f32.powi(-11)), 1.0);
        // 1 + 3·2⁻¹¹ is halfway between 1 + 2⁻¹⁰ and 1 + 2⁻⁹: even → 1 + 2⁻⁹.
        assert_eq!(f16_round(1.0 + 3.0 * 2f32.powi(-11)), 1.0 + 2f32.powi(-9));
        assert_eq!(f16_round(65520.0), f32::INFINITY);
        assert_eq!(f16_round(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn dots_close_to_exact() {
        let mut rng = Rng::new(5);
        for &n in &[0usize, 7, 8, 31, 32, 64, 100, 256] {
            let x = f16_vec(&mut rng, n);
            let y = f16_vec(&mut rng, n);
            let yf: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
            let want = exact(&x, &yf);
            assert!((f64::from(vec_dot_f16(&x, &y)) - want).abs() < 1e-5, "dot16 n = {n}");
            let b: Vec<f32> = (0..n).map(|_| rng.f32(-1.0, 1.0)).collect();
            let want = exact(&x, &b);
            assert!((f64::from(vec_dot_f16_f32(&x, &b)) - want).abs() < 1e-5, "dotblas n = {n}");
        }
    }

    #[test]
    fn dot16_reduction_order() {
        // n = 32: acc[a][l] holds only x[8a+l]·y[8a+l]; check the stated reduction bit for bit.
        let mut rng = Rng::new(9);
        let x = f16_vec(&mut rng, 32);
        let y = f16_vec(&mut rng, 32);
        let p: Vec<f32> = (0..32).map(|i| x[i].to_f32() * y[i].to_f32()).collect();
        let s: Vec<f32> = (0..8).map(|l| (p[l] + p[16 + l]) + (p[8 + l] + p[24 + l])).collect();
        let t = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
        assert_eq!(vec_dot_f16(&x, &y).to_bits(), ((t[0] + t[1]) + (t[2] + t[3])).to_bits());
        // dotblas on n = 8: one product per lane.
        let b: Vec<f32> = (0..8).map(|_| rng.f32(-1.0, 1.0)).collect();
        let q: Vec<f32> = (0..8).map(|i| x[i].to_f32() * b[i]).collect();
        let t = [q[4] + q[0], q[5] + q[1], q[6] + q[2], q[7] + q[3]];
        assert_eq!(vec_dot_f16_f32(&x[..8], &b).to_bits(), ((t[0] + t[2]) + (t[1] + t[3])).to_bits());
    }

    #[test]
    fn dot16_tail_in_f64() {
        // n = 33: the last product is added to f64(r) in f64 and rounded once.
        let x: Vec<f16> = (0..33).map(|i| f16::from_f32(if i == 32 { 1.0 } else { 0.0 })).collect();
        let mut y = vec![f16::from_f32(0.0); 33];
        y[0] = f16::from_f32(2048.0);
        y[32] = f16::from_f32(2f32.powi(-14));
        let mut x2 = x.clone();
        x2[0] = f16::from_f32(1.0);
        // r = 2048 exactly; 2048 + 2⁻¹⁴ is exact in f64 and rounds to 2048 in f32.
        assert_eq!(vec_dot_f16(&x2, &y), 2048.0);
        assert_eq!(vec_dot_f16(&x, &y), 2f32.powi(-14));
    }
}
