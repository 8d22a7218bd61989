//! Q8_0 output head: the activation quantizer (`quantize_row_q8_0`, AVX2) and the block dot
//! product (`ggml_vec_dot_q8_0_q8_0`, AVX2 + FMA; tinyBLAS_Q0_AVX is identical per output),
//! ../shared/docs/format.md §4.6.2.

use half::f16;

/// Elements per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per Q8_0 block: an f16 scale `d` (little-endian) followed by 32 × i8 `q`.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// `_mm256_cvtps_epi32` of an already rounded value: out-of-range and NaN give `i32::MIN`.
fn cvtps_epi32(v: f32) -> i32 {
    if v.is_nan() || !(-2147483648.0..2147483648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// Quantizes an f32 activation row to Q8_0 with bitnet.cpp's ACTIVATION quantizer.
///
/// Per block of 32 elements (`x.len()` must be a multiple of 32; `out` holds
/// `x.len()/32` blocks of 34 bytes):
///
/// ```text
/// amax = max_i |x_i|                              # f32
/// d_a  = f16_rne( f32(amax / 127) )               # stored scale
/// m    = (amax != 0) ? f32(127 / amax) : 0        # multiplier; NOT 1/d_a
/// q_i  = clamp( rne( f32(x_i · m) ), −128, 127 )  # round half even, saturating packs
/// ```
///
/// This is not the weight quantizer `quantize_row_q8_0_ref` (which uses `1/d` and rounds
/// half away from zero). The maximum uses `_mm256_max_ps` semantics (`a > b ? a : b` with
/// the new value second); infinities and NaN convert as `cvtps2dq` does (to `i32::MIN`,
/// then −128).
///
/// # Panics
/// If `x.len()` is not a multiple of 32 or `out.len() != x.len()/32·34`.
pub fn quantize_row_q8_0_act(x: &[f32], out: &mut [u8]) {
    assert!(x.len().is_multiple_of(Q8_0_BLOCK), "quantize_row_q8_0_act: length {} is not a multiple of 32", x.len());
    assert_eq!(out.len(), x.len() / Q8_0_BLOCK * Q8_0_BLOCK_BYTES, "quantize_row_q8_0_act: output length");
    for (xb, ob) in x.chunks_exact(Q8_0_BLOCK).zip(out.chunks_exact_mut(Q8_0_BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        for &v in xb {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d: f32 = amax / 127.0;
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let m: f32 = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (o, &v) in ob[2..].iter_mut().zip(xb) {
            let p: f32 = v * m;
            let q = cvtps_epi32(p.round_ties_even()).clamp(-128, 127);
            *o = q as i8 as u8;
        }
    }
}

/// One output of a Q8_0 × Q8_0 product: the dot of a weight row `w` with an activation
/// row `a` quantized by [`quantize_row_q8_0_act`] (both `nb` blocks of 34 bytes).
///
/// ```text
/// acc[0..8] = +0.0 (f32)
/// for b in 0..nb (ascending):
///     D = f32(d_w[b]) · f32(d_a[b])                          # f32 product (exact)
///     for lane j in 0..8:
///         S = Σ_{t=0..3} qw[4j+t]·qa[4j+t]                   # integer, as the kernel forms it
///         acc[j] = fma(D, f32(S), acc[j])
/// r_j = f32(acc[j] + acc[j+4])   (j = 0..3)
/// result = f32( f32(r0 + r2) + f32(r1 + r3) )
/// ```
///
/// The integer lane sum is formed as AVX2 does: `|qw|` (as u8) times `qa` with the sign
/// of `qw` moved onto it (`sign_epi8`, so `−(−128)` wraps to −128), adjacent pairs added
/// with i16 saturation (`maddubs`), then pairs of those added in i32 (`madd` with ones).
/// This is the exact product except for an activation of −128 against a negative weight,
/// which no quantizer produces.
///
/// # Panics
/// If the lengths differ or are not a multiple of 34.
pub fn vec_dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot_q8_0_q8_0: lengths");
    assert!(w.len().is_multiple_of(Q8_0_BLOCK_BYTES), "vec_dot_q8_0_q8_0: not whole blocks");
    let mut acc = [0.0f32; 8];
    for (wb, ab) in w.chunks_exact(Q8_0_BLOCK_BYTES).zip(a.chunks_exact(Q8_0_BLOCK_BYTES)) {
        let dw = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
        let da = f16::from_le_bytes([ab[0], ab[1]]).to_f32();
        let mut qw = [0i8; Q8_0_BLOCK];
        for (x, &b) in qw.iter_mut().zip(&wb[2..]) {
            *x = b as i8;
        }
        block_lanes(&mut acc, dw * da, &qw, &ab[2..]);
    }
    reduce_lanes(&acc)
}

/// One block of an 8-lane Q8_0-activation dot: lane `j` gets
/// `fma(d, f32(S_j), acc[j])` with `S_j` the sum over elements `4j..4j+3` of `qw·qa`,
/// formed as AVX2 does (`|qw|` times `qa` with `qw`'s sign moved onto it, adjacent pairs
/// added with i16 saturation, then in i32). Shared by the Q8_0 and Q4_0 weight kernels.
#[inline(always)]
pub(crate) fn block_lanes(acc: &mut [f32; 8], d: f32, qw: &[i8; Q8_0_BLOCK], qa: &[u8]) {
    for (j, lane) in acc.iter_mut().enumerate() {
        let mut s = 0i32;
        for pair in 0..2 {
            let mut p = 0i16;
            for t in 0..2 {
                let i = 4 * j + 2 * pair + t;
                let (x, y) = (qw[i], qa[i] as i8);
                let ax = i16::from(x.unsigned_abs());
                let sy = i16::from(match x.signum() {
                    1 => y,
                    0 => 0,
                    _ => y.wrapping_neg(),
                });
                p = p.saturating_add(ax * sy);
            }
            s += i32::from(p);
        }
        *lane = d.mul_add(s as f32, *lane);
    }
}

/// The final 8 → 1 reduction: `(r0 + r2) + (r1 + r3)` with `r_j = acc[j] + acc[j+4]`.
#[inline(always)]
pub(crate) fn reduce_lanes(acc: &[f32; 8]) -> f32 {
    let r = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::rng::Rng;

    #[test]
    fn activation_quantizer_ties_and_multiplier() {
        // amax = 127 → m = 1, so q = rne(x): ties go to even.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = 2.5;
        x[4] = -2.5;
        x[5] = -126.5;
        let mut out = [0u8; 34];
        quantize_row_q8_0_act(&x, &mut out);
        assert_eq!(f16::from_le_bytes([out[0], out[1]]).to_f32(), 1.0);
        let q: Vec<i8> = out[2..8].iter().map(|&b| b as i8).collect();
        assert_eq!(q, [127, 0, 2, 2, -2, -126]);
        // Zero block: d = 0, q = 0.
        quantize_row_q8_0_act(&[0.0; 32], &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    #[test]
    fn dot_matches_exact_within_rounding() {
        let mut rng = Rng::new(77);
        let k = 384;
        let x: Vec<f32> = (0..k).map(|_| rng.f32(-2.0, 2.0)).collect();
        let wv: Vec<f32> = (0..k).map(|_| rng.f32(-1.0, 1.0)).collect();
        let (mut xa, mut wq) =
            (vec![0u8; graph::DType::Q8_0.row_bytes(k).unwrap()], vec![0u8; graph::DType::Q8_0.row_bytes(k).unwrap()]);
        quantize_row_q8_0_act(&x, &mut xa);
        quantize_row_q8_0_act(&wv, &mut wq);
        let mut want = 0.0f64;
        for b in 0..k / 32 {
            let (wb, ab) = (&wq[34 * b..34 * b + 34], &xa[34 * b..34 * b + 34]);
            let d =
                f64::from(f16::from_le_bytes([wb[0], wb[1]]).to_f32()) * f64::from(f16::from_le_bytes([ab[0], ab[1]]).to_f32());
            let s: i64 = (0..32).map(|i| i64::from(wb[2 + i] as i8) * i64::from(ab[2 + i] as i8)).sum();
            want += d * s as f64;
        }
        let got = vec_dot_q8_0_q8_0(&wq, &xa);
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        // And within the quantizers' worst case of the unquantized dot: each value is off by
        // at most half a step plus its code's share of the f16 rounding of the step,
        // `e ≤ d·(1/2 + 127·2⁻¹¹)·(1 + 2⁻¹⁰)` per block, so the dot by at most
        // `Σ |w|·e_x + |x|·e_w + e_x·e_w`. (A fixed absolute tolerance is no bound: the
        // rounding errors of 384 products have a standard deviation near 0.07 here.)
        let exact: f64 = x.iter().zip(&wv).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        // The Q8_0 block holding value `i` of a quantized row: its step `d`, then the codes.
        fn block(q: &[u8], i: usize) -> &[u8] {
            &q[i / Q8_0_BLOCK * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES]
        }
        let step = |q: &[u8], i: usize| f64::from(f16::from_le_bytes([block(q, i)[0], block(q, i)[1]]).to_f32());
        let err = |q: &[u8], i: usize| step(q, i) * (0.5 + 127.0 / 2048.0) * (1.0 + 1.0 / 1024.0);
        let deq = |q: &[u8], i: usize| step(q, i) * f64::from(block(q, i)[2 + i % Q8_0_BLOCK] as i8);
        let bound: f64 = (0..k)
            .map(|i| {
                let (ex, ew) = (err(&xa, i), err(&wq, i));
                f64::from(wv[i].abs()) * ex + f64::from(x[i].abs()) * ew + ex * ew
            })
            .sum();
        assert!((f64::from(got) - exact).abs() <= bound, "{got} vs {exact}, bound {bound}");
        for (i, (&xi, &wi)) in x.iter().zip(&wv).enumerate() {
            assert!((deq(&xa, i) - f64::from(xi)).abs() <= err(&xa, i), "x[{i}]");
            assert!((deq(&wq, i) - f64::from(wi)).abs() <= err(&wq, i), "w[{i}]");
        }
    }

    #[test]
    fn minus_128_activation_quirk() {
        // Weight −1 against activation −128: sign_epi8 negates −128 to −128, so the kernel
        // gets −128·1 instead of +128. Lane 0 only; d = 1 on both sides.
        let one = f16::from_f32(1.0).to_le_bytes();
        let mut w = [0u8; 34];
        let mut a = [0u8; 34];
        w[..2].copy_from_slice(&one);
        a[..2].copy_from_slice(&one);
        w[2] = (-1i8) as u8;
        a[2] = (-128i8) as u8;
        assert_eq!(vec_dot_q8_0_q8_0(&w, &a), -128.0);
        w[2] = 1;
        assert_eq!(vec_dot_q8_0_q8_0(&w, &a), -128.0);
        a[2] = 5;
        w[2] = (-3i8) as u8;
        assert_eq!(vec_dot_q8_0_q8_0(&w, &a), -15.0);
    }
}
