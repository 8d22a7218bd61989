//! Q6_K LM head: the block dot product `ggml_vec_dot_q6_K_q8_K` of a Q6_K weight row with a
//! Q8_K activation row ([`super::quantize_row_q8_k`]), shared/reference/README.md §7.1.

use graph::quant::{f16_at, q6k_scale, q6k_values, Q6K_BLOCK_BYTES};

use super::tq::{hsum_float_8, Q8K_BLOCK, Q8K_BLOCK_BYTES};

/// One output of a Q6_K × Q8_K product: weight row `w` (`K/256` blocks of 210 bytes) against
/// activation row `a` (`K/256` blocks of 260 bytes), as ggml's AVX2 `vec_dot_q6_K_q8_K`
/// computes it (the lanes of its `madd_epi16` with the sub-block scales):
///
/// ```text
/// acc[0..8] = +0.0 (f32)
/// for b in 0..nb (ascending):
///     for lane L in 0..8:
///         S_L = Σ_{i : (i mod 32) div 4 = L} sc_{i div 16} · q_i·a_i      # exact integer
///     D = f32(d_a · f32(d_w))                                       # d_w from f16
///     acc[L] = fma(D, f32(S_L), acc[L])                             # one rounding
/// result = hsum_float_8(acc)                                        # ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7))
/// ```
///
/// with `q_i` in −32..31 from [`q6k_values`] and `a_i` the Q8_K values. The kernel forms
/// `Σ q_i·a_i` as `maddubs(q_i + 32, a_i) − maddubs(32, a_i)` in 16-bit lanes (no
/// saturation: |sums| ≤ 2·63·128), so the integer is exact whichever way it is grouped.
///
/// # Panics
/// If `w.len()` is not a multiple of 210 or the block counts differ.
pub fn vec_dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len().is_multiple_of(Q6K_BLOCK_BYTES), "vec_dot_q6_k_q8_k: not whole weight blocks");
    let nb = w.len() / Q6K_BLOCK_BYTES;
    assert_eq!(a.len(), nb * Q8K_BLOCK_BYTES, "vec_dot_q6_k_q8_k: activation length");
    let mut acc = [0.0f32; 8];
    for (wb, ab) in w.chunks_exact(Q6K_BLOCK_BYTES).zip(a.chunks_exact(Q8K_BLOCK_BYTES)) {
        let q = q6k_values(wb);
        let da = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
        let mut s = [0i32; 8];
        for i in 0..Q8K_BLOCK {
            let prod = i32::from(q[i]) * i32::from(ab[4 + i] as i8);
            s[(i % 32) / 4] += i32::from(q6k_scale(wb, i / 16)) * prod;
        }
        let d: f32 = da * f16_at(wb, 208);
        for (lane, &sl) in acc.iter_mut().zip(&s) {
            *lane = d.mul_add(sl as f32, *lane);
        }
    }
    hsum_float_8(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quantize_row_q8_k;
    use graph::rng::Rng;
    use half::f16;

    /// The product equals the f64 dot of the dequantized values to within rounding.
    #[test]
    fn matches_dequantized_dot() {
        let mut rng = Rng::new(7);
        let nb = 3;
        let mut w = vec![0u8; nb * Q6K_BLOCK_BYTES];
        for b in w.chunks_exact_mut(Q6K_BLOCK_BYTES) {
            for v in b[..208].iter_mut() {
                *v = rng.next_u64() as u8;
            }
            b[208..].copy_from_slice(&f16::from_f32(rng.f32(0.001, 0.01)).to_le_bytes());
        }
        let x: Vec<f32> = (0..nb * 256).map(|_| rng.f32(-1.0, 1.0)).collect();
        let mut a = vec![0u8; nb * Q8K_BLOCK_BYTES];
        quantize_row_q8_k(&x, &mut a);
        let mut wf = vec![0.0f32; nb * 256];
        graph::quant::decode_q6_k(&w, &mut wf);
        let mut want = 0.0f64;
        for (b, ab) in a.chunks_exact(Q8K_BLOCK_BYTES).enumerate() {
            let da = f64::from(f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]));
            for i in 0..256 {
                want += f64::from(wf[b * 256 + i]) * da * f64::from(ab[4 + i] as i8);
            }
        }
        let got = vec_dot_q6_k_q8_k(&w, &a);
        assert!((f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0), "{got} vs {want}");
    }
}
