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

/// Lowers a file into a verified graph, by its architecture.
pub fn lower(file: &GgufFile) -> Result<Model> {
    let arch = architecture(file)?;
    let (hparams, graph) = match arch {
        "bitnet-b1.58" | "bitnet-25" => {
            let hp = HParams::read(file, arch, 500000.0)?;
            check_ternary_widths(file, &hp)?;
            let g = bitnet_b158::lower(file, &hp)?;
            (hp, g)
        }
        "bitnet" => {
            let hp = HParams::read(file, arch, 10000.0)?;
            check_ternary_widths(file, &hp)?;
            let g = bitnet::lower(file, &hp)?;
            (hp, g)
        }
        "llama" => {
            let hp = HParams::read(file, arch, 10000.0)?;
            check_ternary_widths(file, &hp)?;
            let g = llama::lower(file, &hp)?;
            (hp, g)
        }
        other => return Err(ErrorKind::UnsupportedArch { arch: other.to_string(), supported: SUPPORTED_ARCHS.join(", ") }.into()),
    };
    Ok(Model { hparams, graph })
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

impl graph::WeightSource for GgufFile {
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> bool {
        self.tensor(name).is_some_and(|t| self.read_tensor_into(t, dst).is_ok())
    }
}
