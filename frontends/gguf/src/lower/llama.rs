//! `llama` with ternary weights (Llama3-8B-1.58, Falcon3-*-1.58bit; reference
//! README-more-models §3.3): the standard LLaMA block.
//!
//! ```text
//! x = token_embd[id]
//! per layer:  a = attn_norm(x) → Q/K/V (ternary) → NORM RoPE (adjacent pairs) → GQA attention
//!                 → attn_output;                           x = x + a
//!             f = ffn_norm(x) → silu(gate) · up → ffn_down;   x = x + f
//! logits = output · output_norm(x)     (`token_embd` when the file has no `output.weight`)
//! ```

use graph::{Graph, RopeStyle};

use crate::error::Result;
use crate::lower::blocks::{ArchBlocks, BlockNames, FfnAct, Lowerer};
use crate::lower::hparams::HParams;
use crate::lower::{head_weight, LowerOptions};
use crate::reader::GgufFile;

/// The blocks of this architecture.
pub const BLOCKS: ArchBlocks = ArchBlocks {
    rope: RopeStyle::Norm,
    sub_norms: false,
    act: FfnAct::Silu,
    scales: false,
    names: BlockNames { attn: "kqv_merged_cont", wo: "kqv_out", ffn_prod: "ffn_gate_par", ffn_down: "ffn_out" },
};

/// Lowers a `llama` file.
pub fn lower(file: &GgufFile, hp: &HParams, opts: LowerOptions) -> Result<Graph> {
    let base = if file.tensor("output.weight").is_some() { "output.weight" } else { "token_embd.weight" };
    let mut lw = Lowerer::new(file, &hp.arch);
    let head = head_weight(&mut lw, file, base, opts)?;
    lw.decoder(hp, &BLOCKS, &head)
}
