//! `bitnet-b1.58` (alias `bitnet-25`): Microsoft's BitNet b1.58 2B-4T (docs/format.md §4.1).
//!
//! ```text
//! x = token_embd[id]
//! per layer:  a = attn_norm(x) → Q/K/V (ternary) → NEOX RoPE → GQA attention
//!                 → attn_sub_norm → attn_output;          x = x + a
//!             f = ffn_norm(x) → relu(gate)² · up → ffn_sub_norm → ffn_down;   x = x + f
//! logits = token_embd · output_norm(x)       (tied head; `output.weight` is ignored)
//! ```

use graph::{Graph, RopeStyle};

use crate::error::Result;
use crate::lower::blocks::{ArchBlocks, BlockNames, FfnAct, Lowerer};
use crate::lower::hparams::HParams;
use crate::lower::{head_weight, LowerOptions};
use crate::reader::GgufFile;

/// The blocks of this architecture.
pub const BLOCKS: ArchBlocks = ArchBlocks {
    rope: RopeStyle::Neox,
    sub_norms: true,
    act: FfnAct::ReluSqr,
    scales: false,
    names: BlockNames { attn: "kqv_out", wo: "attn_o_out", ffn_prod: "ffn_out", ffn_down: "ffn_down" },
};

/// Lowers a `bitnet-b1.58` file.
pub fn lower(file: &GgufFile, hp: &HParams, opts: LowerOptions) -> Result<Graph> {
    let mut lw = Lowerer::new(file, &hp.arch);
    let head = head_weight(&mut lw, file, "token_embd.weight", opts)?;
    lw.decoder(hp, &BLOCKS, &head)
}
