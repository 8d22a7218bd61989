//! Lowering: one table row per `general.architecture` ([`ARCHS`]) saying how its blocks
//! differ, and one decoder ([`blocks::Lowerer::decoder`]) that wires every architecture from
//! those blocks.

pub mod blocks;
pub mod hparams;
pub mod names;

use graph::Graph;

pub use hparams::HParams;

use blocks::{ArchBlocks, BlockNames, FfnAct, Lowerer};
use graph::RopeStyle;

use crate::error::{Error, ErrorKind, Result};
use crate::reader::GgufFile;

/// One supported architecture: its `general.architecture` names, its blocks, the RoPE base
/// when the file does not give one, and where its LM head lives.
pub struct Arch {
    /// `general.architecture` values (the first is the canonical name).
    pub names: &'static [&'static str],
    /// How its blocks differ from the others'.
    pub blocks: ArchBlocks,
    /// RoPE frequency base used when the file has no `rope.freq_base`.
    pub default_rope_base: f32,
    /// Whether a separate `output.weight` head is used when the file has one (else the tied
    /// `token_embd.weight`).
    pub separate_head: bool,
}

/// Every architecture with a lowering.
pub const ARCHS: &[Arch] = &[
    // microsoft/bitnet-b1.58-2B-4T (`bitnet-25` in the older 333-tensor upload).
    Arch {
        names: &["bitnet-b1.58", "bitnet-25"],
        blocks: ArchBlocks {
            rope: RopeStyle::Neox,
            sub_norms: true,
            act: FfnAct::ReluSqr,
            scales: false,
            names: BlockNames { attn: "kqv_out", wo: "attn_o_out", ffn_prod: "ffn_out", ffn_down: "ffn_down" },
        },
        default_rope_base: 500000.0,
        separate_head: false,
    },
    // 1bitLLM bitnet_b1_58.
    Arch {
        names: &["bitnet"],
        blocks: ArchBlocks {
            rope: RopeStyle::Neox,
            sub_norms: true,
            act: FfnAct::Silu,
            scales: true,
            names: BlockNames { attn: "kqv_out", wo: "attn_o_out", ffn_prod: "ffn_sub_out", ffn_down: "ffn_down" },
        },
        default_rope_base: 10000.0,
        separate_head: false,
    },
    // LLaMA with ternary weights (Llama3-8B-1.58, Falcon3-1.58bit).
    Arch {
        names: &["llama"],
        blocks: ArchBlocks {
            rope: RopeStyle::Norm,
            sub_norms: false,
            act: FfnAct::Silu,
            scales: false,
            names: BlockNames { attn: "kqv_merged_cont", wo: "kqv_out", ffn_prod: "ffn_gate_par", ffn_down: "ffn_out" },
        },
        default_rope_base: 10000.0,
        separate_head: true,
    },
];

/// Architectures with a lowering (`general.architecture` values).
pub fn supported_archs() -> Vec<&'static str> {
    ARCHS.iter().flat_map(|a| a.names.iter().copied()).collect()
}

/// A lowered model: hyperparameters and the verified graph.
#[derive(Debug, Clone)]
pub struct Model {
    /// Hyperparameters.
    pub hparams: HParams,
    /// The graph; its output is the logits `[O, n_vocab]`.
    pub graph: Graph,
}

/// The `general.architecture` of a file.
pub fn architecture(file: &GgufFile) -> Result<&str> {
    let v = file.get("general.architecture").ok_or_else(|| Error::metadata("general.architecture", "missing required key"))?;
    v.as_str()
        .ok_or_else(|| Error::metadata("general.architecture", format!("expected a string, found {}", v.value_type().name())))
}

/// Name of the optional Q8_0-requantized LM head (`--lm-head q8`), a weight that is not in
/// the file: the caller's [`graph::WeightSource`] provides its bytes.
pub const Q8_HEAD: &str = "token_embd.weight (q8_0)";
/// Name of the optional Q6_K-requantized LM head (`--lm-head q6k`), like [`Q8_HEAD`].
pub const Q6K_HEAD: &str = "token_embd.weight (q6_k)";

/// The name of the virtual head requantized to `dtype` (Q8_0 or Q6_K).
pub fn requantized_head_name(dtype: graph::DType) -> Option<&'static str> {
    match dtype {
        graph::DType::Q8_0 => Some(Q8_HEAD),
        graph::DType::Q6K => Some(Q6K_HEAD),
        _ => None,
    }
}

/// Choices that change the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Use a copy of an F16 LM head requantized to this type (Q8_0: [`Q8_HEAD`], Q6_K:
    /// [`Q6K_HEAD`]) instead of the exact F16 one.
    pub requantize_head: Option<graph::DType>,
}

/// Lowers a file into a verified graph, by its architecture.
pub fn lower(file: &GgufFile) -> Result<Model> {
    lower_with(file, LowerOptions::default())
}

/// [`lower`] with options.
pub fn lower_with(file: &GgufFile, opts: LowerOptions) -> Result<Model> {
    let name = architecture(file)?;
    let Some(arch) = ARCHS.iter().find(|a| a.names.contains(&name)) else {
        return Err(ErrorKind::UnsupportedArch { arch: name.to_string(), supported: supported_archs().join(", ") }.into());
    };
    let hparams = HParams::read(file, name, arch.default_rope_base)?;
    check_ternary_widths(file, &hparams)?;
    let mut lw = Lowerer::new(file, name);
    let base = head_base(file, arch);
    let head = head_weight(&mut lw, file, base, opts)?;
    let graph = lw.decoder(&hparams, &arch.blocks, &head)?;
    Ok(Model { hparams, graph })
}

/// The tensor the LM head reads: `output.weight` where the architecture has a separate head
/// and the file carries it, else the tied `token_embd.weight`.
fn head_base(file: &GgufFile, arch: &Arch) -> &'static str {
    if arch.separate_head && file.tensor("output.weight").is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    }
}

/// The LM head weight to use: `base` itself, or with `--lm-head q8`/`q6k` and an F16 `base`,
/// the virtual requantized copy registered with the lowerer.
pub(crate) fn head_weight(lw: &mut Lowerer<'_>, file: &GgufFile, base: &str, opts: LowerOptions) -> Result<String> {
    match (file.tensor(base), opts.requantize_head) {
        (Some(t), Some(dtype)) if t.dtype == graph::DType::F16 => {
            let name = requantized_head_name(dtype)
                .ok_or_else(|| Error::tensor(base, format!("cannot requantize the head to {dtype}")))?;
            let shape = graph::Shape::fixed(&t.shape());
            lw.virtual_weight(name, graph::TensorFact::new(dtype, shape))?;
            Ok(name.to_string())
        }
        _ => Ok(base.to_string()),
    }
}

/// bitnet.cpp's I2_S kernels need input widths that are multiples of 128 (a remainder is
/// silently dropped there); refuse such files with the reason.
fn check_ternary_widths(file: &GgufFile, hp: &HParams) -> Result<()> {
    for (what, width) in [("embedding_length", hp.n_embd), ("feed_forward_length", hp.n_ff)] {
        let uses_i2s = file.tensors().iter().any(|t| t.dtype == graph::DType::I2S);
        let uses_tq = file.tensors().iter().any(|t| matches!(t.dtype, graph::DType::TQ1_0 | graph::DType::TQ2_0));
        if uses_tq && width % 256 != 0 {
            return Err(Error::metadata(
                format!("{}.{what}", hp.arch),
                format!("{width} is not a multiple of 256, which TQ1_0/TQ2_0 matmuls require"),
            ));
        }
        if uses_i2s && width % 128 != 0 {
            return Err(Error::metadata(
                format!("{}.{what}", hp.arch),
                format!("{width} is not a multiple of 128, which I2_S matmuls require"),
            ));
        }
    }
    Ok(())
}

/// The tensor a requantized head ([`Q8_HEAD`], [`Q6K_HEAD`]) stands for.
pub fn requantized_head_base(file: &GgufFile, hp: &HParams) -> &'static str {
    ARCHS.iter().find(|a| a.names.contains(&hp.arch.as_str())).map_or("token_embd.weight", |a| head_base(file, a))
}

/// Requantizes the F16 head tensor `name` to `dtype` rows (rows in parallel) with
/// llama-quantize's weight quantizers: Q8_0 (`quantize_row_q8_0_ref`) or Q6_K
/// (`quantize_row_q6_K_ref`, as bitnet.cpp's `--quant-embd` does offline). The bytes of
/// [`requantized_head_name`].
pub fn quantize_head(file: &GgufFile, name: &str, dtype: graph::DType) -> Result<Vec<u8>> {
    use rayon::prelude::*;
    let t = file.tensor(name).ok_or_else(|| Error::tensor(name, "missing"))?;
    let quantize: fn(&[f32], &mut Vec<u8>) = match dtype {
        graph::DType::Q8_0 => crate::quantize::quantize_q8_0_weights,
        graph::DType::Q6K => crate::quantize::quantize_q6_k,
        _ => return Err(Error::tensor(name, format!("cannot requantize a head to {dtype}"))),
    };
    let row_out = (t.ne.len() == 2).then(|| dtype.row_bytes(t.ne[0] as usize)).flatten();
    let Some(row_out) = row_out.filter(|_| t.dtype == graph::DType::F16) else {
        return Err(Error::tensor(name, format!("cannot requantize a {} tensor with ne {:?} to {dtype}", t.dtype, t.ne)));
    };
    let (rows, k) = (t.ne[1] as usize, t.ne[0] as usize);
    let mut out = vec![0u8; rows * row_out];
    // Read the F16 rows in chunks from the file rather than the map, so the 2-byte table
    // does not become resident next to its requantized copy.
    const CHUNK_ROWS: usize = 4096;
    let mut f16_rows = vec![0u8; CHUNK_ROWS * k * 2];
    for (c, out_chunk) in out.chunks_mut(CHUNK_ROWS * row_out).enumerate() {
        let n = out_chunk.len() / row_out;
        let src = &mut f16_rows[..n * k * 2];
        file.read_tensor_range(t, (c * CHUNK_ROWS * k * 2) as u64, src)?;
        out_chunk.par_chunks_mut(row_out).zip(src.par_chunks(k * 2)).for_each(|(o, row)| {
            let mut x = vec![0f32; k];
            graph::quant::decode_f16(row, &mut x);
            let mut q = Vec::with_capacity(row_out);
            quantize(&x, &mut q);
            o.copy_from_slice(&q);
        });
    }
    Ok(out)
}

/// The weights of a loaded model: the file's tensors plus the weights the lowering added
/// that are not in the file (a requantized head, [`Q8_HEAD`] or [`Q6K_HEAD`]), which it owns.
pub struct ModelWeights {
    /// The model file.
    pub file: GgufFile,
    extra: Vec<(String, Vec<u8>)>,
}

impl ModelWeights {
    /// The file's tensors only.
    pub fn new(file: GgufFile) -> ModelWeights {
        ModelWeights { file, extra: Vec::new() }
    }

    /// Adds a weight that is not in the file (e.g. [`Q8_HEAD`] from [`quantize_head`]).
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) {
        self.extra.retain(|(n, _)| n != name);
        self.extra.push((name.to_string(), bytes));
    }

    fn extra(&self, name: &str) -> Option<&[u8]> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, b)| &b[..])
    }
}

impl graph::WeightSource for ModelWeights {
    fn weight_len(&self, name: &str) -> Option<usize> {
        self.extra(name).map(<[u8]>::len).or_else(|| self.file.weight_len(name))
    }

    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.extra(name).or_else(|| self.file.weight_bytes(name))
    }

    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> std::result::Result<(), String> {
        match self.extra(name) {
            Some(b) if b.len() == dst.len() => {
                dst.copy_from_slice(b);
                Ok(())
            }
            Some(b) => Err(format!("{} bytes, expected {}", b.len(), dst.len())),
            None => self.file.copy_weight(name, dst),
        }
    }
}

impl graph::WeightSource for GgufFile {
    fn weight_len(&self, name: &str) -> Option<usize> {
        self.tensor(name).map(|t| self.tensor_data(t).len())
    }

    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> std::result::Result<(), String> {
        let t = self.tensor(name).ok_or_else(|| format!("no tensor `{name}` in the file"))?;
        self.read_tensor_into(t, dst).map_err(|e| e.to_string())
    }
}
