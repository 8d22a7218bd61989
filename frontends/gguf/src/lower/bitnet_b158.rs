//! `bitnet-b1.58` (alias `bitnet-25`): Microsoft's BitNet b1.58 2B-4T (docs/format.md §4.1).
//!
//! ```text
//! x = token_embd[id]
//! per layer:  a = attn_norm(x) → Q/K/V (ternary) → NEOX RoPE → GQA attention
//!                 → attn_sub_norm → attn_output;          x = x + a
//!             f = ffn_norm(x) → relu(gate)² · up → ffn_sub_norm → ffn_down;   x = x + f
//! logits = token_embd · output_norm(x)       (tied head; `output.weight` is ignored)
//! ```

use graph::{Graph, Op, RopeStyle};

use crate::error::Result;
use crate::lower::blocks::{FfnAct, Lowerer};
use crate::lower::hparams::HParams;
use crate::reader::GgufFile;

/// Lowers a `bitnet-b1.58` file.
pub fn lower(file: &GgufFile, hp: &HParams) -> Result<Graph> {
    let mut lw = Lowerer::new(file, &hp.arch);
    let tokens = lw.b.add("inp_tokens", Op::InputTokens, &[])?;
    let pos = lw.b.add("inp_pos", Op::InputPositions, &[])?;
    let embd = lw.weight("token_embd.weight")?;
    let mut x = lw.b.add("inp_embd", Op::Embedding, &[embd, tokens])?;
    for l in 0..hp.n_layer {
        let a = lw.rms_norm(&format!("attn_norm-{l}"), x, &format!("blk.{l}.attn_norm.weight"), hp.eps)?;
        let a = lw.attention(hp, l, a, pos, RopeStyle::Neox, true)?;
        let ffn_inp = lw.b.add(format!("ffn_inp-{l}"), Op::Add, &[a, x])?;
        let f = lw.rms_norm(&format!("ffn_norm-{l}"), ffn_inp, &format!("blk.{l}.ffn_norm.weight"), hp.eps)?;
        let f = lw.ffn(hp, l, f, FfnAct::ReluSqr, true)?;
        x = lw.b.add(format!("l_out-{l}"), Op::Add, &[f, ffn_inp])?;
    }
    let rows = lw.b.add("result_rows", Op::SelectOutputs, &[x])?;
    let z = lw.rms_norm("result_norm", rows, "output_norm.weight", hp.eps)?;
    let logits = lw.linear("result_output", z, "token_embd.weight")?;
    lw.b.output(logits);
    Ok(lw.b.finish()?)
}
