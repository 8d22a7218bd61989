//! The name table: which entry of a bitnet.cpp tensor dump (`index.json`, reference README
//! §4.4) corresponds to each of our nodes. Our nodes carry llama.cpp's callback names for
//! their architecture, and dump names repeat (`norm-3` precedes four norm multiplies,
//! `Qcur-3` is both a MUL_MAT and a ROPE), so an entry is (name, ggml op, occurrence), with
//! the ggml op derived from our op.

use graph::Op;

/// A reference-dump entry: ggml node name, ggml op, occurrence (0-based) of the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefEntry {
    /// ggml node name, e.g. `attn_norm-0`.
    pub name: String,
    /// ggml op, e.g. `MUL`.
    pub op: &'static str,
    /// Occurrence of (name, op) within one pass.
    pub occurrence: usize,
}

/// The dump entry our node (`name`, `op`) corresponds to, or `None` when bitnet.cpp has no
/// such tensor: our `.q8` activation nodes (fused into its matmuls), weights, inputs, the
/// row selection, and the V reshape (ggml transposes V instead).
///
/// Our RmsNorm includes its weight multiply, so it maps to the MUL that follows ggml's
/// RMS_NORM; our `(rope)` nodes map to the ROPE entries named like the matmul; attention
/// maps to the CONT that concatenates the heads.
pub fn reference_entry(name: &str, op: &Op) -> Option<RefEntry> {
    let e = |name: &str, op: &'static str| Some(RefEntry { name: name.to_string(), op, occurrence: 0 });
    match op {
        Op::InputTokens
        | Op::InputPositions
        | Op::InputSeqs
        | Op::InputOutputRows
        | Op::Weight { .. }
        | Op::QuantizeI8
        | Op::QuantizeQ8K
        | Op::SelectOutputs
        | Op::Scale => None,
        Op::Reshape { .. } if name.starts_with("Vcur") => None,
        Op::Reshape { .. } => e(name, "RESHAPE"),
        Op::Rope { .. } => e(name.strip_suffix(" (rope)").unwrap_or(name), "ROPE"),
        Op::Embedding => e(name, "GET_ROWS"),
        Op::RmsNorm { .. } | Op::Mul => e(name, "MUL"),
        Op::MatMulI2S | Op::MatMulF16 | Op::MatMulQ8_0 | Op::MatMulTQ => e(name, "MUL_MAT"),
        Op::Attention { .. } => e(name, "CONT"),
        Op::Add => e(name, "ADD"),
        Op::Relu => e(name, "RELU"),
        Op::Sqr => e(name, "SQR"),
        Op::Silu => e(name, "SILU"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries() {
        assert_eq!(reference_entry("attn_norm-3", &Op::RmsNorm { eps: 1e-5 }).unwrap().op, "MUL");
        let rope = Op::Rope { n_rot: 64, freq_base: 1e4, style: graph::RopeStyle::Neox };
        assert_eq!(
            reference_entry("Qcur-1 (rope)", &rope).unwrap(),
            RefEntry { name: "Qcur-1".into(), op: "ROPE", occurrence: 0 }
        );
        assert_eq!(reference_entry("Qcur-1", &Op::MatMulI2S).unwrap().op, "MUL_MAT");
        assert_eq!(reference_entry("kqv_out-0", &Op::MatMulI2S).unwrap().op, "MUL_MAT");
        assert_eq!(reference_entry("ffn_sqr(relu)-0", &Op::Sqr).unwrap().op, "SQR");
        assert_eq!(reference_entry("attn_norm-0.q8", &Op::QuantizeI8), None);
        assert_eq!(reference_entry("Vcur-0 (reshaped)", &Op::Reshape { to: graph::Shape::default() }), None);
    }
}
