//! `bitnet-graph synth`: writes a GGUF of arch `bitnet-b1.58`, `bitnet` or `llama` with
//! random ternary weights in bitnet.cpp's exact I2_S layout (or TQ2_0 / TQ1_0), F32 norms
//! and an F16 token embedding (Q8_0 when n_embd is not a multiple of 256, as bitnet.cpp's
//! quantizer would choose, or as `--embd-type` says), with tokenizer metadata copied from
//! another GGUF. Streaming: memory stays bounded by one matrix.

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gguf::writer::{write_header, write_padding, write_tensor, TensorSpec};
use gguf::{GgufFile, Value};
use graph::DType;
use half::f16;

use crate::cli::{SynthArch, SynthArgs, SynthEmbd, SynthPreset, SynthType};

/// Model dimensions.
#[derive(Clone, Debug)]
struct Dims {
    embd: usize,
    ff: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    ctx: usize,
    rope_base: f32,
    eps: f32,
}

fn preset(p: SynthPreset) -> Dims {
    match p {
        SynthPreset::Tiny => {
            Dims { embd: 256, ff: 512, layers: 2, heads: 4, kv_heads: 2, vocab: 128256, ctx: 512, rope_base: 500000.0, eps: 1e-5 }
        }
        SynthPreset::TwoB4T => Dims {
            embd: 2560,
            ff: 6912,
            layers: 30,
            heads: 20,
            kv_heads: 5,
            vocab: 128256,
            ctx: 4096,
            rope_base: 500000.0,
            eps: 1e-5,
        },
    }
}

/// splitmix64: fast, seedable, good enough for synthetic weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Random ternary codes (0/1/2, uniform) for `n` weights.
fn ternary_codes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut r = rng.next();
        for _ in 0..16.min(n - out.len()) {
            out.push((r % 3) as u8);
            r /= 3;
        }
    }
    out
}

/// Random TQ2_0 / TQ1_0 bytes for an `[m, k]` matrix, one f16 scale per 256-block
/// (the same value in every block, as a converted per-tensor-scale model has).
fn tq_matrix(rng: &mut Rng, m: usize, k: usize, dt: DType) -> Vec<u8> {
    let d = f16::from_f32(1.0 / (k as f32).sqrt());
    let codes = ternary_codes(rng, m * k);
    let mut out = Vec::with_capacity(dt.nbytes(k, m).unwrap_or(0));
    for blk in codes.chunks(256) {
        if dt == DType::TQ2_0 {
            out.extend(graph::quant::pack_tq2_0(blk, d));
        } else {
            out.extend(graph::quant::pack_tq1_0(blk, d));
        }
    }
    out
}

/// Random I2_S bytes for an `[m, k]` matrix: codes uniform over {−1, 0, +1}, one scale,
/// and a 28-byte trailer of non-zero garbage (as bitnet.cpp's quantizer leaves it).
fn i2s_matrix(rng: &mut Rng, m: usize, k: usize) -> Vec<u8> {
    let n = m * k;
    let mut out = vec![0u8; n / 4 + 32];
    // Each byte holds four codes; draw them 16 at a time from one 64-bit word (base 3 keeps
    // the three codes equally likely).
    for b in out[..n / 4].iter_mut() {
        let mut r = rng.next();
        let mut byte = 0u8;
        for _ in 0..4 {
            byte = (byte << 2) | (r % 3) as u8;
            r /= 3;
        }
        *b = byte;
    }
    let scale = 1.0 / (k as f32).sqrt();
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    for b in &mut out[n / 4 + 4..] {
        *b = rng.next() as u8;
    }
    out
}

/// Q4_0 quantization of one row (d = max/−8 as ggml's reference quantizer, nibbles + 8).
fn q4_0_row(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for b in x.chunks(32) {
        let max = b.iter().fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
    }
    out
}

fn norm_vector(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| (0.9 + 0.2 * rng.unit()).to_le_bytes()).collect()
}

fn q8_0_row(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    graph::quant::quantize_q8_0_weights(x, &mut out);
    out
}

/// Runs `synth`.
pub fn run(a: &SynthArgs) -> Result<ExitCode> {
    let mut d = preset(a.preset);
    let ov = |x: Option<usize>, v: &mut usize| {
        if let Some(x) = x {
            *v = x;
        }
    };
    ov(a.embd, &mut d.embd);
    ov(a.ff, &mut d.ff);
    ov(a.layers, &mut d.layers);
    ov(a.heads, &mut d.heads);
    ov(a.kv_heads, &mut d.kv_heads);
    ov(a.ctx, &mut d.ctx);
    let vocab_file = GgufFile::open(&a.vocab_from).with_context(|| format!("--vocab-from {}", a.vocab_from.display()))?;
    let tokenizer_md: Vec<(String, Value)> =
        vocab_file.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned().collect();
    let n_tokens = vocab_file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len());
    let Some(n_tokens) = n_tokens else { bail!("--vocab-from {}: no tokenizer.ggml.tokens", a.vocab_from.display()) };
    d.vocab = a.vocab.unwrap_or(n_tokens);
    if d.vocab != n_tokens {
        bail!("--vocab {} differs from the {} tokens of --vocab-from", d.vocab, n_tokens);
    }
    for (what, v) in [("--embd", d.embd), ("--ff", d.ff)] {
        if v == 0 || v % 128 != 0 {
            bail!("{what} {v}: I2_S needs a positive multiple of 128");
        }
    }
    if d.layers == 0 || d.heads == 0 || d.kv_heads == 0 || !d.embd.is_multiple_of(d.heads) || !d.heads.is_multiple_of(d.kv_heads)
    {
        bail!("inconsistent heads: {} heads, {} KV heads, n_embd {}", d.heads, d.kv_heads, d.embd);
    }
    let hd = d.embd / d.heads;
    if !hd.is_multiple_of(2) || !(d.kv_heads * hd).is_multiple_of(4) {
        bail!("head dimension {hd} does not fit I2_S (even, KV width a multiple of 4)");
    }
    let arch = a.arch.gguf_name();
    let wtype = match a.weight_type {
        SynthType::I2S => DType::I2S,
        SynthType::Tq2_0 => DType::TQ2_0,
        SynthType::Tq1_0 => DType::TQ1_0,
    };
    if wtype != DType::I2S {
        for (what, v) in [("--embd", d.embd), ("--ff", d.ff)] {
            if v % 256 != 0 {
                bail!("{what} {v}: {wtype} needs a multiple of 256");
            }
        }
    }
    let sub_norms = a.arch != SynthArch::Llama;
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("synthetic-{:?}", a.preset).to_lowercase())),
        (k("vocab_size"), Value::U32(d.vocab as u32)),
        (k("context_length"), Value::U32(d.ctx as u32)),
        (k("embedding_length"), Value::U32(d.embd as u32)),
        (k("block_count"), Value::U32(d.layers as u32)),
        (k("feed_forward_length"), Value::U32(d.ff as u32)),
        (k("rope.dimension_count"), Value::U32(hd as u32)),
        (k("attention.head_count"), Value::U32(d.heads as u32)),
        (k("attention.head_count_kv"), Value::U32(d.kv_heads as u32)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(d.eps)),
        (k("rope.freq_base"), Value::F32(d.rope_base)),
        (
            "general.file_type".into(),
            Value::U32(match wtype {
                DType::TQ1_0 => 36,
                DType::TQ2_0 => 37,
                _ => 40,
            }),
        ),
    ];
    md.extend(tokenizer_md);
    md.push(("general.synthetic_seed".into(), Value::U64(a.seed)));
    md.push(("general.quantization_version".into(), Value::U32(2)));

    // bitnet.cpp's quantizer: F16 when n_embd is a multiple of 256, else Q8_0.
    let embd_type = match a.embd_type {
        Some(SynthEmbd::F16) => DType::F16,
        Some(SynthEmbd::Q8_0) => DType::Q8_0,
        Some(SynthEmbd::Q4_0) => DType::Q4_0,
        None if d.embd.is_multiple_of(256) => DType::F16,
        None => DType::Q8_0,
    };
    let spec = |name: String, ne: Vec<u64>, dt: DType| {
        let rows: u64 = ne[1..].iter().product();
        let nbytes = dt.nbytes(ne[0] as usize, rows as usize).expect("valid size") as u64;
        TensorSpec { name, ne, ggml_type: gguf::types::ggml_from_dtype(dt).expect("file type"), nbytes }
    };
    let (e, f, kv) = (d.embd as u64, d.ff as u64, (d.kv_heads * hd) as u64);
    let mut specs = vec![spec("token_embd.weight".into(), vec![e, d.vocab as u64], embd_type)];
    for l in 0..d.layers {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        specs.push(spec(b("attn_norm"), vec![e], DType::F32));
        specs.push(spec(b("attn_q"), vec![e, e], wtype));
        specs.push(spec(b("attn_k"), vec![e, kv], wtype));
        specs.push(spec(b("attn_v"), vec![e, kv], wtype));
        if sub_norms {
            specs.push(spec(b("attn_sub_norm"), vec![e], DType::F32));
        }
        specs.push(spec(b("attn_output"), vec![e, e], wtype));
        specs.push(spec(b("ffn_norm"), vec![e], DType::F32));
        specs.push(spec(b("ffn_gate"), vec![e, f], wtype));
        specs.push(spec(b("ffn_up"), vec![e, f], wtype));
        if sub_norms {
            specs.push(spec(b("ffn_sub_norm"), vec![f], DType::F32));
        }
        specs.push(spec(b("ffn_down"), vec![f, e], wtype));
    }
    specs.push(spec("output_norm.weight".into(), vec![e], DType::F32));
    if a.output_weight {
        if a.arch != SynthArch::Llama {
            bail!("--output-weight: only arch llama reads a separate output.weight");
        }
        specs.push(spec("output.weight".into(), vec![e, d.vocab as u64], embd_type));
    }
    let total: u64 = specs.iter().map(|s| s.nbytes).sum();

    let t0 = Instant::now();
    let file = std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_header(&mut w, &md, &specs, 32)?;
    let mut rng = Rng(a.seed);
    let mut written = 0u64;
    for (i, s) in specs.iter().enumerate() {
        if s.name == "token_embd.weight" || s.name == "output.weight" {
            // Stream the (largest) embedding row block by row block.
            let rows_per_chunk = 1024;
            let mut left = d.vocab;
            while left > 0 {
                let n = left.min(rows_per_chunk);
                let vals: Vec<f32> = (0..n * d.embd).map(|_| (rng.unit() - 0.5) * 0.375).collect();
                let bytes: Vec<u8> = match embd_type {
                    DType::F16 => vals.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
                    DType::Q4_0 => vals.chunks(d.embd).flat_map(q4_0_row).collect(),
                    _ => vals.chunks(d.embd).flat_map(q8_0_row).collect(),
                };
                w.write_all(&bytes)?;
                left -= n;
            }
            write_padding(&mut w, s.nbytes, 32)?;
        } else {
            let data = match gguf::types::dtype_from_ggml(s.ggml_type).expect("known") {
                DType::I2S => i2s_matrix(&mut rng, s.ne[1] as usize, s.ne[0] as usize),
                dt @ (DType::TQ1_0 | DType::TQ2_0) => tq_matrix(&mut rng, s.ne[1] as usize, s.ne[0] as usize, dt),
                _ => norm_vector(&mut rng, s.ne[0] as usize),
            };
            write_tensor(&mut w, &data, 32)?;
        }
        written += s.nbytes;
        if i % 16 == 0 || i + 1 == specs.len() {
            eprint!("\rsynth: {:>5.1}% ({} / {} MB)", 100.0 * written as f64 / total as f64, written >> 20, total >> 20);
        }
    }
    w.flush()?;
    eprintln!();
    let size = std::fs::metadata(&a.out)?.len();
    eprintln!("wrote {} ({size} bytes, {} tensors) in {:.1} s", a.out.display(), specs.len(), t0.elapsed().as_secs_f64());
    // Prove the result loads and lowers before declaring success.
    let check = GgufFile::open(&a.out)?;
    gguf::lower(&check).context("the written file does not lower")?;
    Ok(ExitCode::SUCCESS)
}
