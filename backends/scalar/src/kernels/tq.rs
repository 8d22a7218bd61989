//! TQ2_0 / TQ1_0 ternary products: the Q8_K activation quantizer (`quantize_row_q8_K_ref`)
//! and the block dot products `ggml_vec_dot_tq2_0_q8_K` / `ggml_vec_dot_tq1_0_q8_K`
//! (AVX2), shared/reference/README-more-models.md §2.3 and §4.2.
//!
//! A full product `y = W·x` for one token (K = `x.len()`, a multiple of 256) is
//!
//! ```text
//! quantize_row_q8_k(x, &mut a);                       // K/256 blocks of 260 bytes
//! for each row r: y[r] = vec_dot_tq2_0_q8_k(row_r, &a);   // or vec_dot_tq1_0_q8_k
//! ```
//!
//! ggml's `block_q8_K` also stores `bsums[16]` (sums of 16 consecutive `q`); those are
//! plain integer sums of the stored `q`, so they are recomputed here and not stored.

use graph::quant::{f16_at, tq1_code, tq2_code};

/// Elements per Q8_K (and TQ2_0 / TQ1_0) block.
pub const Q8K_BLOCK: usize = 256;
/// Bytes per Q8_K activation block as laid out here: `d` as f32 (little-endian), then
/// 256 × i8 `q`.
pub const Q8K_BLOCK_BYTES: usize = 260;
/// Bytes per TQ2_0 weight block: `qs[64]`, f16 `d`.
pub const TQ2_0_BLOCK_BYTES: usize = 66;
/// Bytes per TQ1_0 weight block: `qs[48]`, `qh[4]`, f16 `d`.
pub const TQ1_0_BLOCK_BYTES: usize = 54;

/// Quantizes an f32 activation row to Q8_K (ggml `quantize_row_q8_K_ref`, which is what
/// the x86 build runs).
///
/// Per block of 256 elements (`x.len()` must be a multiple of 256; `out` holds
/// `x.len()/256` blocks of 260 bytes):
///
/// ```text
/// max    = x_j for the FIRST j with |x_j| = max_i |x_i|   # scan with `|x_j| > amax`, keeps the sign
/// if max == 0 (amax == 0):  d = 0, q = 0
/// iscale = f32(−127 / max)                                # f32 division; note the minus sign
/// q_i    = min(127, rne(f32(iscale · x_i)))               # f32 product, round half to even
/// d      = f32(1 / iscale)                                # f32 division, stored as f32
/// ```
///
/// So `d` has the opposite sign of `max`, and `d·q ≈ x`. ggml rounds with the
/// `x + 1.5·2²³` trick (`nearest_int`), which is round-half-even for |x| < 2²², always the
/// case here (|iscale·x_i| ≤ 127·(1 + 2⁻²³)). The result never actually reaches 128, and
/// the lower end is −127 (−128 needs |x_i| > |max|). A NaN maximum is never selected (the
/// comparison is false), as in ggml.
///
/// # Panics
/// If `x.len()` is not a multiple of 256 or `out.len() != x.len()/256·260`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    assert!(x.len().is_multiple_of(Q8K_BLOCK), "quantize_row_q8_k: length {} is not a multiple of 256", x.len());
    assert_eq!(out.len(), x.len() / Q8K_BLOCK * Q8K_BLOCK_BYTES, "quantize_row_q8_k: output length");
    for (xb, ob) in x.chunks_exact(Q8K_BLOCK).zip(out.chunks_exact_mut(Q8K_BLOCK_BYTES)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let a = v.abs();
            if a > amax {
                amax = a;
                max = v;
            }
        }
        if amax == 0.0 {
            ob.fill(0);
            continue;
        }
        let iscale: f32 = -127.0f32 / max;
        for (o, &v) in ob[4..].iter_mut().zip(xb) {
            let p: f32 = iscale * v;
            // `as` saturates (NaN → 0); the value is an exact integer well inside i32.
            let q = (p.round_ties_even() as i32).min(127);
            *o = q as i8 as u8;
        }
        let d: f32 = 1.0f32 / iscale;
        ob[..4].copy_from_slice(&d.to_le_bytes());
    }
}

/// The f32 scale `d` of a Q8_K block.
#[inline]
fn q8k_d(ab: &[u8]) -> f32 {
    f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]])
}

/// Shared float part of the two TQ dot products: `codes(b, i)` is the code (0/1/2) of
/// element `i` of weight block `b`, `dw[b]` its f16 scale.
///
/// ```text
/// acc[0..8] = +0.0 (f32)
/// for b in 0..nb (ascending):
///     D = f32(d_a[b] · d_w[b])                                  # f32 product, d_w from f16
///     for lane L in 0..8:
///         S_L = Σ_{i : (i mod 32) div 4 = L} c_i·q_i − Σ_{i=32L}^{32L+31} q_i    # exact integer
///         acc[L] = f32(acc[L] + f32(f32(S_L) · D))              # mul then add, NO fma
/// r_j = f32(acc[j] + acc[j+4])   (j = 0..3)
/// result = f32( f32(r0 + r2) + f32(r1 + r3) )                   # hsum_float_8
/// ```
///
/// The AVX2 kernels form `S_L` from 16-bit lanes (`maddubs` of code × q, `add_epi16`,
/// minus `bsums`, then `madd_epi16` with ones): every partial sum stays within ±4096 + 2048,
/// so no i16 wraps or saturates and the exact integer sum is what they compute.
fn tq_dot(nb: usize, a: &[u8], dw: impl Fn(usize) -> f32, codes: impl Fn(usize, usize) -> u8) -> f32 {
    let mut acc = [0.0f32; 8];
    for b in 0..nb {
        let ab = &a[b * Q8K_BLOCK_BYTES..(b + 1) * Q8K_BLOCK_BYTES];
        let q = &ab[4..];
        let d: f32 = q8k_d(ab) * dw(b);
        let mut s = [0i32; 8];
        for (i, &qi) in q.iter().enumerate() {
            let qi = i32::from(qi as i8);
            s[(i % 32) / 4] += i32::from(codes(b, i)) * qi;
            s[i / 32] -= qi;
        }
        for (lane, &sl) in acc.iter_mut().zip(&s) {
            let p: f32 = sl as f32 * d;
            *lane += p;
        }
    }
    hsum_float_8(&acc)
}

/// ggml's `hsum_float_8`: `r_j = f32(acc[j] + acc[j+4])` (j = 0..3), then
/// `f32(f32(r0 + r2) + f32(r1 + r3))`.
pub(crate) fn hsum_float_8(acc: &[f32; 8]) -> f32 {
    let r = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// One output of a TQ2_0 × Q8_K product: weight row `w` (`K/256` blocks of 66 bytes,
/// section 2.3 layout: code of element `128h + 32l + m` is bits `2l+1..2l` of `qs[32h + m]`)
/// against activation row `a` from [`quantize_row_q8_k`] (`K/256` blocks of 260 bytes).
///
/// Summation and rounding: the 8-lane scheme of `tq_dot` (see the module docs):
/// exact integer lane sums `S_L = Σ_{(i mod 32) div 4 = L} c_i·q_i − Σ_{i=32L..32L+31} q_i`,
/// `acc_L += f32(S_L)·f32(d_a·d_w)` as separate f32 multiply and add (no fma), blocks in
/// order, then `((acc0+acc4)+(acc2+acc6))+((acc1+acc5)+(acc3+acc7))`. A code of 3 (never
/// written by the quantizer) counts as 3, as in the kernel.
///
/// # Panics
/// If `w.len()` is not a multiple of 66 or the block counts differ.
pub fn vec_dot_tq2_0_q8_k(w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len().is_multiple_of(TQ2_0_BLOCK_BYTES), "vec_dot_tq2_0_q8_k: not whole weight blocks");
    let nb = w.len() / TQ2_0_BLOCK_BYTES;
    assert_eq!(a.len(), nb * Q8K_BLOCK_BYTES, "vec_dot_tq2_0_q8_k: activation length");
    let blk = |b: usize| &w[b * TQ2_0_BLOCK_BYTES..(b + 1) * TQ2_0_BLOCK_BYTES];
    tq_dot(nb, a, |b| f16_at(blk(b), 64), |b, i| tq2_code(&blk(b)[..64], i))
}

/// One output of a TQ1_0 × Q8_K product: weight row `w` (`K/256` blocks of 54 bytes,
/// section 2.3 layout, trit n of byte B = `((B·3ⁿ mod 256)·3) >> 8`) against activation row
/// `a` from [`quantize_row_q8_k`].
///
/// Summation and rounding are those of [`vec_dot_tq2_0_q8_k`] (same lanes: element `i` of a
/// block is in lane `(i mod 32) div 4` in both layouts), so equal codes and scales give
/// bit-identical results. The AVX2 kernel extracts trits with `subs_epu8(v, 1)`, two
/// `avg_epu8` and `>> 6`, which equals `(v·3) >> 8` for every byte v (checked for all 256),
/// so [`tq1_code`] gives exactly the kernel's codes, including for non-canonical bytes.
///
/// # Panics
/// If `w.len()` is not a multiple of 54 or the block counts differ.
pub fn vec_dot_tq1_0_q8_k(w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len().is_multiple_of(TQ1_0_BLOCK_BYTES), "vec_dot_tq1_0_q8_k: not whole weight blocks");
    let nb = w.len() / TQ1_0_BLOCK_BYTES;
    assert_eq!(a.len(), nb * Q8K_BLOCK_BYTES, "vec_dot_tq1_0_q8_k: activation length");
    let blk = |b: usize| &w[b * TQ1_0_BLOCK_BYTES..(b + 1) * TQ1_0_BLOCK_BYTES];
    tq_dot(nb, a, |b| f16_at(blk(b), 52), |b, i| tq1_code(blk(b), i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::quantize::{pack_tq1_0, pack_tq2_0};
    use graph::quant::tq1_trit;
    use graph::rng::Rng;
    use half::f16;

    fn q_of(out: &[u8]) -> Vec<i8> {
        out[4..].iter().map(|&b| b as i8).collect()
    }

    #[test]
    fn q8k_ties_round_half_even() {
        // max = −127 → iscale = 1, d = 1, q = rne(x).
        let mut x = [0.0f32; 256];
        x[0] = -127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = 2.5;
        x[4] = -2.5;
        x[5] = -0.5;
        x[6] = 126.5;
        x[7] = 3.4999998;
        let mut out = [0u8; 260];
        quantize_row_q8_k(&x, &mut out);
        assert_eq!(q8k_d(&out), 1.0);
        assert_eq!(&q_of(&out)[..8], &[-127, 0, 2, 2, -2, 0, 126, 3]);
        // max = +127 → iscale = −1, d = −1: the quantized values are negated.
        x[0] = 127.0;
        quantize_row_q8_k(&x, &mut out);
        assert_eq!(q8k_d(&out), -1.0);
        assert_eq!(&q_of(&out)[..8], &[-127, 0, -2, -2, 2, 0, -126, -3]);
    }

    #[test]
    fn q8k_first_of_equal_max() {
        let mut x = [0.0f32; 256];
        x[3] = 2.0;
        x[9] = -2.0;
        x[10] = 1.0;
        let mut out = [0u8; 260];
        quantize_row_q8_k(&x, &mut out);
        let iscale = -127.0f32 / 2.0;
        assert_eq!(q8k_d(&out).to_bits(), (1.0f32 / iscale).to_bits());
        let q = q_of(&out);
        // −63.5 → −64 (half to even).
        assert_eq!((q[3], q[9], q[10]), (-127, 127, -64));
        // The other order: the negative one comes first and wins.
        x.swap(3, 9);
        quantize_row_q8_k(&x, &mut out);
        assert_eq!(q8k_d(&out).to_bits(), (1.0f32 / -iscale).to_bits());
        let q = q_of(&out);
        assert_eq!((q[3], q[9], q[10]), (-127, 127, 64));
    }

    #[test]
    fn q8k_zero_block_and_blocks_independent() {
        let mut x = vec![0.0f32; 512];
        x[300] = -0.25;
        let mut out = vec![0xAAu8; 520];
        quantize_row_q8_k(&x, &mut out);
        assert!(out[..260].iter().all(|&b| b == 0), "zero block must be d = 0, q = 0");
        assert_eq!(q8k_d(&out[260..]), 1.0f32 / (-127.0f32 / -0.25));
        assert_eq!(out[260 + 4 + 44] as i8, -127);
        // −0.0 is a zero block too.
        let mut out = [0xAAu8; 260];
        quantize_row_q8_k(&[-0.0; 256], &mut out);
        assert!(out.iter().all(|&b| b == 0));
    }

    /// f64 value of `Σ_b d_a·d_w·Σ_i (c_i − 1)·q_i`.
    fn tq_f64(codes: &[u8], dws: &[f16], a: &[u8]) -> f64 {
        let mut want = 0.0f64;
        for (b, &dw) in dws.iter().enumerate() {
            let ab = &a[b * 260..(b + 1) * 260];
            let s: i64 = (0..256).map(|i| (i64::from(codes[256 * b + i]) - 1) * i64::from(ab[4 + i] as i8)).sum();
            want += f64::from(q8k_d(ab)) * f64::from(dw.to_f32()) * s as f64;
        }
        want
    }

    #[test]
    fn tq_dots_match_f64_and_each_other() {
        let mut rng = Rng::new(0x7155);
        for &nb in &[1usize, 2, 3, 5] {
            let k = 256 * nb;
            let x: Vec<f32> = (0..k).map(|_| rng.f32(-3.0, 3.0)).collect();
            let codes: Vec<u8> = (0..k).map(|_| rng.below(3) as u8).collect();
            let dws: Vec<f16> = (0..nb).map(|_| f16::from_f32(rng.f32(0.01, 0.2))).collect();
            let mut a = vec![0u8; nb * 260];
            quantize_row_q8_k(&x, &mut a);
            let (mut w2, mut w1) = (Vec::new(), Vec::new());
            for b in 0..nb {
                w2.extend_from_slice(&pack_tq2_0(&codes[256 * b..256 * (b + 1)], dws[b]));
                w1.extend_from_slice(&pack_tq1_0(&codes[256 * b..256 * (b + 1)], dws[b]));
            }
            let want = tq_f64(&codes, &dws, &a);
            let got2 = vec_dot_tq2_0_q8_k(&w2, &a);
            let got1 = vec_dot_tq1_0_q8_k(&w1, &a);
            assert_eq!(got1.to_bits(), got2.to_bits(), "TQ1_0 and TQ2_0 must agree bit for bit");
            assert!((f64::from(got2) - want).abs() <= 1e-5 * (1.0 + want.abs()), "nb={nb}: {got2} vs {want}");
            // And close to the unquantized product.
            let exact: f64 =
                (0..k).map(|i| f64::from(x[i]) * (f64::from(codes[i]) - 1.0) * f64::from(dws[i / 256].to_f32())).sum();
            assert!((f64::from(got2) - exact).abs() < 0.02 * (1.0 + exact.abs()), "{got2} vs {exact}");
        }
    }

    #[test]
    fn tq_single_lane_values() {
        // One weight +1 at element i, activation q = 1 at i (block max): the lane structure
        // puts everything into lane (i mod 32)/4 and the Σq correction into lane i/32.
        for &i in &[0usize, 37, 130, 161, 245, 255] {
            let mut codes = [1u8; 256];
            codes[i] = 2;
            let mut x = [0.0f32; 256];
            x[i] = -127.0; // iscale = 1, q_i = −127, d_a = 1
            let mut a = [0u8; 260];
            quantize_row_q8_k(&x, &mut a);
            let d = f16::from_f32(0.5);
            let w2 = pack_tq2_0(&codes, d);
            let w1 = pack_tq1_0(&codes, d);
            assert_eq!(vec_dot_tq2_0_q8_k(&w2, &a), -63.5);
            assert_eq!(vec_dot_tq1_0_q8_k(&w1, &a), -63.5);
        }
    }

    #[test]
    fn tq1_trit_equals_avx2_extraction() {
        // AVX2: v' = subs_epu8(v, 1); t = avg(v', avg(v', 0)); trit = t >> 6.
        for v in 0..=255u8 {
            for n in 0..5 {
                let b = ((u16::from(v) * 3u16.pow(n)) & 0xFF) as u8;
                let vp = u16::from(b.saturating_sub(1));
                let t = (vp + ((vp + 1) >> 1) + 1) >> 1;
                assert_eq!(tq1_trit(v, n), (t >> 6) as u8, "byte {v} trit {n}");
            }
        }
    }
}
