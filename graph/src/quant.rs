//! What the bytes of each [`crate::DType`] mean: exact decoding to f32, the element and scale
//! accessors the kernels use, and the int8 activation math every backend shares. Layouts follow
//! ../shared/docs/format.md §2; every kernel must agree with these functions. The dtypes are
//! the graph's contract between frontends and backends, so their layouts live here; making
//! them (packing, quantizing weights) is a writer's job, in `gguf::quantize`.

use half::{bf16, f16};

/// Elements per I2_S group (one group is stored in 32 bytes).
pub const I2S_GROUP: usize = 128;

/// The 2-bit code (0, 1 or 2 meaning −1, 0, +1) of flat element `e` of an I2_S tensor.
///
/// Element `e` (row-major, `e = m·K + k`) lives in group `e / 128`; within the group
/// element `p` is in byte `p % 32` at bits `7-2·(p/32) .. 6-2·(p/32)` (most significant
/// pair first).
#[inline]
pub fn i2s_code(codes: &[u8], e: usize) -> u8 {
    let (g, p) = (e / I2S_GROUP, e % I2S_GROUP);
    let byte = codes[32 * g + (p % 32)];
    (byte >> (6 - 2 * (p / 32))) & 3
}

/// The per-tensor f32 scale of an I2_S tensor of `n` elements (stored at byte `n/4`).
/// Returns `None` if `data` is too short.
pub fn i2s_scale(data: &[u8], n: usize) -> Option<f32> {
    let b = data.get(n / 4..n / 4 + 4)?;
    Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The largest per-lane `Σ|q|` of a chunk of 32 I2_S groups for which no i16 lane of
/// `vec_dot_i2s_i8` can wrap, whatever the codes (`3 · 10922 ≤ 32767`).
///
/// Lane `j` of a chunk sums, over the chunk's groups and sub-blocks, `c[e]·q[e] +
/// c[e+1]·q[e+1]` (`e = 128g + 32s + 2j`) with codes `c ≤ 3`, so its magnitude is at most
/// `3 · A_j` with `A_j = Σ (|q[e]| + |q[e+1]|)`. If every `A_j` of every chunk is at most
/// this bound, each lane's exact sum is its wrapped sum, the scalar's `total` is the exact
/// integer `Σ c·q` (mod 2³²), and any exact i32 summation (VNNI, `sdot`, AMX) gives the same
/// i32. Tokens that fail the test must take a kernel that reproduces the i16 wrap.
pub const I2S_NO_WRAP_ABS_SUM: u16 = 10922;

/// The scale `s = f32(127 / m)` of the per-token int8 quantizer (`quantize_row_i8_s`, the
/// scalar `quantize_row_i8`), from a SIMD kernel's `max_i |x[i]|` (`Some`, any order: without
/// NaN every order gives the same maximum) or `None` when the row holds a NaN, for which
/// the maximum is redone with the scalar's sequential C `MAX` (`m = m > a ? m : a` from
/// `m = 1e-5`, where a NaN resets `m` to the next value).
pub fn i8_row_scale(abs_max: Option<f32>, x: &[f32]) -> f32 {
    let m = match abs_max {
        Some(a) => {
            let a = f64::from(a);
            if 0.00001f64 > a {
                0.00001f64
            } else {
                a
            }
        }
        None => {
            let mut m = 0.00001f64;
            for &v in x {
                let a = f64::from(v).abs();
                m = if m > a { m } else { a };
            }
            m
        }
    };
    (127.0f64 / m) as f32
}

/// The scalar `i2s_output` for a run of rows of one token:
/// `out[r] = f32( f32( f32(acc[r]) − f32(qsum) ) / s ) · scale`, left to right. Lane-wise
/// IEEE operations, so a vectorised loop gives the scalar's bits.
pub fn i2s_outputs(acc: &[i32], qsum: i32, s: f32, scale: f32, out: &mut [f32]) {
    let qs = qsum as f32;
    for (o, &a) in out.iter_mut().zip(acc) {
        let diff: f32 = a as f32 - qs;
        let unscaled: f32 = diff / s;
        *o = unscaled * scale;
    }
}

/// Ternary value of a code: `c − 1`; code 3 (never written) decodes to 0 as in ggml's
/// dequantizer.
#[inline]
pub fn ternary(c: u8) -> i8 {
    match c {
        0 => -1,
        2 => 1,
        _ => 0,
    }
}

/// Decodes an I2_S tensor with `n` elements into f32 (`(c − 1)·scale`).
pub fn decode_i2s(data: &[u8], n: usize, out: &mut [f32]) {
    let scale = i2s_scale(data, n).unwrap_or(0.0);
    for (e, o) in out.iter_mut().enumerate().take(n) {
        *o = f32::from(ternary(i2s_code(data, e))) * scale;
    }
}

/// Reads the f16 at byte offset `o`.
#[inline]
pub fn f16_at(b: &[u8], o: usize) -> f32 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
}

/// Decodes `out.len()` F16 values.
pub fn decode_f16(data: &[u8], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = f16_at(data, 2 * i);
    }
}

/// Decodes `out.len()` BF16 values (`bits << 16`).
pub fn decode_bf16(data: &[u8], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = bf16::from_le_bytes([data[2 * i], data[2 * i + 1]]).to_f32();
    }
}

/// Decodes `out.len()` F32 values.
pub fn decode_f32(data: &[u8], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let b = &data[4 * i..4 * i + 4];
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Decodes Q8_0 blocks (f16 `d`, 32 × i8 `q`): `x = f32(q)·f32(d)`.
pub fn decode_q8_0(data: &[u8], out: &mut [f32]) {
    for (b, chunk) in out.chunks_mut(32).enumerate() {
        let blk = &data[34 * b..34 * b + 34];
        let d = f16_at(blk, 0);
        for (j, o) in chunk.iter_mut().enumerate() {
            *o = f32::from(blk[2 + j] as i8) * d;
        }
    }
}

/// Decodes Q4_0 blocks (f16 `d`, 16 bytes): element j is `(qs[j] & 15) − 8`, element
/// j + 16 is `(qs[j] >> 4) − 8`, each times `d`.
pub fn decode_q4_0(data: &[u8], out: &mut [f32]) {
    for (b, chunk) in out.chunks_mut(32).enumerate() {
        let blk = &data[18 * b..18 * b + 18];
        let d = f16_at(blk, 0);
        for j in 0..16 {
            chunk[j] = f32::from((blk[2 + j] & 15) as i8 - 8) * d;
            chunk[j + 16] = f32::from((blk[2 + j] >> 4) as i8 - 8) * d;
        }
    }
}

/// Bytes per Q6_K block: `ql[128]`, `qh[64]`, `scales[16]` (i8), f16 `d`.
pub const Q6K_BLOCK_BYTES: usize = 210;

/// The 256 signed 6-bit values (`q − 32`, in −32..31) of a Q6_K block, in element order
/// (ggml `dequantize_row_q6_K`): per half `h` (128 elements; `ql[64h..]`, `qh[32h..]`) and
/// `l` in 0..32, element `128h + l` is the low nibble of `ql[l]`, `+32` the low nibble of
/// `ql[l + 32]`, `+64` the high nibble of `ql[l]`, `+96` the high nibble of `ql[l + 32]`;
/// their two high bits are bits 0-1, 2-3, 4-5 and 6-7 of `qh[l]`.
pub fn q6k_values(blk: &[u8]) -> [i8; 256] {
    let mut v = [0i8; 256];
    for h in 0..2 {
        let (ql, qh) = (&blk[64 * h..64 * h + 64], &blk[128 + 32 * h..128 + 32 * h + 32]);
        let y = &mut v[128 * h..128 * h + 128];
        for l in 0..32 {
            let hi = |s: u32| ((qh[l] >> s) & 3) << 4;
            y[l] = ((ql[l] & 0xF) | hi(0)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | hi(2)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | hi(4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | hi(6)) as i8 - 32;
        }
    }
    v
}

/// The scale of sub-block `j` (elements `16j..16j+16`) of a Q6_K block.
#[inline]
pub fn q6k_scale(blk: &[u8], j: usize) -> i8 {
    blk[192 + j] as i8
}

/// Decodes Q6_K blocks as ggml's `dequantize_row_q6_K`: `x = f32(f32(d)·sc)·q`, `d` from
/// f16, `sc` the element's sub-block scale, `q` from [`q6k_values`].
pub fn decode_q6_k(data: &[u8], out: &mut [f32]) {
    for (b, chunk) in out.chunks_mut(256).enumerate() {
        let blk = &data[Q6K_BLOCK_BYTES * b..Q6K_BLOCK_BYTES * (b + 1)];
        let d = f16_at(blk, 208);
        let q = q6k_values(blk);
        for (i, o) in chunk.iter_mut().enumerate() {
            let ds: f32 = d * f32::from(q6k_scale(blk, i / 16));
            *o = ds * f32::from(q[i]);
        }
    }
}

/// Code (0/1/2) of element `i` (0..256) of a TQ2_0 block's `qs[64]`: bytes 0..31 hold
/// elements 0..127, bytes 32..63 elements 128..255; element `32·l + m` of a half is in
/// byte m at bits `2l+1..2l` (least significant pair first).
#[inline]
pub fn tq2_code(qs: &[u8], i: usize) -> u8 {
    let (half, r) = (i / 128, i % 128);
    (qs[32 * half + r % 32] >> (2 * (r / 32))) & 3
}

/// Decodes TQ2_0 blocks (`qs[64]`, f16 `d`): `(c − 1)·d`.
pub fn decode_tq2_0(data: &[u8], out: &mut [f32]) {
    for (b, chunk) in out.chunks_mut(256).enumerate() {
        let blk = &data[66 * b..66 * b + 66];
        let d = f16_at(blk, 64);
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = f32::from(tq2_code(&blk[..64], i) as i8 - 1) * d;
        }
    }
}

/// Trit `n` (0 = most significant) of a base-3 packed TQ1_0 byte:
/// `(((B·3^n) mod 256)·3) >> 8`.
#[inline]
pub fn tq1_trit(byte: u8, n: u32) -> u8 {
    let pow = 3u16.pow(n);
    let v = (u16::from(byte) * pow) & 0xFF;
    ((v * 3) >> 8) as u8
}

/// Code (0/1/2) of element `i` (0..256) of a TQ1_0 block (`qs[48]`, `qh[4]`, `d`).
/// `qs[m]` (m < 32) trit n → element `32n + m`; `qs[32+m]` (m < 16) trit n →
/// `160 + 16n + m`; `qh[j]` trit n → `240 + 4n + j`.
#[inline]
pub fn tq1_code(blk: &[u8], i: usize) -> u8 {
    if i < 160 {
        tq1_trit(blk[i % 32], (i / 32) as u32)
    } else if i < 240 {
        let r = i - 160;
        tq1_trit(blk[32 + r % 16], (r / 16) as u32)
    } else {
        let r = i - 240;
        tq1_trit(blk[48 + r % 4], (r / 4) as u32)
    }
}

/// Decodes TQ1_0 blocks: `(c − 1)·d`.
pub fn decode_tq1_0(data: &[u8], out: &mut [f32]) {
    for (b, chunk) in out.chunks_mut(256).enumerate() {
        let blk = &data[54 * b..54 * b + 54];
        let d = f16_at(blk, 52);
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = f32::from(tq1_code(blk, i) as i8 - 1) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn q6k_layout_by_hand() {
        let mut blk = [0u8; Q6K_BLOCK_BYTES];
        blk[0] = 0x21; // ql[0]: element 0 low nibble 1, element 64 high nibble 2
        blk[128] = 0b11_10_01_00; // qh[0]: high bits of elements 0, 32, 64, 96 = 0, 1, 2, 3
        blk[160] = 0b01; // qh[32]: element 128 high bits 1
        blk[192] = 2; // scale of elements 0..16
        blk[196] = 0xFF; // scale −1 of elements 64..80
        blk[208..].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        let v = q6k_values(&blk);
        assert_eq!((v[0], v[32], v[64], v[96], v[128], v[1]), (1 - 32, 16 - 32, 2 + 32 - 32, 48 - 32, 16 - 32, -32));
        let mut out = [0.0f32; 256];
        decode_q6_k(&blk, &mut out);
        assert_eq!((out[0], out[64], out[16]), (0.5 * 2.0 * -31.0, -0.5 * 2.0, 0.0));
    }

    proptest! {
        #[test]
        fn q8_0_decode(qs in proptest::collection::vec(any::<i8>(), 32), d in -2.0f32..2.0) {
            let d16 = f16::from_f32(d);
            let mut blk = d16.to_le_bytes().to_vec();
            blk.extend(qs.iter().map(|&q| q as u8));
            let mut out = vec![0.0; 32];
            decode_q8_0(&blk, &mut out);
            for j in 0..32 {
                prop_assert_eq!(out[j], f32::from(qs[j]) * d16.to_f32());
            }
        }

        #[test]
        fn q4_0_decode(nib in proptest::collection::vec(0u8..16, 32), d in -2.0f32..2.0) {
            let d16 = f16::from_f32(d);
            let mut blk = d16.to_le_bytes().to_vec();
            blk.extend((0..16).map(|j| nib[j] | (nib[j + 16] << 4)));
            let mut out = vec![0.0; 32];
            decode_q4_0(&blk, &mut out);
            for j in 0..32 {
                prop_assert_eq!(out[j], f32::from(nib[j] as i8 - 8) * d16.to_f32());
            }
        }

        #[test]
        fn f16_bf16_decode(bits in any::<u16>()) {
            let mut o = [0.0f32];
            decode_f16(&bits.to_le_bytes(), &mut o);
            let h = f16::from_bits(bits).to_f32();
            prop_assert!(o[0] == h || (o[0].is_nan() && h.is_nan()));
            decode_bf16(&bits.to_le_bytes(), &mut o);
            let b = f32::from_bits(u32::from(bits) << 16);
            prop_assert!(o[0] == b || (o[0].is_nan() && b.is_nan()));
        }
    }
}
