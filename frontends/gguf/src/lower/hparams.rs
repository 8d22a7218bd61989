//! Typed hyperparameters read from `{arch}.*` metadata, validated with clear errors.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::reader::GgufFile;

/// Hyperparameters of a transformer of the supported families.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HParams {
    /// `general.architecture`.
    pub arch: String,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Training context length.
    pub n_ctx_train: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// KV heads.
    pub n_head_kv: usize,
    /// Head dimension (`n_embd / n_head`).
    pub head_dim: usize,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE frequency base.
    pub rope_base: f32,
}

/// Upper bound for any width or count read from metadata (keeps arithmetic sane).
const MAX_DIM: i128 = crate::reader::MAX_DIM as i128;

impl HParams {
    /// Reads and validates the hyperparameters of `arch` from `file`.
    pub fn read(file: &GgufFile, arch: &str, default_rope_base: f32) -> Result<HParams> {
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str, required: bool| -> Result<Option<usize>> {
            let full = key(k);
            match file.get(&full) {
                None if required => Err(Error::metadata(&full, "missing required key")),
                None => Ok(None),
                Some(v) => {
                    let i = v
                        .as_int()
                        .ok_or_else(|| Error::metadata(&full, format!("expected an integer, found {}", v.value_type().name())))?;
                    if !(1..=MAX_DIM).contains(&i) {
                        return Err(Error::metadata(&full, format!("{i} is out of range 1..={MAX_DIM}")));
                    }
                    Ok(Some(i as usize))
                }
            }
        };
        let float = |k: &str, default: Option<f32>| -> Result<f32> {
            let full = key(k);
            match file.get(&full) {
                None => default.ok_or_else(|| Error::metadata(&full, "missing required key")),
                Some(v) => {
                    let f = v
                        .as_f64()
                        .ok_or_else(|| Error::metadata(&full, format!("expected a float, found {}", v.value_type().name())))?;
                    if !(f.is_finite() && f > 0.0) {
                        return Err(Error::metadata(&full, format!("{f} is not a positive finite number")));
                    }
                    Ok(f as f32)
                }
            }
        };
        let n_embd = int("embedding_length", true)?.unwrap_or(0);
        let n_layer = int("block_count", true)?.unwrap_or(0);
        let n_ff = int("feed_forward_length", true)?.unwrap_or(0);
        let n_head = int("attention.head_count", true)?.unwrap_or(0);
        let n_head_kv = int("attention.head_count_kv", false)?.unwrap_or(n_head);
        let n_ctx_train = int("context_length", true)?.unwrap_or(0);
        if n_layer as u64 > crate::reader::MAX_LAYERS {
            return Err(Error::metadata(key("block_count"), format!("{n_layer} layers is not plausible")));
        }
        if n_embd % n_head != 0 {
            return Err(Error::metadata(
                key("attention.head_count"),
                format!("{n_head} heads do not divide the embedding width {n_embd}"),
            ));
        }
        if n_head % n_head_kv != 0 {
            return Err(Error::metadata(
                key("attention.head_count_kv"),
                format!("{n_head_kv} KV heads do not divide {n_head} heads"),
            ));
        }
        let head_dim = n_embd / n_head;
        let n_rot = int("rope.dimension_count", false)?.unwrap_or(head_dim);
        if n_rot != head_dim {
            return Err(Error::metadata(
                key("rope.dimension_count"),
                format!("{n_rot} differs from the head dimension {head_dim} (bitnet.cpp requires them equal)"),
            ));
        }
        if n_rot % 2 != 0 {
            return Err(Error::metadata(key("rope.dimension_count"), format!("{n_rot} is odd")));
        }
        if let Some(f) = file.get(&key("rope.scaling.factor")).and_then(|v| v.as_f64()) {
            let kind = file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()).unwrap_or("linear");
            if f != 1.0 && kind != "none" {
                return Err(Error::metadata(key("rope.scaling.factor"), format!("{kind} RoPE scaling by {f} is not supported")));
            }
        }
        let eps = float("attention.layer_norm_rms_epsilon", None)?;
        let rope_base = float("rope.freq_base", Some(default_rope_base))?;
        let emb = file
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::tensor("token_embd.weight", "missing, required by every architecture"))?;
        let n_vocab = *emb.shape().first().unwrap_or(&0);
        if let Some(v) = int("vocab_size", false)? {
            if v != n_vocab {
                return Err(Error::metadata(key("vocab_size"), format!("{v} differs from token_embd's {n_vocab} rows")));
            }
        }
        Ok(HParams {
            arch: arch.to_string(),
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            eps,
            rope_base,
        })
    }
}
