//! The name table: which entry of a bitnet.cpp tensor dump (`index.json`, reference README
//! §4.4) corresponds to each of our nodes. Dump names repeat (`norm-3` precedes four norm
//! multiplies, `Qcur-3` is both a MUL_MAT and a ROPE), so an entry is (name, op, occurrence
//! of that pair within one forward pass).

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

/// The dump entry our node `node` corresponds to, or `None` when bitnet.cpp has no such
/// tensor (our `.q8` activation nodes, which it fuses into the matmul; weights; inputs).
///
/// Our RmsNorm includes its weight multiply, so it maps to the MUL that follows ggml's
/// RMS_NORM; our `(rope)` nodes map to the ROPE entries named like the matmul.
pub fn reference_entry(node: &str) -> Option<RefEntry> {
    let e = |name: &str, op: &'static str| Some(RefEntry { name: name.to_string(), op, occurrence: 0 });
    match node {
        "inp_embd" => return e("inp_embd", "GET_ROWS"),
        "result_norm" => return e("result_norm", "MUL"),
        "result_output" => return e("result_output", "MUL_MAT"),
        _ => {}
    }
    if let Some(base) = node.strip_suffix(" (rope)") {
        return e(base, "ROPE");
    }
    if node.ends_with(" (reshaped)") {
        return if node.starts_with("Vcur") { None } else { e(node, "RESHAPE") };
    }
    let (stem, layer) = node.rsplit_once('-')?;
    layer.parse::<usize>().ok()?;
    let op = match stem {
        "attn_norm" | "attn_sub_norm" | "ffn_norm" | "ffn_sub_norm" | "ffn_out" => "MUL",
        "Qcur" | "Kcur" | "Vcur" | "attn_o_out" | "ffn_gate" | "ffn_up" | "ffn_down" => "MUL_MAT",
        "kqv_out" => "CONT",
        "ffn_inp" | "l_out" => "ADD",
        "ffn_relu" => "RELU",
        "ffn_sqr(relu)" => "SQR",
        "ffn_silu" => "SILU",
        _ => return None,
    };
    e(node, op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries() {
        assert_eq!(reference_entry("attn_norm-3").unwrap().op, "MUL");
        assert_eq!(reference_entry("Qcur-1 (rope)").unwrap(), RefEntry { name: "Qcur-1".into(), op: "ROPE", occurrence: 0 });
        assert_eq!(reference_entry("Qcur-1").unwrap().op, "MUL_MAT");
        assert_eq!(reference_entry("ffn_sqr(relu)-0").unwrap().op, "SQR");
        assert_eq!(reference_entry("attn_norm-0.q8"), None);
        assert_eq!(reference_entry("Vcur-0 (reshaped)"), None);
        assert_eq!(reference_entry("blk.0.attn_q.weight"), None);
    }
}
