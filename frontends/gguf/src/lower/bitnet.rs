//! `bitnet`: 1bitLLM's bitnet_b1_58-large / -3B (reference README-more-models §3.2).
//!
//! ```text
//! x = token_embd[id]
//! per layer:  a = attn_norm(x) → Q/K/V (ternary, optional *.scale) → NEOX RoPE → attention
//!                 → attn_sub_norm → attn_output;          x = x + a
//!             f = ffn_norm(x) → silu(gate) · up → ffn_sub_norm → ffn_down;   x = x + f
//! logits = token_embd · output_norm(x)       (tied head; `output.weight` is never read)
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
    act: FfnAct::Silu,
    scales: true,
    names: BlockNames { attn: "kqv_out", wo: "attn_o_out", ffn_prod: "ffn_sub_out", ffn_down: "ffn_down" },
};

/// Lowers a `bitnet` file.
pub fn lower(file: &GgufFile, hp: &HParams, opts: LowerOptions) -> Result<Graph> {
    let mut lw = Lowerer::new(file, &hp.arch);
    let head = head_weight(&mut lw, file, "token_embd.weight", opts)?;
    lw.decoder(hp, &BLOCKS, &head)
}
