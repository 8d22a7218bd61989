//! Encoders of the weight formats: the packers `synth`, the seeds and the tests use, and the
//! weight quantizers llama-quantize applies (Q8_0 and Q6_K heads, made at load time for
//! `--lm-head q8|q6k`). The layouts they write are defined, with their decoders, in
//! `graph::quant` (../shared/docs/format.md §2); the round-trip tests below tie the two.

use graph::quant::{I2S_GROUP, Q6K_BLOCK_BYTES};
use half::f16;

/// Packs ternary codes (0/1/2, row-major, `codes.len()` a multiple of 128) into I2_S
/// bytes: codes, then the f32 scale, then `trailer` (28 bytes; bitnet.cpp leaves buffer
/// garbage there, which readers must ignore).
pub fn pack_i2s(codes: &[u8], scale: f32, trailer: &[u8; 28]) -> Vec<u8> {
    let n = codes.len();
    assert!(n.is_multiple_of(I2S_GROUP), "I2_S element count must be a multiple of 128");
    let mut out = vec![0u8; n / 4 + 32];
    for (e, &c) in codes.iter().enumerate() {
        let (g, p) = (e / I2S_GROUP, e % I2S_GROUP);
        out[32 * g + (p % 32)] |= (c & 3) << (6 - 2 * (p / 32));
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    out[n / 4 + 4..].copy_from_slice(trailer);
    out
}

/// Quantizes a row to Q8_0 as llama-quantize does for weights (`quantize_row_q8_0_ref`):
/// per block of 32, `d = amax/127` stored as f16, `q = round_half_away(x / d)` with the
/// f32 reciprocal (../shared/docs/format.md §4.6.2, "weight quantizer").
pub fn quantize_q8_0_weights(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks(32) {
        let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
}

/// ggml's `nearest_int`: round half to even through the `1.5·2²³` trick (|v| < 2²²).
#[inline]
pub fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qx_quants(16, 32, x, L, 1, NULL)` for one 16-element sub-block: the scale
/// and the codes `L` (0..63) that minimise the x²-weighted error over 19 trial scales.
/// Every `acc + a·b` is one fused multiply-add, as clang contracts them.
fn make_qx_quants_q6(x: &[f32], l_out: &mut [i8]) -> f32 {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l_out.fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1) as f32;
            let w = v * v;
            sumlx = (w * v).mul_add(l, sumlx);
            suml2 = (w * l).mul_add(l, suml2);
        }
        (sumlx, suml2)
    };
    let codes = |iscale: f32, l_out: &mut [i8]| {
        for (o, &v) in l_out.iter_mut().zip(x) {
            *o = (nearest_int(iscale * v).clamp(-NMAX, NMAX - 1) + NMAX) as i8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    codes(iscale, l_out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&i| i != 0) {
        let iscale = -0.1f32.mul_add(is as f32, NMAX as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            codes(iscale, l_out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes a row (a multiple of 256 long) to Q6_K blocks as llama-quantize does without an
/// importance matrix (ggml's `quantize_row_q6_K_ref`): per sub-block of 16 a scale from
/// [`make_qx_quants_q6`]; the scale of largest magnitude `m` gives `iscale = −128/m` and
/// `d = f16(1/iscale)`; sub-block scales `min(127, nearest_int(iscale·s))`; each value then
/// `clamp(nearest_int(x/(f32(d)·sc)), −32, 31) + 32` (sub-blocks whose `f32(d)·sc` is 0 keep
/// the codes of their scale search). A block whose scales are all below 1e-15 is all zero.
pub fn quantize_q6_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(x.len().is_multiple_of(256), "quantize_q6_k: length {} is not a multiple of 256", x.len());
    for xb in x.chunks_exact(256) {
        let mut l = [0i8; 256];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            *s = make_qx_quants_q6(&xb[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            if s.abs() > max_abs {
                max_abs = s.abs();
                max_scale = *s;
            }
        }
        let mut blk = [0u8; Q6K_BLOCK_BYTES];
        if max_abs >= 1e-15 {
            let iscale = -128.0f32 / max_scale;
            let d = f16::from_f32(1.0 / iscale);
            blk[208..].copy_from_slice(&d.to_le_bytes());
            for (ib, &s) in scales.iter().enumerate() {
                let sc = nearest_int(iscale * s).min(127) as i8;
                blk[192 + ib] = sc as u8;
                let dd = d.to_f32() * f32::from(sc);
                if dd == 0.0 {
                    continue;
                }
                for (o, &v) in l[16 * ib..16 * ib + 16].iter_mut().zip(&xb[16 * ib..16 * ib + 16]) {
                    *o = (nearest_int(v / dd).clamp(-32, 31) + 32) as i8;
                }
            }
            for h in 0..2 {
                let lh = &l[128 * h..128 * h + 128];
                for j in 0..32 {
                    let q = |k: usize| lh[j + 32 * k] as u8;
                    blk[64 * h + j] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
                    blk[64 * h + j + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
                    blk[128 + 32 * h + j] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
                }
            }
        }
        out.extend_from_slice(&blk);
    }
}

/// Packs 256 codes (0/1/2) and a scale into one TQ2_0 block.
pub fn pack_tq2_0(codes: &[u8], d: f16) -> [u8; 66] {
    let mut blk = [0u8; 66];
    for (i, &c) in codes.iter().enumerate().take(256) {
        let (half, r) = (i / 128, i % 128);
        blk[32 * half + r % 32] |= (c & 3) << (2 * (r / 32));
    }
    blk[64..66].copy_from_slice(&d.to_le_bytes());
    blk
}

/// Packs 256 codes (0/1/2) and a scale into one TQ1_0 block, as ggml's
/// `quantize_row_tq1_0_ref` does (`ceil(256·v/243)` per byte).
pub fn pack_tq1_0(codes: &[u8], d: f16) -> [u8; 54] {
    let mut blk = [0u8; 54];
    let enc = |trits: &mut dyn Iterator<Item = u8>, extra_shift: bool| -> u8 {
        let mut q: u16 = 0;
        for t in trits {
            q = q * 3 + u16::from(t);
        }
        if extra_shift {
            q *= 3;
        }
        (q * 256).div_ceil(243) as u8
    };
    for m in 0..32 {
        blk[m] = enc(&mut (0..5).map(|n| codes[32 * n + m]), false);
    }
    for m in 0..16 {
        blk[32 + m] = enc(&mut (0..5).map(|n| codes[160 + 16 * n + m]), false);
    }
    for j in 0..4 {
        blk[48 + j] = enc(&mut (0..4).map(|n| codes[240 + 4 * n + j]), true);
    }
    blk[52..54].copy_from_slice(&d.to_le_bytes());
    blk
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::quant::*;
    use proptest::prelude::*;

    fn codes_strategy(n: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..3, n)
    }

    #[test]
    fn i2s_layout_by_hand() {
        // Element p of a group is in byte p % 32, most significant pair first.
        let mut codes = vec![1u8; 128];
        codes[0] = 2; // byte 0 bits 7-6
        codes[32] = 0; // byte 0 bits 5-4
        codes[97] = 2; // byte 1 bits 1-0
        let packed = pack_i2s(&codes, 0.5, &[0xAB; 28]);
        assert_eq!(packed.len(), 64);
        assert_eq!(packed[0], 0b10_00_01_01);
        assert_eq!(packed[1], 0b01_01_01_10);
        let mut out = vec![0.0; 128];
        decode_i2s(&packed, 128, &mut out);
        assert_eq!(out[0], 0.5);
        assert_eq!(out[32], -0.5);
        assert_eq!(out[97], 0.5);
        assert_eq!(out[1], 0.0);
    }

    proptest! {
        #[test]
        fn i2s_roundtrip(groups in 1usize..5, seed in any::<u64>()) {
            let n = groups * 128;
            let codes: Vec<u8> = (0..n).map(|i| ((seed >> (i % 61)) as u8 ^ i as u8) % 3).collect();
            let packed = pack_i2s(&codes, 1.25, &[7; 28]);
            for (e, &c) in codes.iter().enumerate() {
                prop_assert_eq!(i2s_code(&packed, e), c);
            }
            prop_assert_eq!(i2s_scale(&packed, n), Some(1.25));
        }

        #[test]
        fn tq2_roundtrip(codes in codes_strategy(256), d in -4.0f32..4.0) {
            let d16 = f16::from_f32(d);
            let blk = pack_tq2_0(&codes, d16);
            let mut out = vec![0.0; 256];
            decode_tq2_0(&blk, &mut out);
            for i in 0..256 {
                prop_assert_eq!(tq2_code(&blk, i), codes[i]);
                prop_assert_eq!(out[i], f32::from(codes[i] as i8 - 1) * d16.to_f32());
            }
        }

        #[test]
        fn tq1_roundtrip(codes in codes_strategy(256), d in -4.0f32..4.0) {
            let d16 = f16::from_f32(d);
            let blk = pack_tq1_0(&codes, d16);
            let mut out = vec![0.0; 256];
            decode_tq1_0(&blk, &mut out);
            for i in 0..256 {
                prop_assert_eq!(tq1_code(&blk, i), codes[i]);
                prop_assert_eq!(out[i], f32::from(codes[i] as i8 - 1) * d16.to_f32());
            }
        }
    }
}
