//! Writes the seed corpora for the `gguf_reader`, `tokenizer` and `chat_template` fuzz targets.
//!
//! `cargo run --example gen_seeds [-- OUT_DIR]` (default `corpus/gguf_reader`), from `fuzz/`;
//! the tokenizer seeds go to `tokenizer/` next to OUT_DIR: the inputs of llama.cpp's
//! tokenizer test vectors in `shared/reference/tokenizer/*.inp`, one file per case; the
//! chat_template seeds to `chat_template/`: those cases as conversations, and each shared
//! model's stored chat template.
//! Seeds: small files built with `gguf::writer` (every metadata kind, every decodable tensor
//! type, several alignments), a shrunk copy of each shared model (its metadata with arrays
//! cut to 16 elements, its tensor table with the smallest legal shapes) and the first 64 KiB
//! of each shared model.

use std::path::{Path, PathBuf};

use gguf::value::{Array, Value};
use gguf::writer::{write_gguf, TensorSpec};
use graph::DType;

use graph::rng::Rng;

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Plausible bytes for a tensor of `dtype` with `ne`.
fn tensor_bytes(rng: &mut Rng, dtype: DType, ne: &[u64]) -> Vec<u8> {
    let row = ne[0] as usize;
    let rows: usize = ne[1..].iter().product::<u64>() as usize;
    let n = row * rows;
    match dtype {
        DType::I2S => {
            let codes: Vec<u8> = (0..n).map(|_| rng.below(3) as u8).collect();
            let trailer: [u8; 28] = random_bytes(rng, 28).try_into().unwrap();
            gguf::quantize::pack_i2s(&codes, 0.125, &trailer)
        }
        DType::TQ2_0 => (0..n / 256)
            .flat_map(|_| {
                let codes: Vec<u8> = (0..256).map(|_| rng.below(3) as u8).collect();
                gguf::quantize::pack_tq2_0(&codes, half::f16::from_f32(0.5))
            })
            .collect(),
        DType::TQ1_0 => (0..n / 256)
            .flat_map(|_| {
                let codes: Vec<u8> = (0..256).map(|_| rng.below(3) as u8).collect();
                gguf::quantize::pack_tq1_0(&codes, half::f16::from_f32(0.5))
            })
            .collect(),
        DType::F32 => (0..n).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect(),
        _ => random_bytes(rng, dtype.nbytes(row, rows).unwrap()),
    }
}

fn spec(name: &str, ne: &[u64], dtype: DType) -> TensorSpec {
    let row = ne[0] as usize;
    let rows = ne[1..].iter().product::<u64>() as usize;
    TensorSpec {
        name: name.into(),
        ne: ne.to_vec(),
        ggml_type: gguf::types::ggml_from_dtype(dtype).unwrap(),
        nbytes: dtype.nbytes(row, rows).unwrap() as u64,
    }
}

fn build(metadata: &[(String, Value)], tensors: &[(&str, Vec<u64>, DType)], alignment: u64, rng: &mut Rng) -> Vec<u8> {
    let specs: Vec<(TensorSpec, Vec<u8>)> =
        tensors.iter().map(|(n, ne, d)| (spec(n, ne, *d), tensor_bytes(rng, *d, ne))).collect();
    let refs: Vec<(TensorSpec, &[u8])> = specs.iter().map(|(s, b)| (s.clone(), b.as_slice())).collect();
    let mut out = Vec::new();
    write_gguf(&mut out, metadata, &refs, alignment).unwrap();
    out
}

fn shorten(v: &Value) -> Value {
    fn arr(a: &Array) -> Array {
        match a {
            Array::U8(v) => Array::U8(v.iter().take(16).cloned().collect()),
            Array::I8(v) => Array::I8(v.iter().take(16).cloned().collect()),
            Array::U16(v) => Array::U16(v.iter().take(16).cloned().collect()),
            Array::I16(v) => Array::I16(v.iter().take(16).cloned().collect()),
            Array::U32(v) => Array::U32(v.iter().take(16).cloned().collect()),
            Array::I32(v) => Array::I32(v.iter().take(16).cloned().collect()),
            Array::F32(v) => Array::F32(v.iter().take(16).cloned().collect()),
            Array::Bool(v) => Array::Bool(v.iter().take(16).cloned().collect()),
            Array::String(v) => Array::String(v.iter().take(16).cloned().collect()),
            Array::U64(v) => Array::U64(v.iter().take(16).cloned().collect()),
            Array::I64(v) => Array::I64(v.iter().take(16).cloned().collect()),
            Array::F64(v) => Array::F64(v.iter().take(16).cloned().collect()),
            Array::Array(v) => Array::Array(v.iter().take(16).map(arr).collect()),
        }
    }
    match v {
        Value::Array(a) => Value::Array(arr(a)),
        other => other.clone(),
    }
}

/// Smallest legal `ne` with the same number of dims for a dtype.
fn small_ne(dtype: DType, n_dims: usize) -> Vec<u64> {
    let row = match dtype {
        DType::I2S => 128,
        d => d.block().map(|(b, _)| b as u64).unwrap_or(1).max(4),
    };
    let mut ne = vec![row];
    for i in 1..n_dims {
        ne.push(if i == 1 && dtype == DType::I2S { 4 } else { 2 });
    }
    if dtype == DType::I2S && ne.len() < 2 {
        ne.push(4);
    }
    ne
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus/gguf_reader".into()));
    std::fs::create_dir_all(&out).unwrap();
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let s = |x: &str| Value::String(x.into());

    let all_kinds: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s("bitnet-b1.58")),
        ("k.u8".into(), Value::U8(7)),
        ("k.i8".into(), Value::I8(-7)),
        ("k.u16".into(), Value::U16(700)),
        ("k.i16".into(), Value::I16(-700)),
        ("k.u32".into(), Value::U32(70000)),
        ("k.i32".into(), Value::I32(-70000)),
        ("k.f32".into(), Value::F32(1e-5)),
        ("k.bool".into(), Value::Bool(true)),
        ("k.str".into(), s("héllo")),
        ("k.u64".into(), Value::U64(1 << 40)),
        ("k.i64".into(), Value::I64(-(1 << 40))),
        ("k.f64".into(), Value::F64(0.5)),
        ("k.tokens".into(), Value::Array(Array::String(vec!["a".into(), "".into(), "Ġb".into()]))),
        ("k.scores".into(), Value::Array(Array::F32(vec![0.0, -1.5]))),
        ("k.types".into(), Value::Array(Array::I32(vec![1, 3]))),
        ("k.flags".into(), Value::Array(Array::Bool(vec![true, false]))),
        ("k.nested".into(), Value::Array(Array::Array(vec![Array::U8(vec![1, 2]), Array::String(vec!["x".into()])]))),
        ("k.empty".into(), Value::Array(Array::U64(vec![]))),
    ];
    let tensors: Vec<(&str, Vec<u64>, DType)> = vec![
        ("norm.weight", vec![8], DType::F32),
        ("embd.weight", vec![8, 3], DType::F16),
        ("blk.0.attn_q.weight", vec![128, 4], DType::I2S),
        ("q8.weight", vec![32, 2], DType::Q8_0),
        ("q4.weight", vec![32, 1], DType::Q4_0),
        ("bf.weight", vec![4, 2, 2], DType::BF16),
        ("tq2.weight", vec![256, 1], DType::TQ2_0),
        ("tq1.weight", vec![256, 1, 1, 1], DType::TQ1_0),
    ];
    seeds.push(("all_kinds".into(), build(&all_kinds, &tensors, 32, &mut rng)));
    seeds.push(("meta_only".into(), build(&all_kinds, &[], 32, &mut rng)));
    seeds.push(("empty".into(), build(&[], &[], 32, &mut rng)));
    seeds.push(("tensors_only".into(), build(&[], &tensors, 32, &mut rng)));
    for (i, t) in tensors.iter().enumerate() {
        seeds.push((format!("one_tensor_{i}"), build(&all_kinds[..2], std::slice::from_ref(t), 32, &mut rng)));
    }
    for a in [8u32, 64, 256] {
        let mut md = vec![("general.alignment".to_string(), Value::U32(a))];
        md.extend(all_kinds[..3].iter().cloned());
        seeds.push((format!("align_{a}"), build(&md, &tensors[..3], a as u64, &mut rng)));
    }
    let mut v2 = build(&all_kinds[..4], &tensors[..3], 32, &mut rng);
    v2[4] = 2;
    seeds.push(("v2".into(), v2));

    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let mut names: Vec<_> = std::fs::read_dir(&models).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    for p in &names {
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&p).unwrap();
        seeds.push((format!("{stem}_head64k"), bytes[..bytes.len().min(65536)].to_vec()));
        let f = match gguf::GgufFile::open(&p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                continue;
            }
        };
        let md: Vec<(String, Value)> = f.metadata().iter().map(|(k, v)| (k.clone(), shorten(v))).collect();
        let ts: Vec<(&str, Vec<u64>, DType)> =
            f.tensors().iter().map(|t| (t.name.as_str(), small_ne(t.dtype, t.ne.len()), t.dtype)).collect();
        seeds.push((format!("{stem}_shrunk"), build(&md, &ts, f.alignment, &mut rng)));
    }

    for (name, bytes) in &seeds {
        std::fs::write(out.join(format!("seed_{name}.gguf")), bytes).unwrap();
    }
    eprintln!("wrote {} seeds to {}", seeds.len(), out.display());

    let tok_out = out.parent().unwrap_or(Path::new(".")).join("tokenizer");
    std::fs::create_dir_all(&tok_out).unwrap();
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/tokenizer");
    let mut cases: Vec<String> = Vec::new();
    for stem in ["ggml-vocab-llama-bpe.gguf", "ggml-vocab-llama-spm.gguf"] {
        let Ok(inp) = std::fs::read_to_string(vectors.join(format!("{stem}.inp"))) else { continue };
        cases.extend(inp.split("\n__ggml_vocab_test__\n").filter(|c| !c.is_empty()).map(str::to_owned));
    }
    cases.sort();
    cases.dedup();
    for (i, c) in cases.iter().enumerate() {
        std::fs::write(tok_out.join(format!("seed_{i:02}.txt")), c).unwrap();
    }
    eprintln!("wrote {} seeds to {}", cases.len(), tok_out.display());

    // chat_template: conversations in the target's encoding (messages cut at 0x00, the first
    // byte's value mod 3 the role: 0 system, 1 user, 2 assistant) made of the tokenizer cases,
    // and each shared model's stored chat template as a whole input (offered to detection).
    let chat_out = out.parent().unwrap_or(Path::new(".")).join("chat_template");
    std::fs::create_dir_all(&chat_out).unwrap();
    let mut n = 0;
    for (i, pair) in cases.chunks(2).enumerate() {
        let mut conv = Vec::new();
        for (j, c) in pair.iter().enumerate() {
            if i % 2 == 0 && j == 0 {
                // Role byte 3 (3 mod 3 = 0: system; 0 itself is the separator).
                conv.extend(b"\x03You are terse.\0");
            }
            conv.push(1 + j as u8);
            conv.extend(c.as_bytes());
            conv.push(0);
        }
        std::fs::write(chat_out.join(format!("seed_{n:02}.bin")), conv).unwrap();
        n += 1;
    }
    for model in &names {
        let Ok(file) = gguf::GgufFile::open(model) else { continue };
        if let Some(t) = file.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            std::fs::write(chat_out.join(format!("seed_{n:02}.bin")), t).unwrap();
            n += 1;
        }
    }
    eprintln!("wrote {n} seeds to {}", chat_out.display());
}
