//! Reader round trips: every metadata kind written by `gguf::writer` reads back equal,
//! version 2, `general.alignment`, zero-copy tensor views, the shared models (../shared/docs/format.md §1,
//! shared/reference/README.md §2.2), and a proptest over random small files.

use std::collections::BTreeMap;

use gguf::value::{Array, Value};
use gguf::writer::{write_gguf, write_header, TensorSpec};
use gguf::{ErrorKind, GgufFile};
use graph::DType;
use proptest::prelude::*;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models");
const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/tiny-i2_s.gguf");

fn kv(k: &str, v: Value) -> (String, Value) {
    (k.to_string(), v)
}

fn spec(name: &str, ne: &[u64], dtype: DType) -> TensorSpec {
    let rows = ne[1..].iter().product::<u64>() as usize;
    TensorSpec {
        name: name.into(),
        ne: ne.to_vec(),
        ggml_type: gguf::types::ggml_from_dtype(dtype).unwrap(),
        nbytes: dtype.nbytes(ne[0] as usize, rows).unwrap() as u64,
    }
}

/// Deterministic filler bytes.
fn filler(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn write(metadata: &[(String, Value)], tensors: &[(TensorSpec, Vec<u8>)], alignment: u64) -> Vec<u8> {
    let refs: Vec<(TensorSpec, &[u8])> = tensors.iter().map(|(s, d)| (s.clone(), d.as_slice())).collect();
    let mut out = Vec::new();
    write_gguf(&mut out, metadata, &refs, alignment).unwrap();
    out
}

/// One value of every scalar kind (with edge values), arrays of every kind, nested arrays and
/// empty arrays and strings.
fn every_kind() -> Vec<(String, Value)> {
    vec![
        kv("u8.min", Value::U8(0)),
        kv("u8.max", Value::U8(u8::MAX)),
        kv("i8.min", Value::I8(i8::MIN)),
        kv("i8.max", Value::I8(i8::MAX)),
        kv("u16", Value::U16(u16::MAX)),
        kv("i16", Value::I16(i16::MIN)),
        kv("u32", Value::U32(u32::MAX)),
        kv("i32", Value::I32(i32::MIN)),
        kv("f32", Value::F32(1e-5)),
        kv("f32.neg_zero", Value::F32(-0.0)),
        kv("f32.inf", Value::F32(f32::NEG_INFINITY)),
        kv("f32.subnormal", Value::F32(f32::from_bits(1))),
        kv("bool.true", Value::Bool(true)),
        kv("bool.false", Value::Bool(false)),
        kv("string", Value::String("bitnet-b1.58 ✓ Ġ\u{0}\n".into())),
        kv("string.empty", Value::String(String::new())),
        kv("u64", Value::U64(u64::MAX)),
        kv("i64", Value::I64(i64::MIN)),
        kv("f64", Value::F64(std::f64::consts::PI)),
        kv("f64.max", Value::F64(f64::MAX)),
        kv("arr.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        kv("arr.i8", Value::Array(Array::I8(vec![-128, 0, 127]))),
        kv("arr.u16", Value::Array(Array::U16(vec![0, 65535]))),
        kv("arr.i16", Value::Array(Array::I16(vec![-32768, 32767]))),
        kv("arr.u32", Value::Array(Array::U32(vec![0, 7, u32::MAX]))),
        kv("arr.i32", Value::Array(Array::I32(vec![1, 3, -1]))),
        kv("arr.f32", Value::Array(Array::F32(vec![0.0, -1.5, 3.25e38]))),
        kv("arr.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        kv("arr.string", Value::Array(Array::String(vec!["!".into(), "".into(), "Ġ Ġ".into(), "日本".into()]))),
        kv("arr.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        kv("arr.i64", Value::Array(Array::I64(vec![i64::MIN, i64::MAX]))),
        kv("arr.f64", Value::Array(Array::F64(vec![-0.5, 1e300]))),
        kv(
            "arr.nested",
            Value::Array(Array::Array(vec![
                Array::U8(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::I64(vec![-1]), Array::Bool(vec![])]),
                Array::F32(vec![]),
            ])),
        ),
        kv("arr.empty.u8", Value::Array(Array::U8(vec![]))),
        kv("arr.empty.string", Value::Array(Array::String(vec![]))),
        kv("arr.empty.array", Value::Array(Array::Array(vec![]))),
        kv("", Value::String("empty key".into())),
    ]
}

fn small_tensors() -> Vec<(TensorSpec, Vec<u8>)> {
    let t = |name: &str, ne: &[u64], d: DType, seed: u8| {
        let s = spec(name, ne, d);
        let data = filler(s.nbytes as usize, seed);
        (s, data)
    };
    vec![
        t("norm.weight", &[8], DType::F32, 1),
        t("blk.0.attn_q.weight", &[128, 4], DType::I2S, 2),
        t("token_embd.weight", &[8, 3], DType::F16, 3),
        t("q8.weight", &[32, 2, 1], DType::Q8_0, 4),
        t("tq2.weight", &[256, 1, 1, 2], DType::TQ2_0, 5),
    ]
}

fn check_tensors(f: &GgufFile, tensors: &[(TensorSpec, Vec<u8>)]) {
    assert_eq!(f.tensors().len(), tensors.len());
    for ((s, data), t) in tensors.iter().zip(f.tensors()) {
        assert_eq!(t.name, s.name);
        assert_eq!(t.ne, s.ne);
        assert_eq!(t.ggml_type, s.ggml_type);
        assert_eq!(t.nbytes, s.nbytes);
        assert_eq!(t.abs_offset, f.data_start + t.offset);
        assert_eq!(t.abs_offset % f.alignment, 0, "{}", t.name);
        assert_eq!(f.tensor_data(t), data.as_slice(), "{}", t.name);
        assert_eq!(f.tensor(&s.name), Some(t));
    }
}

#[test]
fn every_metadata_kind_round_trips() {
    let md = every_kind();
    let tensors = small_tensors();
    let bytes = write(&md, &tensors, 32);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.metadata(), md.as_slice());
    for (k, v) in &md {
        assert_eq!(f.get(k), Some(v), "{k}");
    }
    // -0.0 == 0.0 under PartialEq: check the sign bit survived too.
    assert_eq!(f.get("f32.neg_zero"), Some(&Value::F32(-0.0)));
    match f.get("f32.neg_zero") {
        Some(Value::F32(x)) => assert!(x.is_sign_negative()),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.get("missing"), None);
    check_tensors(&f, &tensors);
}

#[test]
fn metadata_only_and_empty_files() {
    let md = every_kind();
    let f = GgufFile::from_bytes(write(&md, &[], 32)).unwrap();
    assert_eq!(f.metadata(), md.as_slice());
    assert!(f.tensors().is_empty());

    let f = GgufFile::from_bytes(write(&[], &[], 32)).unwrap();
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
    // The bare 24-byte header, without padding, is a valid empty file.
    let mut bare = b"GGUF".to_vec();
    bare.extend_from_slice(&3u32.to_le_bytes());
    bare.extend_from_slice(&[0u8; 16]);
    let f = GgufFile::from_bytes(bare).unwrap();
    assert_eq!(f.data_start, 32);
}

#[test]
fn nan_values_round_trip_bitwise() {
    let nan = f32::from_bits(0x7fc0_1234);
    let md = vec![kv("f32.nan", Value::F32(nan)), kv("f64.nan", Value::F64(f64::from_bits(0x7ff8_0000_0000_0042)))];
    let f = GgufFile::from_bytes(write(&md, &[], 32)).unwrap();
    match (f.get("f32.nan"), f.get("f64.nan")) {
        (Some(Value::F32(a)), Some(Value::F64(b))) => {
            assert_eq!(a.to_bits(), 0x7fc0_1234);
            assert_eq!(b.to_bits(), 0x7ff8_0000_0000_0042);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_2_is_accepted() {
    let md = every_kind();
    let tensors = small_tensors();
    let mut bytes = write(&md, &tensors, 32);
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.metadata(), md.as_slice());
    check_tensors(&f, &tensors);
}

#[test]
fn general_alignment_is_honoured() {
    for (a, v) in [
        (64u64, Value::U32(64)),
        (8, Value::U32(8)),
        (256, Value::U64(256)),
        (128, Value::I32(128)),
        (32, Value::U32(32)),
        (4096, Value::U16(4096)),
    ] {
        let mut md = vec![kv("general.architecture", Value::String("x".into())), kv("general.alignment", v)];
        md.extend(every_kind().into_iter().take(5));
        let tensors = small_tensors();
        let bytes = write(&md, &tensors, a);
        let len = bytes.len() as u64;
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment, a);
        assert_eq!(f.data_start % a, 0);
        assert!(f.data_start <= len);
        check_tensors(&f, &tensors);
    }
    // Without the key the default is 32, even if the writer padded to more.
    let tensors = small_tensors();
    let f = GgufFile::from_bytes(write(&[], &tensors, 64)).unwrap();
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_start % 32, 0);
}

#[test]
fn bad_alignment_is_rejected() {
    let bad = [
        Value::U32(0),
        Value::U32(12),
        Value::U32(4),
        Value::U32(1),
        Value::I32(-32),
        Value::U32(1 << 21),
        Value::U32(u32::MAX),
        Value::U64(u64::MAX),
        Value::I64(i64::MIN),
        Value::String("32".into()),
        Value::F32(32.0),
    ];
    for v in bad {
        let md = vec![kv("general.alignment", v.clone())];
        let bytes = write(&md, &small_tensors(), 32);
        let err = GgufFile::from_bytes(bytes).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Metadata { key, .. } if key == "general.alignment"), "{v:?}: {err}");
        assert!(err.to_string().contains("general.alignment"), "{err}");
    }
    // A valid alignment the data does not follow: tensors at multiples of 32 but not of 64.
    let md = vec![kv("general.alignment", Value::U32(64))];
    let tensors = small_tensors();
    let err = GgufFile::from_bytes(write(&md, &tensors, 32)).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Tensor { msg, .. } if msg.contains("alignment")), "{err}");
}

#[test]
fn tensor_views_are_zero_copy_and_shapes_reverse_ne() {
    let tensors = small_tensors();
    let bytes = write(&every_kind(), &tensors, 32);
    let f = GgufFile::from_bytes(bytes).unwrap();
    let file = f.bytes().as_ptr_range();
    for t in f.tensors() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.nbytes);
        // The slice is a window into the file's bytes, not a copy.
        assert_eq!(d.as_ptr(), f.bytes()[t.abs_offset as usize..].as_ptr(), "{}", t.name);
        assert!(file.contains(&d.as_ptr()) && d.as_ptr_range().end <= file.end);
        let rev: Vec<usize> = t.ne.iter().rev().map(|&x| x as usize).collect();
        assert_eq!(t.shape(), rev);
        assert_eq!(t.n_elements(), t.ne.iter().product::<u64>());
    }
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().shape(), vec![4, 128]);
    assert_eq!(f.tensor("tq2.weight").unwrap().shape(), vec![2, 1, 1, 256]);
    assert_eq!(f.tensor("norm.weight").unwrap().shape(), vec![8]);
    assert_eq!(gguf::shape_from_ne(&[256, 128256]), vec![128256, 256]);

    // Mapped files: tensor data points into the map.
    let f = GgufFile::open(TINY).unwrap();
    let file = f.bytes().as_ptr_range();
    let t = f.tensor("token_embd.weight").unwrap();
    let d = f.tensor_data(t);
    assert!(file.contains(&d.as_ptr()));
    assert_eq!(d.as_ptr() as usize - file.start as usize, t.abs_offset as usize);
    assert_eq!(t.shape(), vec![128256, 256]);
}

#[test]
fn write_header_offsets_match_the_reader() {
    let tensors = small_tensors();
    let specs: Vec<TensorSpec> = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut head = Vec::new();
    let offsets = write_header(&mut head, &every_kind(), &specs, 64).unwrap();
    let mut md = every_kind();
    md.push(kv("general.alignment", Value::U32(64)));
    let f = GgufFile::from_bytes(write(&md, &tensors, 64)).unwrap();
    let got: Vec<u64> = f.tensors().iter().map(|t| t.offset).collect();
    assert_eq!(got, offsets);
}

#[test]
fn tiny_model_layout() {
    let f = GgufFile::open(TINY).unwrap();
    assert_eq!(f.bytes().len(), 74_306_528);
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata().len(), 24);
    assert_eq!(f.tensors().len(), 24);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_start, 8_332_832);

    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys[0], "general.architecture");
    assert_eq!(keys[23], "general.quantization_version");
    assert_eq!(f.get("general.architecture").and_then(Value::as_str), Some("bitnet-b1.58"));
    assert_eq!(f.get("general.name").and_then(Value::as_str), Some("synthetic-tiny"));
    assert_eq!(f.get("bitnet-b1.58.vocab_size"), Some(&Value::U32(128256)));
    assert_eq!(f.get("bitnet-b1.58.embedding_length"), Some(&Value::U32(256)));
    assert_eq!(f.get("general.file_type"), Some(&Value::U32(40)));
    assert_eq!(f.get("tokenizer.ggml.add_bos_token"), Some(&Value::Bool(true)));
    assert_eq!(f.get("bitnet-b1.58.attention.layer_norm_rms_epsilon"), Some(&Value::F32(1e-5)));
    assert_eq!(f.get("tokenizer.ggml.pre").and_then(Value::as_str), Some("llama-bpe"));
    let arr = |k: &str| f.get(k).and_then(Value::as_array).unwrap();
    assert!(matches!(arr("tokenizer.ggml.tokens"), Array::String(v) if v.len() == 128256 && v[0] == "!"));
    assert!(matches!(arr("tokenizer.ggml.scores"), Array::F32(v) if v.len() == 128256 && v.iter().all(|&x| x == 0.0)));
    assert!(matches!(arr("tokenizer.ggml.token_type"), Array::I32(v)
        if v.len() == 128256 && v[..128000].iter().all(|&x| x == 1) && v[128000..].iter().all(|&x| x == 3)));
    assert!(matches!(arr("tokenizer.ggml.merges"), Array::String(v) if v.len() == 280147));

    let mut counts = BTreeMap::new();
    for t in f.tensors() {
        *counts.entry(t.ggml_type).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([(0, 9), (1, 1), (36, 14)]), "F32 × 9, F16 × 1, I2_S × 14");

    let expect = [
        ("token_embd.weight", vec![256, 128256], DType::F16, 65_667_072),
        ("output_norm.weight", vec![256], DType::F32, 1024),
        ("blk.0.attn_norm.weight", vec![256], DType::F32, 1024),
        ("blk.1.attn_q.weight", vec![256, 256], DType::I2S, 16_416),
        ("blk.0.attn_k.weight", vec![256, 128], DType::I2S, 8_224),
        ("blk.1.attn_v.weight", vec![256, 128], DType::I2S, 8_224),
        ("blk.0.attn_output.weight", vec![256, 256], DType::I2S, 16_416),
        ("blk.1.ffn_gate.weight", vec![256, 512], DType::I2S, 32_800),
        ("blk.0.ffn_up.weight", vec![256, 512], DType::I2S, 32_800),
        ("blk.1.ffn_down.weight", vec![512, 256], DType::I2S, 32_800),
        ("blk.0.ffn_sub_norm.weight", vec![512], DType::F32, 2_048),
    ];
    for (name, ne, dtype, nbytes) in expect {
        let t = f.tensor(name).unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(t.ne, ne, "{name}");
        assert_eq!(t.dtype, dtype, "{name}");
        assert_eq!(t.nbytes, nbytes, "{name}");
    }
    assert!(f.tensor("output.weight").is_none());
    let end = f.tensors().iter().map(|t| t.abs_offset + t.nbytes).max().unwrap();
    assert!(end <= f.bytes().len() as u64);
    let norm = f.tensor_f32("output_norm.weight").unwrap();
    assert_eq!(norm.len(), 256);
    assert!(norm.iter().all(|x| x.is_finite() && *x > 0.0 && *x < 2.0));
}

#[test]
fn all_shared_models_open() {
    let mut paths: Vec<_> = std::fs::read_dir(MODELS).unwrap().flatten().map(|e| e.path()).collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "gguf"));
    paths.sort();
    let names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(
        names,
        ["b1-spm-i2_s.gguf", "b158-spm-tq1_0.gguf", "b158-spm-tq2_0.gguf", "llama-tern-i2_s.gguf", "tiny-i2_s.gguf"]
    );
    // The Q6_K-embedding model sits outside `models/` (../shared/reference/README.md §7.1).
    paths.push(std::path::Path::new(MODELS).join("../models-q6k/tiny-i2_s-q6k.gguf"));
    for p in &paths {
        let f = GgufFile::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(f.version == 2 || f.version == 3);
        assert!(f.get("general.architecture").and_then(Value::as_str).is_some(), "{}", p.display());
        assert!(!f.tensors().is_empty());
        let len = f.bytes().len() as u64;
        for t in f.tensors() {
            assert!(t.abs_offset + t.nbytes <= len);
            assert_eq!(t.abs_offset % f.alignment, 0);
            assert_eq!(f.tensor_data(t).len() as u64, t.nbytes);
        }
        // The in-memory path gives the same result as the mapped one.
        let g = GgufFile::from_bytes(std::fs::read(p).unwrap()).unwrap();
        assert_eq!(g.metadata(), f.metadata());
        assert_eq!(g.tensors(), f.tensors());
        assert_eq!(g.data_start, f.data_start);
    }
}

#[test]
fn open_reports_io_errors() {
    let err = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Io { path, .. } if path.contains("nonexistent")), "{err}");
    let err = GgufFile::open(MODELS).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Io { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Property test: random small files written by the writer read back identically.

fn finite_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("not NaN", |x| !x.is_nan())
}

fn finite_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("not NaN", |x| !x.is_nan())
}

fn arb_array() -> impl Strategy<Value = Array> {
    use proptest::collection::vec;
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..6).prop_map(Array::U8),
        vec(any::<i8>(), 0..6).prop_map(Array::I8),
        vec(any::<u16>(), 0..6).prop_map(Array::U16),
        vec(any::<i16>(), 0..6).prop_map(Array::I16),
        vec(any::<u32>(), 0..6).prop_map(Array::U32),
        vec(any::<i32>(), 0..6).prop_map(Array::I32),
        vec(finite_f32(), 0..6).prop_map(Array::F32),
        vec(any::<bool>(), 0..6).prop_map(Array::Bool),
        vec("\\PC{0,8}", 0..6).prop_map(Array::String),
        vec(any::<u64>(), 0..6).prop_map(Array::U64),
        vec(any::<i64>(), 0..6).prop_map(Array::I64),
        vec(finite_f64(), 0..6).prop_map(Array::F64),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| vec(inner, 0..4).prop_map(Array::Array))
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        finite_f32().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        "\\PC{0,24}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        finite_f64().prop_map(Value::F64),
        arb_array().prop_map(Value::Array),
    ]
}

/// A tensor: dtype index, shape multipliers and data seed.
fn arb_tensor() -> impl Strategy<Value = (usize, Vec<u64>, u8)> {
    (0usize..5, proptest::collection::vec(1u64..4, 1..=4), any::<u8>())
}

fn make_tensor(i: usize, (kind, mult, seed): &(usize, Vec<u64>, u8), name_tail: &str) -> (TensorSpec, Vec<u8>) {
    let dtype = [DType::F32, DType::F16, DType::Q8_0, DType::I2S, DType::TQ2_0][*kind];
    let ne: Vec<u64> = match dtype {
        DType::I2S => vec![128 * mult[0], 4 * mult.get(1).copied().unwrap_or(1)],
        DType::Q8_0 => std::iter::once(32 * mult[0]).chain(mult[1..].iter().copied()).collect(),
        DType::TQ2_0 => std::iter::once(256 * mult[0]).chain(mult[1..].iter().copied()).collect(),
        _ => mult.clone(),
    };
    let name: String = format!("t{i}.{name_tail}").chars().take(40).collect();
    let s = spec(&name, &ne, dtype);
    let data = filler(s.nbytes as usize, *seed);
    (s, data)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_files_round_trip(
        values in proptest::collection::vec(("[a-z.]{0,12}", arb_value()), 0..10),
        tensors in proptest::collection::vec((arb_tensor(), "[a-z_.]{0,20}"), 0..5),
        align_pow in 3u32..8,
        version2 in any::<bool>(),
    ) {
        let alignment = 1u64 << align_pow;
        // Keys are made unique by an index prefix.
        let mut md: Vec<(String, Value)> =
            values.into_iter().enumerate().map(|(i, (k, v))| (format!("k{i}{k}"), v)).collect();
        if alignment != 32 || version2 {
            md.push(kv("general.alignment", Value::U32(alignment as u32)));
        }
        let tensors: Vec<(TensorSpec, Vec<u8>)> =
            tensors.iter().enumerate().map(|(i, (t, tail))| make_tensor(i, t, tail)).collect();
        let mut bytes = write(&md, &tensors, alignment);
        if version2 {
            bytes[4] = 2;
        }
        let f = GgufFile::from_bytes(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(f.version, if version2 { 2 } else { 3 });
        prop_assert_eq!(f.alignment, alignment);
        prop_assert_eq!(f.metadata(), md.as_slice());
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for ((s, data), t) in tensors.iter().zip(f.tensors()) {
            prop_assert_eq!(&t.name, &s.name);
            prop_assert_eq!(&t.ne, &s.ne);
            prop_assert_eq!(t.ggml_type, s.ggml_type);
            prop_assert_eq!(t.nbytes, s.nbytes);
            prop_assert_eq!(f.tensor_data(t), data.as_slice());
            let n = t.n_elements() as usize;
            let dec = gguf::types::decode_to_f32(t.dtype, f.tensor_data(t), n);
            prop_assert_eq!(dec.len(), n);
            if t.dtype == DType::F32 {
                for (j, x) in dec.iter().enumerate() {
                    prop_assert_eq!(x.to_bits(), u32::from_le_bytes(data[4 * j..4 * j + 4].try_into().unwrap()));
                }
            }
        }
    }
}
