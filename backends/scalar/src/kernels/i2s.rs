//! I2_S matrix-vector product: the per-token int8 activation quantizer and the integer
//! dot product of bitnet.cpp's AVX2 kernel (BitNet `src/ggml-bitnet-mad.cpp`),
//! ../shared/docs/format.md §2.2 and §4.2.
//!
//! A full product `y = I2S(W, x)` for one token is
//!
//! ```text
//! let (s, qsum) = quantize_row_i8(x, &mut q);
//! for each row r: y[r] = i2s_output(vec_dot_i2s_i8(row_r_codes, &q), qsum, s, scale_W);
//! ```

use graph::quant::I2S_GROUP;

/// Bytes of one 128-element I2_S group.
const GROUP_BYTES: usize = I2S_GROUP / 4;

/// Groups accumulated in 16-bit lanes before they are widened to i32.
const GROUPS_PER_CHUNK: usize = 32;

/// Per-token int8 quantization of an I2_S input row (bitnet.cpp `quantize_row_i8_s`).
///
/// ```text
/// m    = max(1e-5, max_i |x[i]|)                  # f64 (exact for f32 inputs), 1e-5 as f64
/// s    = f32(127.0 / m)                           # f64 division, rounded to f32
/// q[i] = clamp(rne(f32(x[i]·s)), −128, 127)       # f32 product, round half to even
/// ```
///
/// Returns `(s, Σ q[i])`, the sum taken exactly in i32. The maximum uses C's
/// `MAX(a, b) = a > b ? a : b`, so a NaN input poisons `m` as it does in bitnet.cpp; a NaN
/// product quantizes to 0.
///
/// # Panics
/// If `q` does not have the length of `x`.
pub fn quantize_row_i8(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert_eq!(q.len(), x.len(), "quantize_row_i8: output length");
    let mut m = 0.00001f64;
    for &v in x {
        let a = f64::from(v).abs();
        m = if m > a { m } else { a };
    }
    let s = (127.0f64 / m) as f32;
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        let p: f32 = v * s;
        let r = p.round_ties_even().clamp(-128.0, 127.0);
        // `as` saturates and maps NaN to 0; after the clamp the value is an exact integer.
        *qi = r as i8;
        sum += i32::from(*qi);
    }
    (s, sum)
}

/// `Σ_k c[k]·q[k]` over one I2_S row, exactly as bitnet.cpp's AVX2 kernel computes it.
///
/// `codes` is one row of packed I2_S bytes: `K/4` bytes for `K = q.len()`, a multiple of
/// 128. Element `p` of each 128-element group is in byte `p % 32` of the group's 32 bytes,
/// at bits `6−2·(p/32) + 1 .. 6−2·(p/32)`; the code `c` is used as an unsigned integer
/// (0, 1, 2; a never-written code 3 counts as 3, as in the kernel).
///
/// Summation (the 16-bit lane caveat of ../shared/docs/format.md §4.2):
///
/// ```text
/// total = 0 (i32)
/// for each chunk of up to 32 consecutive groups (the last chunk may be shorter):
///     lane[0..16] = 0 (i16)
///     for each group g of the chunk, for s in 0..4, for j in 0..16:
///         pair = c[e]·q[e] + c[e+1]·q[e+1]   with e = 128g + 32s + 2j    # maddubs, i16 saturating
///         lane[j] = lane[j] + pair                                     # i16, WRAPPING
///     total += Σ_j i32(lane[j])                                        # widened per chunk
/// ```
///
/// `pair` never saturates (`|pair| ≤ 2·3·128`). The result equals the exact integer sum
/// unless a lane's chunk total leaves the i16 range, in which case that lane contributes
/// its total modulo 2¹⁶ (signed), exactly as the reference does. The final i32 additions
/// wrap, as in the kernel (unreachable for real rows).
///
/// # Panics
/// If `K` is not a multiple of 128 or `codes.len() != K/4`.
pub fn vec_dot_i2s_i8(codes: &[u8], q: &[i8]) -> i32 {
    let k = q.len();
    assert!(k.is_multiple_of(I2S_GROUP), "vec_dot_i2s_i8: K = {k} is not a multiple of {I2S_GROUP}");
    assert_eq!(codes.len(), k / 4, "vec_dot_i2s_i8: a row of K = {k} has K/4 code bytes");
    let n_groups = k / I2S_GROUP;
    let mut total = 0i32;
    let mut chunk_start = 0;
    while chunk_start < n_groups {
        let chunk_end = (chunk_start + GROUPS_PER_CHUNK).min(n_groups);
        let mut lanes = [0i16; 16];
        for g in chunk_start..chunk_end {
            let bytes = &codes[g * GROUP_BYTES..(g + 1) * GROUP_BYTES];
            let qg = &q[g * I2S_GROUP..(g + 1) * I2S_GROUP];
            for s in 0..4 {
                let shift = 6 - 2 * s;
                let qs = &qg[32 * s..32 * s + 32];
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let (b0, b1) = (2 * j, 2 * j + 1);
                    let c0 = i16::from((bytes[b0] >> shift) & 3);
                    let c1 = i16::from((bytes[b1] >> shift) & 3);
                    let pair = (c0 * i16::from(qs[b0])).saturating_add(c1 * i16::from(qs[b1]));
                    *lane = lane.wrapping_add(pair);
                }
            }
        }
        for &lane in &lanes {
            total = total.wrapping_add(i32::from(lane));
        }
        chunk_start = chunk_end;
    }
    total
}

/// The output of one I2_S row: `f32( f32( f32(acc) − f32(qsum) ) / s ) · scale`.
///
/// Evaluated left to right in f32: both integers are converted to f32 (round to nearest
/// even), subtracted, divided by the activation scale `s`, then multiplied by the tensor's
/// weight scale. `acc` is [`vec_dot_i2s_i8`], `(s, qsum)` come from [`quantize_row_i8`].
pub fn i2s_output(acc: i32, qsum: i32, s: f32, scale: f32) -> f32 {
    let diff: f32 = acc as f32 - qsum as f32;
    let unscaled: f32 = diff / s;
    unscaled * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::quantize::pack_i2s;
    use graph::quant::i2s_code;
    use graph::rng::Rng;

    fn exact_dot(codes: &[u8], q: &[i8]) -> i64 {
        (0..q.len()).map(|e| i64::from(i2s_code(codes, e)) * i64::from(q[e])).sum()
    }

    #[test]
    fn quantize_ties_round_to_even() {
        // max |x| = 127 gives s = 1 exactly, so q = rne(x).
        let x = [127.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999998, -127.0];
        let mut q = [0i8; 9];
        let (s, sum) = quantize_row_i8(&x, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, 0, 2, 2, 0, -2, -2, 3, -127]);
        assert_eq!(sum, q.iter().map(|&v| i32::from(v)).sum::<i32>());
    }

    #[test]
    fn quantize_floor_and_scale() {
        // All-zero row: m = 1e-5, s = f32(127/1e-5), every q = 0.
        let mut q = [5i8; 4];
        let (s, sum) = quantize_row_i8(&[0.0; 4], &mut q);
        assert_eq!(s, (127.0f64 / 0.00001f64) as f32);
        assert_eq!((q, sum), ([0; 4], 0));
        // Scale is computed in f64 then rounded.
        let x = [0.3f32, -0.1];
        let (s, _) = quantize_row_i8(&x, &mut [0; 2]);
        assert_eq!(s.to_bits(), ((127.0f64 / f64::from(0.3f32)) as f32).to_bits());
    }

    #[test]
    fn dot_matches_exact_sum_on_random_rows() {
        let mut rng = Rng::new(42);
        for &k in &[128usize, 256, 640, 4096, 6912] {
            let codes: Vec<u8> = (0..k).map(|_| rng.below(3) as u8).collect();
            let packed = pack_i2s(&codes, 1.0, &[0; 28]);
            let q: Vec<i8> = (0..k).map(|_| rng.below(256) as u8 as i8).collect();
            let row = &packed[..k / 4];
            assert_eq!(i64::from(vec_dot_i2s_i8(row, &q)), exact_dot(row, &q), "K = {k}");
        }
    }

    #[test]
    fn lane_wrap_differs_from_exact_sum() {
        // K = 33 groups, all codes 2, all q = 127. Chunk 1 (32 groups): each of the 16 lanes
        // sums 32·8 products of 254 = 65024, which wraps to −512; chunk 2 (1 group): each
        // lane gets 8·254 = 2032. Total 16·(−512) + 16·2032 = 24320; the exact sum is
        // 4224·254 = 1072896.
        let k = 33 * 128;
        let packed = pack_i2s(&vec![2u8; k], 1.0, &[0; 28]);
        let q = vec![127i8; k];
        let row = &packed[..k / 4];
        assert_eq!(exact_dot(row, &q), 1_072_896);
        assert_eq!(vec_dot_i2s_i8(row, &q), 24_320);
        // One whole chunk only.
        let k = 32 * 128;
        let packed = pack_i2s(&vec![2u8; k], 1.0, &[0; 28]);
        assert_eq!(vec_dot_i2s_i8(&packed[..k / 4], &q[..k]), -8192);
    }

    #[test]
    fn lane_assignment_is_pairs_of_adjacent_bytes() {
        // Overflow only lane 0 (elements 0, 1, 32, 33, 64, 65, 96, 97 of each group) and
        // leave the others below the limit: lane 0 wraps, lane 1 (elements 2, 3, …) does not.
        let k = 32 * 128;
        let mut codes = vec![1u8; k];
        let mut q = vec![0i8; k];
        for g in 0..32 {
            for s in 0..4 {
                for b in 0..4 {
                    let e = 128 * g + 32 * s + b;
                    codes[e] = 2;
                    q[e] = if b < 2 { 127 } else { 60 };
                }
            }
        }
        let packed = pack_i2s(&codes, 1.0, &[0; 28]);
        let row = &packed[..k / 4];
        // Lane 0: 256·254 = 65024 → −512. Lane 1: 256·120 = 30720 (fits).
        // Other lanes hold code 1 × q 0 = 0.
        assert_eq!(vec_dot_i2s_i8(row, &q), -512 + 30720);
        assert_eq!(exact_dot(row, &q), 65024 + 30720);
    }

    #[test]
    fn output_order() {
        let (acc, qsum, s, scale) = (1234, -77, 3.3f32, 0.0625f32);
        let want = (((acc as f32) - (qsum as f32)) / s) * scale;
        assert_eq!(i2s_output(acc, qsum, s, scale).to_bits(), want.to_bits());
    }
}
