//! `bitnet-graph synth`: writes a GGUF of arch `bitnet-b1.58`, `bitnet` or `llama` with
//! random ternary weights in bitnet.cpp's exact I2_S layout (or TQ2_0 / TQ1_0), F32 norms
//! and an F16 token embedding (Q8_0 when n_embd is not a multiple of 256, as bitnet.cpp's
//! quantizer would choose, or as `--embd-type` says), with tokenizer metadata copied from
//! another GGUF.
//!
//! Every dimension is checked against the reader's limits and the file size against
//! [`MAX_FILE_BYTES`] before anything is written. The file is written to a temporary file
//! next to `--out`, checked (it must open and lower), then renamed: a failure leaves nothing
//! at `--out`. Streaming: memory stays bounded by [`PIECE_BYTES`]-sized pieces.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gguf::reader::{tensor_nbytes, MAX_DIM, MAX_LAYERS};
use gguf::writer::{write_header, write_padding, TensorSpec};
use gguf::{GgufFile, Value};
use graph::quant::I2S_GROUP;
use graph::rng::Rng;
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

/// Random ternary codes (0/1/2, uniform) for `n` weights.
fn ternary_codes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut r = rng.next_u64();
        for _ in 0..16.min(n - out.len()) {
            out.push((r % 3) as u8);
            r /= 3;
        }
    }
    out
}

/// Largest file `synth` writes: 16 GiB, about 13 times the 2B-4T shape (1.2 GB). Larger
/// shapes are refused before anything is written.
const MAX_FILE_BYTES: u64 = 16 << 30;

/// Target size of one generated piece of a tensor (whole rows; at least one row).
const PIECE_BYTES: usize = 4 << 20;

/// Rows per generated piece for rows of `row_bytes` bytes.
fn rows_per_piece(row_bytes: usize) -> usize {
    (PIECE_BYTES / row_bytes.max(1)).max(1)
}

/// Writes random TQ2_0 / TQ1_0 bytes for an `[m, k]` matrix, one f16 scale per 256-block
/// (the same value in every block, as a converted per-tensor-scale model has). Pieces of
/// whole rows hold a multiple of 16 codes, so the codes are those of one call for all rows.
fn write_tq_matrix(w: &mut impl Write, rng: &mut Rng, m: usize, k: usize, dt: DType) -> io::Result<()> {
    let d = f16::from_f32(1.0 / (k as f32).sqrt());
    let rows = rows_per_piece(k);
    let mut out = Vec::new();
    for r0 in (0..m).step_by(rows) {
        let codes = ternary_codes(rng, rows.min(m - r0) * k);
        out.clear();
        for blk in codes.chunks(256) {
            if dt == DType::TQ2_0 {
                out.extend(gguf::quantize::pack_tq2_0(blk, d));
            } else {
                out.extend(gguf::quantize::pack_tq1_0(blk, d));
            }
        }
        w.write_all(&out)?;
    }
    Ok(())
}

/// Writes random I2_S bytes for an `[m, k]` matrix: codes uniform over {−1, 0, +1}, one
/// scale, and a 28-byte trailer of non-zero garbage (as bitnet.cpp's quantizer leaves it).
fn write_i2s_matrix(w: &mut impl Write, rng: &mut Rng, m: usize, k: usize) -> io::Result<()> {
    let rows = rows_per_piece(k / 4);
    let mut out = Vec::new();
    for r0 in (0..m).step_by(rows) {
        // Each byte holds four codes; draw them from one 64-bit word (base 3 keeps the three
        // codes equally likely).
        out.clear();
        out.extend((0..rows.min(m - r0) * k / 4).map(|_| {
            let mut r = rng.next_u64();
            let mut byte = 0u8;
            for _ in 0..4 {
                byte = (byte << 2) | (r % 3) as u8;
                r /= 3;
            }
            byte
        }));
        w.write_all(&out)?;
    }
    let scale = 1.0 / (k as f32).sqrt();
    w.write_all(&scale.to_le_bytes())?;
    let trailer: Vec<u8> = (0..28).map(|_| rng.next_u64() as u8).collect();
    w.write_all(&trailer)
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
    (0..n).flat_map(|_| (0.9 + 0.2 * rng.f32(0.0, 1.0)).to_le_bytes()).collect()
}

fn q8_0_row(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DType::Q8_0.row_bytes(x.len()).unwrap_or(0));
    gguf::quantize::quantize_q8_0_weights(x, &mut out);
    out
}

/// A tensor to write: its spec and dtype.
struct Planned {
    spec: TensorSpec,
    dtype: DType,
}

/// The temporary file `synth` writes before renaming it to `--out`; removed when dropped
/// unless renamed.
struct TempOut {
    path: PathBuf,
    done: bool,
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `synth`'s error for flag `flag` set to `v`.
fn bad(flag: &str, v: impl std::fmt::Display, fact: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("synth: {flag} {v}: {fact}")
}

/// Checks every dimension against the reader's limits and the rules of the chosen types.
fn check_dims(d: &Dims, wtype: DType, embd_type: DType) -> Result<()> {
    for (flag, v, max) in [
        ("--embd", d.embd, MAX_DIM),
        ("--ff", d.ff, MAX_DIM),
        ("--layers", d.layers, MAX_LAYERS),
        ("--heads", d.heads, MAX_DIM),
        ("--kv-heads", d.kv_heads, MAX_DIM),
        ("--ctx", d.ctx, MAX_DIM),
        ("--vocab", d.vocab, MAX_DIM),
    ] {
        if v == 0 || v as u64 > max {
            return Err(bad(flag, v, format!("out of range 1..={max} (the reader's limit)")));
        }
    }
    // Rows of the linear layers are `--embd` and `--ff` wide; I2_S groups and the block
    // types' blocks must tile them (../shared/docs/format.md §1, §2).
    let row = |t: DType| if t == DType::I2S { I2S_GROUP } else { t.block().map_or(1, |(b, _)| b) };
    for (flag, v) in [("--embd", d.embd), ("--ff", d.ff)] {
        if !v.is_multiple_of(row(wtype)) {
            return Err(bad(flag, v, format!("{wtype} rows need a multiple of {}", row(wtype))));
        }
    }
    if !d.embd.is_multiple_of(row(embd_type)) {
        return Err(bad("--embd", d.embd, format!("{embd_type} embedding rows need a multiple of {}", row(embd_type))));
    }
    if !d.embd.is_multiple_of(d.heads) {
        return Err(bad("--heads", d.heads, format!("does not divide --embd {}", d.embd)));
    }
    if !d.heads.is_multiple_of(d.kv_heads) {
        return Err(bad("--kv-heads", d.kv_heads, format!("does not divide --heads {}", d.heads)));
    }
    let hd = d.embd / d.heads;
    if !hd.is_multiple_of(2) {
        return Err(bad(
            "--heads",
            d.heads,
            format!("head dimension {hd} (--embd {} / --heads) is odd; RoPE rotates pairs", d.embd),
        ));
    }
    if wtype == DType::I2S && !(d.kv_heads * hd).is_multiple_of(4) {
        return Err(bad(
            "--kv-heads",
            d.kv_heads,
            format!("K/V width {} × head dimension {hd} = {} is not a multiple of 4, as I2_S needs", d.kv_heads, d.kv_heads * hd),
        ));
    }
    Ok(())
}

/// Refuses an `--out` that is a directory, the `--vocab-from` input (even with `--force`) or,
/// without `--force`, any existing file.
fn check_out(out: &Path, vocab_from: &Path, force: bool) -> Result<()> {
    let Ok(meta) = std::fs::metadata(out) else { return Ok(()) };
    if meta.is_dir() {
        bail!("synth: --out {}: is a directory", out.display());
    }
    let same = match (std::fs::canonicalize(out), std::fs::canonicalize(vocab_from)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    #[cfg(unix)]
    let same = same || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(vocab_from).is_ok_and(|v| (v.dev(), v.ino()) == (meta.dev(), meta.ino()))
    };
    if same {
        bail!("synth: --out {}: is the --vocab-from input; refusing to overwrite it", out.display());
    }
    if !force {
        bail!("synth: --out {}: exists; pass --force to overwrite it", out.display());
    }
    Ok(())
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
    let arch = a.arch.gguf_name();
    let wtype = match a.weight_type {
        SynthType::I2S => DType::I2S,
        SynthType::Tq2_0 => DType::TQ2_0,
        SynthType::Tq1_0 => DType::TQ1_0,
    };
    // bitnet.cpp's quantizer: F16 when n_embd is a multiple of 256, else Q8_0.
    let embd_type = match a.embd_type {
        Some(SynthEmbd::F16) => DType::F16,
        Some(SynthEmbd::Q8_0) => DType::Q8_0,
        Some(SynthEmbd::Q4_0) => DType::Q4_0,
        Some(SynthEmbd::Q6K) => DType::Q6K,
        None if d.embd.is_multiple_of(256) => DType::F16,
        None => DType::Q8_0,
    };
    check_dims(&d, wtype, embd_type)?;
    if a.output_weight && a.arch != SynthArch::Llama {
        bail!("--output-weight: only arch llama reads a separate output.weight");
    }
    let hd = d.embd / d.heads;
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

    // Sizes by the reader's own rules (a rule missed above fails here, naming the tensor).
    let mut plan: Vec<Planned> = Vec::new();
    let mut add = |name: String, ne: Vec<u64>, dtype: DType| -> Result<()> {
        let nbytes = tensor_nbytes(&name, dtype, &ne).context("synth: the dimensions give a tensor the reader refuses")?;
        let ggml_type = gguf::types::ggml_from_dtype(dtype).with_context(|| format!("synth: {dtype} is not a file type"))?;
        plan.push(Planned { spec: TensorSpec { name, ne, ggml_type, nbytes }, dtype });
        Ok(())
    };
    let (e, f, kv) = (d.embd as u64, d.ff as u64, (d.kv_heads * hd) as u64);
    add("token_embd.weight".into(), vec![e, d.vocab as u64], embd_type)?;
    for l in 0..d.layers {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        add(b("attn_norm"), vec![e], DType::F32)?;
        add(b("attn_q"), vec![e, e], wtype)?;
        add(b("attn_k"), vec![e, kv], wtype)?;
        add(b("attn_v"), vec![e, kv], wtype)?;
        if sub_norms {
            add(b("attn_sub_norm"), vec![e], DType::F32)?;
        }
        add(b("attn_output"), vec![e, e], wtype)?;
        add(b("ffn_norm"), vec![e], DType::F32)?;
        add(b("ffn_gate"), vec![e, f], wtype)?;
        add(b("ffn_up"), vec![e, f], wtype)?;
        if sub_norms {
            add(b("ffn_sub_norm"), vec![f], DType::F32)?;
        }
        add(b("ffn_down"), vec![f, e], wtype)?;
    }
    add("output_norm.weight".into(), vec![e], DType::F32)?;
    if a.output_weight {
        add("output.weight".into(), vec![e, d.vocab as u64], embd_type)?;
    }
    let specs: Vec<TensorSpec> = plan.iter().map(|p| p.spec.clone()).collect();
    let mut header = Vec::new();
    write_header(&mut header, &md, &specs, 32)?;
    let total = plan.iter().try_fold(header.len() as u64, |acc, p| acc.checked_add(p.spec.nbytes.div_ceil(32) * 32));
    match total {
        Some(t) if t <= MAX_FILE_BYTES => {}
        _ => bail!(
            "synth: --embd {} --ff {} --layers {} (vocab {}): the file would be {}, above synth's limit of {} GiB",
            d.embd,
            d.ff,
            d.layers,
            d.vocab,
            total.map_or("over 2^64 bytes".into(), |t| format!("{t} bytes ({:.1} GiB)", t as f64 / (1u64 << 30) as f64)),
            MAX_FILE_BYTES >> 30
        ),
    }
    let total = total.unwrap_or_default();

    check_out(&a.out, &a.vocab_from, a.force)?;
    let name = a.out.file_name().with_context(|| format!("synth: --out {}: not a file name", a.out.display()))?;
    let dir = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".synth-{}.tmp", std::process::id()));
    let mut tmp = TempOut { path: dir.join(tmp_name), done: false };
    let werr = |e: io::Error| anyhow::anyhow!("synth: --out {}: writing {}: {e}", a.out.display(), tmp.path.display());

    let t0 = Instant::now();
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp.path).map_err(werr)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&header).map_err(werr)?;
    let mut rng = Rng::new(a.seed);
    let mut written = header.len() as u64;
    for (i, p) in plan.iter().enumerate() {
        let s = &p.spec;
        match p.dtype {
            _ if s.name == "token_embd.weight" || s.name == "output.weight" => {
                // The (largest) embedding, a piece of rows at a time.
                let rows = rows_per_piece(d.embd * 4);
                let mut left = d.vocab;
                while left > 0 {
                    let n = left.min(rows);
                    let vals: Vec<f32> = (0..n * d.embd).map(|_| (rng.f32(0.0, 1.0) - 0.5) * 0.375).collect();
                    let bytes: Vec<u8> = match embd_type {
                        DType::F16 => vals.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
                        DType::Q4_0 => vals.chunks(d.embd).flat_map(q4_0_row).collect(),
                        DType::Q6K => {
                            let mut out = Vec::new();
                            gguf::quantize::quantize_q6_k(&vals, &mut out);
                            out
                        }
                        _ => vals.chunks(d.embd).flat_map(q8_0_row).collect(),
                    };
                    w.write_all(&bytes).map_err(werr)?;
                    left -= n;
                }
            }
            DType::I2S => write_i2s_matrix(&mut w, &mut rng, s.ne[1] as usize, s.ne[0] as usize).map_err(werr)?,
            dt @ (DType::TQ1_0 | DType::TQ2_0) => {
                write_tq_matrix(&mut w, &mut rng, s.ne[1] as usize, s.ne[0] as usize, dt).map_err(werr)?
            }
            _ => w.write_all(&norm_vector(&mut rng, s.ne[0] as usize)).map_err(werr)?,
        }
        write_padding(&mut w, s.nbytes, 32).map_err(werr)?;
        written += s.nbytes.div_ceil(32) * 32;
        if i % 16 == 0 || i + 1 == plan.len() {
            eprint!("\rsynth: {:>5.1}% ({} / {} MB)", 100.0 * written as f64 / total as f64, written >> 20, total >> 20);
        }
    }
    w.into_inner().map_err(|e| werr(e.into_error()))?;
    eprintln!();
    // Prove the result loads and lowers before it takes the name.
    let check = GgufFile::open(&tmp.path)?;
    gguf::lower(&check).context("synth: the written file does not lower")?;
    if check.bytes().len() as u64 != total {
        bail!("synth: wrote {} bytes, planned {total}", check.bytes().len());
    }
    drop(check);
    check_out(&a.out, &a.vocab_from, a.force)?;
    std::fs::rename(&tmp.path, &a.out)
        .with_context(|| format!("synth: renaming {} to {}", tmp.path.display(), a.out.display()))?;
    tmp.done = true;
    eprintln!("wrote {} ({total} bytes, {} tensors) in {:.1} s", a.out.display(), plan.len(), t0.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
