//! Q4_0 output head: the block dot product of a Q4_0 weight row with a Q8_0 activation row
//! (`ggml_vec_dot_q4_0_q8_0`, AVX2 + FMA; llamafile's `tinyBLAS_Q0_AVX` computes the same
//! per output), shared/reference/README-more-models.md §4.3.
//!
//! Activations are quantized with [`super::quantize_row_q8_0_act`].

use half::f16;

use super::q8_0::{block_lanes, reduce_lanes};

use super::q8_0::Q8_0_BLOCK_BYTES;

/// Elements per Q4_0 block.
pub const Q4_0_BLOCK: usize = 32;
/// Bytes per Q4_0 block: an f16 scale `d` (little-endian) followed by 16 bytes of nibbles
/// (element j < 16 is the low nibble of byte j, element 16 + j its high nibble).
pub const Q4_0_BLOCK_BYTES: usize = 18;

/// One output of a Q4_0 × Q8_0 product: weight row `w` (`nb` blocks of 18 bytes) against
/// activation row `a` quantized by [`super::quantize_row_q8_0_act`] (`nb` blocks of 34 bytes).
///
/// ```text
/// acc[0..8] = +0.0 (f32)
/// for b in 0..nb (ascending):
///     D = f32(f32(d_w[b]) · f32(d_a[b]))                     # both f16; f32 product (exact)
///     x_i = nibble_i − 8  (i8, −8..7; element order as in the block layout)
///     for lane L in 0..8:
///         S = Σ_{t=0..3} x[4L+t]·q[4L+t]                     # integer, formed as AVX2 does
///         acc[L] = fma(D, f32(S), acc[L])                    # single rounding
/// r_j = f32(acc[j] + acc[j+4])   (j = 0..3)
/// result = f32( f32(r0 + r2) + f32(r1 + r3) )                # hsum_float_8
/// ```
///
/// AVX2 (`bytes_from_nibbles_32`, `sub_epi8(8)`, then `mul_sum_i8_pairs_float`): `|x|` as u8
/// times `q` with the sign of `x` moved onto it (`sign_epi8`, so `−(−128)` wraps to −128),
/// adjacent pairs added with i16 saturation (`maddubs`, never saturating here: |pair| ≤
/// 2·8·128), pairs of those added in i32 (`madd` with ones). That is the exact product sum
/// except for an activation of −128 against a negative weight, which the activation
/// quantizer does not produce (its |q| ≤ 127); this function reproduces the quirk anyway.
///
/// # Panics
/// If `w.len()` is not a multiple of 18 or the block counts differ.
pub fn vec_dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    assert!(w.len().is_multiple_of(Q4_0_BLOCK_BYTES), "vec_dot_q4_0_q8_0: not whole weight blocks");
    let nb = w.len() / Q4_0_BLOCK_BYTES;
    assert_eq!(a.len(), nb * Q8_0_BLOCK_BYTES, "vec_dot_q4_0_q8_0: activation length");
    let mut acc = [0.0f32; 8];
    for (wb, ab) in w.chunks_exact(Q4_0_BLOCK_BYTES).zip(a.chunks_exact(Q8_0_BLOCK_BYTES)) {
        let dw = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
        let da = f16::from_le_bytes([ab[0], ab[1]]).to_f32();
        let d: f32 = dw * da;
        let mut xs = [0i8; Q4_0_BLOCK];
        for j in 0..16 {
            xs[j] = (wb[2 + j] & 15) as i8 - 8;
            xs[j + 16] = (wb[2 + j] >> 4) as i8 - 8;
        }
        block_lanes(&mut acc, d, &xs, &ab[2..]);
    }
    reduce_lanes(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::quantize_row_q8_0_act;
    use graph::rng::Rng;

    /// Random Q4_0 row of `nb` blocks.
    fn random_q4_0(rng: &mut Rng, nb: usize) -> Vec<u8> {
        let mut w = Vec::with_capacity(nb * 18);
        for _ in 0..nb {
            w.extend_from_slice(&f16::from_f32(rng.f32(0.01, 0.3)).to_le_bytes());
            for _ in 0..16 {
                w.push(rng.below(256) as u8);
            }
        }
        w
    }

    #[test]
    fn dot_matches_f64_and_decode() {
        let mut rng = Rng::new(404);
        let k = 256;
        let x: Vec<f32> = (0..k).map(|_| rng.f32(-2.0, 2.0)).collect();
        let w = random_q4_0(&mut rng, k / 32);
        let mut a = vec![0u8; graph::DType::Q8_0.row_bytes(k).unwrap()];
        quantize_row_q8_0_act(&x, &mut a);
        let mut wf = vec![0.0f32; k];
        graph::quant::decode_q4_0(&w, &mut wf);
        let mut want = 0.0f64;
        for b in 0..k / 32 {
            let ab = &a[34 * b..34 * b + 34];
            let da = f64::from(f16::from_le_bytes([ab[0], ab[1]]).to_f32());
            for i in 0..32 {
                want += f64::from(wf[32 * b + i]) * da * f64::from(ab[2 + i] as i8);
            }
        }
        let got = vec_dot_q4_0_q8_0(&w, &a);
        assert!((f64::from(got) - want).abs() < 1e-5 * (1.0 + want.abs()), "{got} vs {want}");
        let exact: f64 = x.iter().zip(&wf).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
        // Activation rounding error: about √K · |w| · amax/254 ≈ 0.1 here.
        assert!((f64::from(got) - exact).abs() < 0.3, "{got} vs {exact}");
    }

    #[test]
    fn lanes_and_nibble_order() {
        // d_w = d_a = 1; weight nibble 15 (x = 7) at element i, activation 3 there.
        let one = f16::from_f32(1.0).to_le_bytes();
        for i in [0usize, 5, 15, 16, 21, 31] {
            let mut w = [0x88u8; 18]; // all x = 0
            w[..2].copy_from_slice(&one);
            let byte = 2 + i % 16;
            w[byte] = if i < 16 { 0x8F } else { 0xF8 };
            let mut a = [0u8; 34];
            a[..2].copy_from_slice(&one);
            a[2 + i] = 3;
            assert_eq!(vec_dot_q4_0_q8_0(&w, &a), 21.0, "element {i}");
        }
    }

    #[test]
    fn matches_lane_formula_with_exact_integers() {
        // The documented formula, with the integer lane sums taken exactly (no sign tricks).
        let mut rng = Rng::new(9);
        let w = random_q4_0(&mut rng, 4);
        let x: Vec<f32> = (0..128).map(|_| rng.f32(-1.0, 1.0)).collect();
        let mut a = vec![0u8; 4 * 34];
        quantize_row_q8_0_act(&x, &mut a);
        let mut acc = [0.0f32; 8];
        for b in 0..4 {
            let (wb, ab) = (&w[18 * b..18 * b + 18], &a[34 * b..34 * b + 34]);
            let d = f16::from_le_bytes([wb[0], wb[1]]).to_f32() * f16::from_le_bytes([ab[0], ab[1]]).to_f32();
            for (l, lane) in acc.iter_mut().enumerate() {
                let s: i32 = (0..4)
                    .map(|t| {
                        let i = 4 * l + t;
                        let nib = if i < 16 { wb[2 + i] & 15 } else { wb[2 + i - 16] >> 4 };
                        (i32::from(nib) - 8) * i32::from(ab[2 + i] as i8)
                    })
                    .sum();
                *lane = d.mul_add(s as f32, *lane);
            }
        }
        let want = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        assert_eq!(vec_dot_q4_0_q8_0(&w, &a).to_bits(), want.to_bits());
    }

    #[test]
    fn minus_128_activation_quirk() {
        let one = f16::from_f32(1.0).to_le_bytes();
        let mut w = [0x88u8; 18];
        w[..2].copy_from_slice(&one);
        w[2] = 0x87; // element 0: x = −1
        let mut a = [0u8; 34];
        a[..2].copy_from_slice(&one);
        a[2] = (-128i8) as u8;
        assert_eq!(vec_dot_q4_0_q8_0(&w, &a), -128.0);
    }
}
