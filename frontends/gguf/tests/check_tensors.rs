//! `check_tensors` (llama.cpp's `--check-tensors`): the shared models are clean, and each kind
//! of corruption, patched into a copy of a shared model, is found and named with the tensor,
//! the element or block index and the value.

use std::path::{Path, PathBuf};

use gguf::check::{BadTensor, Problem, MAX_LISTED};
use gguf::value::Value;
use gguf::writer::{write_gguf, TensorSpec};
use gguf::{check_tensors, GgufFile};
use graph::DType;
use half::{bf16, f16};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models");

/// The Q6_K-embedding model, which sits outside `models/` (relative to it).
const Q6K_MODEL: &str = "../models-q6k/tiny-i2_s-q6k.gguf";

fn model(name: &str) -> PathBuf {
    Path::new(MODELS).join(name)
}

#[test]
fn shared_models_are_clean() {
    let names =
        ["tiny-i2_s.gguf", "b1-spm-i2_s.gguf", "llama-tern-i2_s.gguf", "b158-spm-tq1_0.gguf", "b158-spm-tq2_0.gguf", Q6K_MODEL];
    for name in names {
        let f = GgufFile::open(model(name)).unwrap();
        let r = check_tensors(&f).unwrap();
        assert!(r.is_ok(), "{name}: {r}");
        assert_eq!(r.tensors, f.tensors().len());
        assert_eq!(r.bytes, f.tensors().iter().map(|t| t.nbytes).sum::<u64>());
    }
}

/// A copy of shared model `name` with `bytes` written at `offset` bytes into tensor `tensor`'s
/// data (the copy lives in a temp file that is removed once opened: the map keeps it).
fn patched(name: &str, tensor: &str, offset: u64, bytes: &[u8]) -> GgufFile {
    let t = GgufFile::open(model(name)).unwrap().tensor(tensor).unwrap().clone();
    let mut data = std::fs::read(model(name)).unwrap();
    assert!(offset + bytes.len() as u64 <= t.nbytes);
    let at = (t.abs_offset + offset) as usize;
    data[at..at + bytes.len()].copy_from_slice(bytes);
    let path = std::env::temp_dir().join(format!("gguf-check-{}-{tensor}-{offset}.gguf", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let f = GgufFile::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

/// The single bad tensor `check_tensors` reports.
fn only_bad(f: &GgufFile) -> BadTensor {
    let r = check_tensors(f).unwrap();
    assert_eq!(r.bad.len(), 1, "{r}");
    assert_eq!(r.tensors, f.tensors().len());
    r.bad[0].clone()
}

fn assert_one(f: &GgufFile, tensor: &str, dtype: DType, p: Problem, text: &str) {
    let b = only_bad(f);
    assert_eq!((b.name.as_str(), b.dtype, b.count), (tensor, dtype, 1), "{b}");
    // NaN != NaN: compare the rendering, which names the index and the value.
    assert_eq!(format!("{:?}", b.first), format!("{:?}", vec![p]));
    assert_eq!(b.to_string(), format!("tensor `{tensor}` ({dtype}): 1 problem: {text}"));
}

#[test]
fn non_finite_f32_f16_and_bf16_values() {
    let f = patched("tiny-i2_s.gguf", "output_norm.weight", 17 * 4, &f32::NAN.to_le_bytes());
    let p = Problem::NonFiniteValue { element: 17, value: f32::NAN };
    assert_one(&f, "output_norm.weight", DType::F32, p, "element 17 is NaN");

    let f = patched("b1-spm-i2_s.gguf", "blk.0.attn_norm.weight", 0, &f32::NEG_INFINITY.to_le_bytes());
    let p = Problem::NonFiniteValue { element: 0, value: f32::NEG_INFINITY };
    assert_one(&f, "blk.0.attn_norm.weight", DType::F32, p, "element 0 is -inf");

    // The tiny model's F16 embedding: row 1000, column 3.
    let e = 1000 * 256 + 3;
    let f = patched("tiny-i2_s.gguf", "token_embd.weight", e * 2, &f16::INFINITY.to_le_bytes());
    let p = Problem::NonFiniteValue { element: e, value: f32::INFINITY };
    assert_one(&f, "token_embd.weight", DType::F16, p, &format!("element {e} is inf"));

    // No shared model has a BF16 tensor: a written one.
    let vals: Vec<u8> =
        [1.0f32, -2.0, f32::NAN, 4.0, f32::INFINITY].iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
    let spec = TensorSpec { name: "w".into(), ne: vec![5], ggml_type: 30, nbytes: 10 };
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &[("general.name".into(), Value::String("bf16".into()))], &[(spec, &vals)], 32).unwrap();
    let b = only_bad(&GgufFile::from_bytes(bytes).unwrap());
    assert_eq!((b.dtype, b.count), (DType::BF16, 2));
    assert_eq!(b.to_string(), "tensor `w` (bf16): 2 problems: element 2 is NaN, element 4 is inf");
}

#[test]
fn i2s_code_3_and_bad_scales() {
    // Byte 32·2 + 5 holds elements 256 + 5 + 32j at bits 7-6, 5-4, 3-2, 1-0 (../shared/docs/format.md
    // §2.2): 0b11_01_01_01 makes element 261 code 3 and the others 0 (code 1).
    let t = "blk.0.attn_q.weight";
    let f = patched("b1-spm-i2_s.gguf", t, 32 * 2 + 5, &[0b1101_0101]);
    assert_one(&f, t, DType::I2S, Problem::InvalidCode { element: 261, code: 3 }, "element 261 has code 3");
    // The last pair of the same byte: element 261 + 96.
    let f = patched("b1-spm-i2_s.gguf", t, 32 * 2 + 5, &[0b0101_0111]);
    assert_one(&f, t, DType::I2S, Problem::InvalidCode { element: 357, code: 3 }, "element 357 has code 3");

    // The scale sits after the n/4 code bytes.
    let t = "blk.1.ffn_down.weight";
    let n = 128 * 384 / 4;
    let f = patched("b1-spm-i2_s.gguf", t, n, &0.0f32.to_le_bytes());
    assert_one(&f, t, DType::I2S, Problem::BadScale { block: None, value: 0.0 }, "scale is 0");
    let f = patched("b1-spm-i2_s.gguf", t, n, &f32::NAN.to_le_bytes());
    assert_one(&f, t, DType::I2S, Problem::BadScale { block: None, value: f32::NAN }, "scale is NaN");
    // The 28 trailer bytes after the scale are never read.
    let f = patched("b1-spm-i2_s.gguf", t, n + 4, &[0xff; 28]);
    assert!(check_tensors(&f).unwrap().is_ok());
}

#[test]
fn block_scales_and_tq2_codes() {
    // Q6_K: 210-byte blocks, f16 d last.
    let p = Problem::BadScale { block: Some(3), value: f32::NEG_INFINITY };
    let f = patched(Q6K_MODEL, "token_embd.weight", 3 * 210 + 208, &half::f16::NEG_INFINITY.to_le_bytes());
    assert_one(&f, "token_embd.weight", DType::Q6K, p, "scale of block 3 is -inf");
    // Q8_0: 34-byte blocks, f16 d first.
    let f = patched("b1-spm-i2_s.gguf", "token_embd.weight", 7 * 34, &f16::INFINITY.to_le_bytes());
    let p = Problem::BadScale { block: Some(7), value: f32::INFINITY };
    assert_one(&f, "token_embd.weight", DType::Q8_0, p, "scale of block 7 is inf");
    // Q4_0: 18-byte blocks, f16 d first.
    let f = patched("b158-spm-tq1_0.gguf", "token_embd.weight", 3 * 18, &f16::NAN.to_le_bytes());
    let p = Problem::BadScale { block: Some(3), value: f32::NAN };
    assert_one(&f, "token_embd.weight", DType::Q4_0, p, "scale of block 3 is NaN");
    // TQ1_0: 54-byte blocks, d last.
    let t = "blk.0.ffn_up.weight";
    let f = patched("b158-spm-tq1_0.gguf", t, 54 + 52, &f16::NEG_INFINITY.to_le_bytes());
    let p = Problem::BadScale { block: Some(1), value: f32::NEG_INFINITY };
    assert_one(&f, t, DType::TQ1_0, p, "scale of block 1 is -inf");
    // TQ2_0: 66-byte blocks, qs[64] then d; byte 33 of block 2 holds elements 128 + 1 + 32l at
    // bits 2l+1..2l (../shared/docs/format.md §2.3): 0b01_11_01_01 makes element 128 + 1 + 64 code 3.
    let f = patched("b158-spm-tq2_0.gguf", t, 2 * 66 + 64, &f16::NAN.to_le_bytes());
    let p = Problem::BadScale { block: Some(2), value: f32::NAN };
    assert_one(&f, t, DType::TQ2_0, p, "scale of block 2 is NaN");
    let f = patched("b158-spm-tq2_0.gguf", t, 2 * 66 + 33, &[0b0111_0101]);
    let e = 2 * 256 + 128 + 1 + 64;
    assert_one(&f, t, DType::TQ2_0, Problem::InvalidCode { element: e, code: 3 }, &format!("element {e} has code 3"));
}

#[test]
fn every_problem_is_counted_and_the_first_are_listed() {
    let nan = f32::NAN.to_le_bytes();
    let all: Vec<u8> = (0..256).flat_map(|_| nan).collect();
    let f = patched("tiny-i2_s.gguf", "output_norm.weight", 0, &all);
    let b = only_bad(&f);
    assert_eq!(b.count, 256);
    assert_eq!(b.first.len(), MAX_LISTED);
    assert_eq!(
        b.to_string(),
        "tensor `output_norm.weight` (f32): 256 problems: element 0 is NaN, element 1 is NaN, element 2 is NaN, element 3 is NaN, …"
    );
    // Two bad tensors come in file order, and the report's text lists both.
    let g = GgufFile::open(model("tiny-i2_s.gguf")).unwrap();
    let mut data = std::fs::read(model("tiny-i2_s.gguf")).unwrap();
    for name in ["output_norm.weight", "blk.0.attn_norm.weight"] {
        let t = g.tensor(name).unwrap();
        data[t.abs_offset as usize..t.abs_offset as usize + 4].copy_from_slice(&nan);
    }
    let r = check_tensors(&GgufFile::from_bytes(data).unwrap()).unwrap();
    let names: Vec<&str> = r.bad.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["blk.0.attn_norm.weight", "output_norm.weight"]);
    assert!(
        r.to_string().starts_with(&format!(
            "check-tensors: 24 tensors ({} bytes) checked, 2 with problems\n  tensor `blk.0.attn_norm.weight`",
            r.bytes
        )),
        "{r}"
    );
}
