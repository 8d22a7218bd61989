//! I2_S codec against the real files (../shared/docs/format.md §2.2): every I2_S tensor of the shared
//! models decodes to codes in {0, 1, 2} and re-packs, with the file's own scale and 28 trailer
//! bytes, to exactly the bytes in the file; decoded values are in {−s, 0, +s}. Plus a property
//! test through the writer and reader.

use gguf::quantize::pack_i2s;
use gguf::value::Value;
use gguf::writer::{write_gguf, TensorSpec};
use gguf::GgufFile;
use graph::quant::{i2s_code, i2s_scale};
use graph::DType;
use proptest::prelude::*;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models");
const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/tiny-i2_s.gguf");

/// Checks one I2_S tensor; returns its code histogram.
fn check_tensor(f: &GgufFile, name: &str) -> [usize; 3] {
    let t = f.tensor(name).unwrap();
    assert_eq!(t.dtype, DType::I2S);
    assert_eq!(t.ggml_type, 36);
    let data = f.tensor_data(t);
    let n = t.n_elements() as usize;
    assert_eq!(n % 128, 0, "{name}");
    assert_eq!(data.len(), n / 4 + 32, "{name}");

    let codes: Vec<u8> = (0..n).map(|e| i2s_code(data, e)).collect();
    let mut hist = [0usize; 3];
    for (e, &c) in codes.iter().enumerate() {
        assert!(c < 3, "{name}: code 3 at element {e}");
        hist[c as usize] += 1;
    }
    let scale = i2s_scale(data, n).unwrap();
    assert!(scale.is_finite() && scale > 0.0, "{name}: scale {scale}");
    assert_eq!(scale.to_le_bytes(), data[n / 4..n / 4 + 4], "{name}");

    let trailer: [u8; 28] = data[n / 4 + 4..].try_into().unwrap();
    let repacked = pack_i2s(&codes, scale, &trailer);
    if repacked != data {
        let i = repacked.iter().zip(data).position(|(a, b)| a != b).unwrap();
        panic!("{name}: re-packed bytes differ first at byte {i}: {:#04x} vs {:#04x}", repacked[i], data[i]);
    }

    let dec = gguf::types::decode_to_f32(t.dtype, data, n);
    assert_eq!(dec.len(), n);
    for (e, (&x, &c)) in dec.iter().zip(&codes).enumerate() {
        let want = match c {
            0 => -scale,
            1 => 0.0,
            _ => scale,
        };
        assert!(x == -scale || x == 0.0 || x == scale, "{name}[{e}] = {x}, scale {scale}");
        assert_eq!(x.to_bits(), want.to_bits(), "{name}[{e}]");
    }
    assert_eq!(f.tensor_f32(name).unwrap(), dec);
    hist
}

#[test]
fn tiny_i2s_tensors_repack_byte_exact() {
    let f = GgufFile::open(TINY).unwrap();
    let names: Vec<String> = f.tensors().iter().filter(|t| t.dtype == DType::I2S).map(|t| t.name.clone()).collect();
    assert_eq!(names.len(), 14);
    let mut trailers_nonzero = 0;
    for name in &names {
        let hist = check_tensor(&f, name);
        // Ternary weights: all three values occur.
        assert!(hist.iter().all(|&h| h > 0), "{name}: histogram {hist:?}");
        let t = f.tensor(name).unwrap();
        // README §2.2: s ≈ 1/sqrt(fan_in), fan_in = ne0.
        let s = i2s_scale(f.tensor_data(t), t.n_elements() as usize).unwrap();
        let expect = 1.0 / (t.ne[0] as f32).sqrt();
        assert!(s > expect / 4.0 && s < expect * 4.0, "{name}: scale {s}, expected about {expect}");
        let d = f.tensor_data(t);
        if d[d.len() - 28..].iter().any(|&b| b != 0) {
            trailers_nonzero += 1;
        }
    }
    // The trailer is not interpreted either way; just record what the file holds.
    eprintln!("{trailers_nonzero} of {} I2_S trailers are non-zero", names.len());
}

#[test]
fn every_shared_i2s_tensor_repacks_byte_exact() {
    let mut paths: Vec<_> = std::fs::read_dir(MODELS).unwrap().flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut checked = 0;
    for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "gguf")) {
        let f = GgufFile::open(p).unwrap();
        for t in f.tensors().iter().filter(|t| t.dtype == DType::I2S) {
            check_tensor(&f, &t.name);
            checked += 1;
        }
    }
    assert!(checked >= 14 * 3, "{checked} I2_S tensors");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random codes packed, written as an I2_S tensor, read back: same bytes, same codes, and
    /// values `(c − 1)·scale`.
    #[test]
    fn i2s_through_writer_and_reader(
        groups in 1usize..4,
        rows4 in 1usize..4,
        seed in any::<u64>(),
        scale in 1e-4f32..4.0,
        trailer in proptest::array::uniform28(any::<u8>()),
    ) {
        let (k, m) = (128 * groups, 4 * rows4);
        let mut x = seed | 1;
        let codes: Vec<u8> = (0..k * m)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 3) as u8
            })
            .collect();
        let packed = pack_i2s(&codes, scale, &trailer);
        let spec = TensorSpec { name: "w".into(), ne: vec![k as u64, m as u64], ggml_type: 36, nbytes: packed.len() as u64 };
        let mut bytes = Vec::new();
        write_gguf(&mut bytes, &[("general.architecture".into(), Value::String("bitnet-b1.58".into()))], &[(spec, &packed)], 32).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        let t = f.tensor("w").unwrap();
        prop_assert_eq!(t.shape(), vec![m, k]);
        let data = f.tensor_data(t);
        prop_assert_eq!(data, packed.as_slice());
        let n = k * m;
        prop_assert_eq!(i2s_scale(data, n), Some(scale));
        let dec = f.tensor_f32("w").unwrap();
        for (e, &c) in codes.iter().enumerate() {
            prop_assert_eq!(i2s_code(data, e), c);
            prop_assert_eq!(dec[e], f32::from(c as i8 - 1) * scale);
        }
        prop_assert_eq!(pack_i2s(&(0..n).map(|e| i2s_code(data, e)).collect::<Vec<_>>(), scale, &trailer), packed);
    }
}
