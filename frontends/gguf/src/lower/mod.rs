//! Lowering: one module per `general.architecture`, each reading like the architecture's
//! block diagram, built from the shared blocks in [`blocks`].

pub mod bitnet;
pub mod bitnet_b158;
pub mod llama;
pub mod blocks;
pub mod hparams;
pub mod names;

use graph::Graph;

pub use hparams::HParams;

use blocks::Lowerer;

use crate::error::{Error, ErrorKind, Result};
use crate::reader::GgufFile;

/// Architectures with a lowering (`general.architecture` values).
pub const SUPPORTED_ARCHS: &[&str] = &["bitnet-b1.58", "bitnet-25", "bitnet", "llama"];

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

/// Name of the optional requantized LM head (`--lm-head q8`), a weight that is not in the
/// file: the caller's [`graph::WeightSource`] provides its bytes.
pub const Q8_HEAD: &str = "token_embd.weight (q8_0)";

/// Choices that change the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Use a Q8_0 copy of an F16 LM head ([`Q8_HEAD`]) instead of the exact F16 one.
    pub lm_head_q8: bool,
}

/// Lowers a file into a verified graph, by its architecture.
pub fn lower(file: &GgufFile) -> Result<Model> {
    lower_with(file, LowerOptions::default())
}

/// [`lower`] with options.
pub fn lower_with(file: &GgufFile, opts: LowerOptions) -> Result<Model> {
    let arch = architecture(file)?;
    let (hparams, graph) = match arch {
        "bitnet-b1.58" | "bitnet-25" => {
            let hp = HParams::read(file, arch, 500000.0)?;
            check_ternary_widths(file, &hp)?;
            let g = bitnet_b158::lower(file, &hp, opts)?;
            (hp, g)
        }
        "bitnet" => {
            let hp = HParams::read(file, arch, 10000.0)?;
            check_ternary_widths(file, &hp)?;
            let g = bitnet::lower(file, &hp, opts)?;
            (hp, g)
        }
        "llama" => {
            let hp = HParams::read(file, arch, 10000.0)?;
            check_ternary_widths(file, &hp)?;
            let g = llama::lower(file, &hp, opts)?;
            (hp, g)
        }
        other => return Err(ErrorKind::UnsupportedArch { arch: other.to_string(), supported: SUPPORTED_ARCHS.join(", ") }.into()),
    };
    Ok(Model { hparams, graph })
}

/// The LM head weight to use: `base` itself, or with `--lm-head q8` and an F16 `base`, the
/// virtual Q8_0 copy registered with the lowerer.
pub(crate) fn head_weight(lw: &mut Lowerer<'_>, file: &GgufFile, base: &str, opts: LowerOptions) -> Result<String> {
    match file.tensor(base) {
        Some(t) if opts.lm_head_q8 && t.dtype == graph::DType::F16 => {
            let shape = graph::Shape::fixed(&t.shape());
            lw.virtual_weight(Q8_HEAD, graph::TensorFact::new(graph::DType::Q8_0, shape))?;
            Ok(Q8_HEAD.to_string())
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

/// The tensor an `--lm-head q8` graph's [`Q8_HEAD`] stands for.
pub fn q8_head_base(file: &GgufFile, hp: &HParams) -> &'static str {
    if hp.arch == "llama" && file.tensor("output.weight").is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    }
}

/// Requantizes the F16 head tensor `name` to Q8_0 rows with llama-quantize's weight
/// quantizer (rows in parallel), the bytes of [`Q8_HEAD`].
pub fn quantize_head_q8(file: &GgufFile, name: &str) -> Result<Vec<u8>> {
    use rayon::prelude::*;
    let t = file.tensor(name).ok_or_else(|| Error::tensor(name, "missing"))?;
    if t.dtype != graph::DType::F16 || t.ne.len() != 2 || t.ne[0] % 32 != 0 {
        return Err(Error::tensor(name, format!("cannot requantize a {} tensor with ne {:?} to Q8_0", t.dtype, t.ne)));
    }
    let (rows, k) = (t.ne[1] as usize, t.ne[0] as usize);
    let row_out = k / 32 * 34;
    let mut out = vec![0u8; rows * row_out];
    // Read the F16 rows in chunks from the file rather than the map, so the 2-byte table
    // does not become resident next to its 1-byte copy.
    const CHUNK_ROWS: usize = 4096;
    let mut f16_rows = vec![0u8; CHUNK_ROWS * k * 2];
    for (c, out_chunk) in out.chunks_mut(CHUNK_ROWS * row_out).enumerate() {
        let n = out_chunk.len() / row_out;
        let src = &mut f16_rows[..n * k * 2];
        file.read_tensor_range(t, (c * CHUNK_ROWS * k * 2) as u64, src).map_err(|e| Error::tensor(name, e.to_string()))?;
        out_chunk.par_chunks_mut(row_out).zip(src.par_chunks(k * 2)).for_each(|(o, row)| {
            let mut x = vec![0f32; k];
            graph::quant::decode_f16(row, &mut x);
            let mut q = Vec::with_capacity(row_out);
            graph::quant::quantize_q8_0_weights(&x, &mut q);
            o.copy_from_slice(&q);
        });
    }
    Ok(out)
}

/// A weight source that serves a file's tensors plus the requantized head [`Q8_HEAD`]
/// (its bytes from [`quantize_head_q8`], owned by the caller).
pub struct WithQ8Head<'f> {
    /// The model file.
    pub file: &'f GgufFile,
    /// [`Q8_HEAD`]'s bytes, if the graph uses it.
    pub head: Option<&'f [u8]>,
}

impl<'f> WithQ8Head<'f> {
    /// The bytes of weight `name`, borrowed for the file's lifetime.
    pub fn bytes(&self, name: &str) -> Option<&'f [u8]> {
        match (self.head, name) {
            (Some(q), Q8_HEAD) => Some(q),
            _ => self.file.tensor(name).map(|t| self.file.tensor_data(t)),
        }
    }
}

impl graph::WeightSource for WithQ8Head<'_> {
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.bytes(name)
    }

    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> bool {
        match (self.head, name) {
            (Some(q), Q8_HEAD) if q.len() == dst.len() => {
                dst.copy_from_slice(q);
                true
            }
            (Some(_), Q8_HEAD) => false,
            _ => self.file.copy_weight(name, dst),
        }
    }
}

impl graph::WeightSource for GgufFile {
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> bool {
        self.tensor(name).is_some_and(|t| self.read_tensor_into(t, dst).is_ok())
    }
}
