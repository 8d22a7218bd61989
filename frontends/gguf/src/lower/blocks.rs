//! Building blocks shared by the lowerings: weights, norms, linear layers, the attention
//! block and the feed-forward block. Each architecture module wires these in its own order.

use std::collections::HashMap;

use graph::{Dim, GraphBuilder, NodeId, Op, RopeStyle, Shape, Sym, TensorFact};

use crate::error::{Error, Result};
use crate::lower::hparams::HParams;
use crate::reader::GgufFile;

/// The FFN activation of an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnAct {
    /// `relu(gate)² · up` (`bitnet-b1.58`).
    ReluSqr,
    /// `silu(gate) · up` (`bitnet`, `llama`).
    Silu,
}

/// A graph builder bound to a model file, with the node-naming conventions of llama.cpp's
/// callback names (`attn_norm-3`, `Qcur-3`, …).
pub struct Lowerer<'f> {
    /// The graph under construction.
    pub b: GraphBuilder,
    file: &'f GgufFile,
    arch: String,
    weights: HashMap<String, NodeId>,
    quantized: HashMap<NodeId, NodeId>,
    quantized_k: HashMap<NodeId, NodeId>,
    /// `inp_seqs` (the sequence of each token row) and, once needed, `out_seqs` (of each
    /// output row): the per-row sequence ids F16 matmuls take.
    seqs: Option<NodeId>,
    out_rows: Option<NodeId>,
    out_seqs: Option<NodeId>,
}

impl<'f> Lowerer<'f> {
    /// Starts a lowering of `file` for `arch`.
    pub fn new(file: &'f GgufFile, arch: &str) -> Lowerer<'f> {
        Lowerer {
            b: GraphBuilder::new(),
            file,
            arch: arch.to_string(),
            weights: HashMap::new(),
            quantized: HashMap::new(),
            quantized_k: HashMap::new(),
            seqs: None,
            out_rows: None,
            out_seqs: None,
        }
    }

    /// Adds (once) the weight constant for tensor `name`, with the dtype and shape the file
    /// declares; a missing tensor is an error naming it.
    pub fn weight(&mut self, name: &str) -> Result<NodeId> {
        if let Some(&id) = self.weights.get(name) {
            return Ok(id);
        }
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| Error::tensor(name, format!("missing, required by architecture `{}`", self.arch)))?;
        let id = self.b.weight(name, TensorFact::new(t.dtype, Shape::fixed(&t.shape())))?;
        self.weights.insert(name.to_string(), id);
        Ok(id)
    }

    /// Registers a weight that is not in the file (its bytes come from the caller's weight
    /// source), e.g. the requantized LM head.
    pub fn virtual_weight(&mut self, name: &str, fact: TensorFact) -> Result<NodeId> {
        let id = self.b.weight(name, fact)?;
        self.weights.insert(name.to_string(), id);
        Ok(id)
    }

    /// `RMSNorm(x) ⊙ w` with `w` the tensor `weight`.
    pub fn rms_norm(&mut self, name: &str, x: NodeId, weight: &str, eps: f32) -> Result<NodeId> {
        let w = self.weight(weight)?;
        Ok(self.b.add(name, Op::RmsNorm { eps }, &[x, w])?)
    }

    /// `y = W·x` for the tensor `weight`, choosing the matmul by the weight's type. Ternary
    /// weights quantize `x` to per-token int8 once per input node (shared by Q, K and V).
    pub fn linear(&mut self, name: &str, x: NodeId, weight: &str) -> Result<NodeId> {
        let w = self.weight(weight)?;
        let dtype = self.b.fact(w).dtype;
        match dtype {
            graph::DType::I2S => {
                let xq = match self.quantized.get(&x) {
                    Some(&q) => q,
                    None => {
                        let qname = format!("{}.q8", self.b.name(x));
                        let q = self.b.add(qname, Op::QuantizeI8, &[x])?;
                        self.quantized.insert(x, q);
                        q
                    }
                };
                Ok(self.b.add(name, Op::MatMulI2S, &[w, xq])?)
            }
            graph::DType::TQ1_0 | graph::DType::TQ2_0 | graph::DType::Q6K => {
                let xq = match self.quantized_k.get(&x) {
                    Some(&q) => q,
                    None => {
                        let q = self.b.add(format!("{}.q8k", self.b.name(x)), Op::QuantizeQ8K, &[x])?;
                        self.quantized_k.insert(x, q);
                        q
                    }
                };
                Ok(self.b.add(name, Op::MatMulTQ, &[w, xq])?)
            }
            graph::DType::F16 => {
                let seqs = self.row_seqs(x)?;
                Ok(self.b.add(name, Op::MatMulF16, &[w, x, seqs])?)
            }
            graph::DType::Q8_0 | graph::DType::Q4_0 => Ok(self.b.add(name, Op::MatMulQ8_0, &[w, x])?),
            other => Err(Error::tensor(weight, format!("{other} weights are not supported as a linear layer yet"))),
        }
    }

    /// The sequence id of each row of `x`: `inp_seqs` for token rows, `out_seqs` (the
    /// sequences of the output rows, gathered once) for output rows.
    fn row_seqs(&mut self, x: NodeId) -> Result<NodeId> {
        let seqs = self.seqs.ok_or_else(|| Error::tensor("inp_seqs", "the decoder's inputs are not wired yet"))?;
        if self.b.fact(x).shape.dims().first() != Some(&Dim::Sym(Sym::Outputs)) {
            return Ok(seqs);
        }
        if let Some(s) = self.out_seqs {
            return Ok(s);
        }
        let rows = self.out_rows.ok_or_else(|| Error::tensor("inp_out_ids", "the decoder's inputs are not wired yet"))?;
        let s = self.b.add("out_seqs", Op::SelectOutputs, &[seqs, rows])?;
        self.out_seqs = Some(s);
        Ok(s)
    }

    /// `linear`, then the optional one-element `*.scale` tensor of the weight (arch `bitnet`
    /// files may carry `blk.N.attn_q.scale` etc.; absent in the others).
    pub fn linear_scaled(&mut self, name: &str, x: NodeId, weight: &str, scales: bool) -> Result<NodeId> {
        let y = self.linear(name, x, weight)?;
        let scale = weight.strip_suffix(".weight").map(|w| format!("{w}.scale"));
        match scale {
            Some(s) if scales && self.file.tensor(&s).is_some() => {
                let w = self.weight(&s)?;
                Ok(self.b.add(format!("{name} (scaled)"), Op::Scale, &[y, w])?)
            }
            _ => Ok(y),
        }
    }

    /// Self-attention of layer `l` on the normed input `x`: Q/K/V projections, RoPE, causal
    /// attention over the KV cache, optional sub-norm, output projection. Returns the output
    /// projection's node.
    pub fn attention(&mut self, hp: &HParams, l: usize, x: NodeId, pos: NodeId, a: &ArchBlocks) -> Result<NodeId> {
        let t = Dim::Sym(Sym::Tokens);
        let (h, hkv, hd) = (hp.n_head, hp.n_head_kv, hp.head_dim);
        let q = self.linear_scaled(&format!("Qcur-{l}"), x, &format!("blk.{l}.attn_q.weight"), a.scales)?;
        let k = self.linear_scaled(&format!("Kcur-{l}"), x, &format!("blk.{l}.attn_k.weight"), a.scales)?;
        let v = self.linear_scaled(&format!("Vcur-{l}"), x, &format!("blk.{l}.attn_v.weight"), a.scales)?;
        let q = self.b.add(format!("Qcur-{l} (reshaped)"), Op::Reshape { to: Shape::new([t, h.into(), hd.into()]) }, &[q])?;
        let k = self.b.add(format!("Kcur-{l} (reshaped)"), Op::Reshape { to: Shape::new([t, hkv.into(), hd.into()]) }, &[k])?;
        let v = self.b.add(format!("Vcur-{l} (reshaped)"), Op::Reshape { to: Shape::new([t, hkv.into(), hd.into()]) }, &[v])?;
        let rope_op = Op::Rope { n_rot: hp.n_rot, freq_base: hp.rope_base, style: a.rope };
        let q = self.b.add(format!("Qcur-{l} (rope)"), rope_op.clone(), &[q, pos])?;
        let k = self.b.add(format!("Kcur-{l} (rope)"), rope_op, &[k, pos])?;
        let attn = Op::Attention { layer: l, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
        let seqs = self.seqs.ok_or_else(|| Error::tensor("inp_seqs", "the decoder's inputs are not wired yet"))?;
        let mut o = self.b.add(format!("{}-{l}", a.names.attn), attn, &[q, k, v, pos, seqs])?;
        if a.sub_norms {
            o = self.rms_norm(&format!("attn_sub_norm-{l}"), o, &format!("blk.{l}.attn_sub_norm.weight"), hp.eps)?;
        }
        self.linear_scaled(&format!("{}-{l}", a.names.wo), o, &format!("blk.{l}.attn_output.weight"), a.scales)
    }

    /// Gated feed-forward of layer `l` on the normed input `x`: `act(gate)·up`, optional
    /// sub-norm (length n_ff, from its tensor), down projection. Returns the down projection.
    pub fn ffn(&mut self, hp: &HParams, l: usize, x: NodeId, a: &ArchBlocks) -> Result<NodeId> {
        let gate = self.linear_scaled(&format!("ffn_gate-{l}"), x, &format!("blk.{l}.ffn_gate.weight"), a.scales)?;
        let g = match a.act {
            FfnAct::ReluSqr => {
                let r = self.b.add(format!("ffn_relu-{l}"), Op::Relu, &[gate])?;
                self.b.add(format!("ffn_sqr(relu)-{l}"), Op::Sqr, &[r])?
            }
            FfnAct::Silu => self.b.add(format!("ffn_silu-{l}"), Op::Silu, &[gate])?,
        };
        let up = self.linear_scaled(&format!("ffn_up-{l}"), x, &format!("blk.{l}.ffn_up.weight"), a.scales)?;
        let mut m = self.b.add(format!("{}-{l}", a.names.ffn_prod), Op::Mul, &[g, up])?;
        if a.sub_norms {
            m = self.rms_norm(&format!("ffn_sub_norm-{l}"), m, &format!("blk.{l}.ffn_sub_norm.weight"), hp.eps)?;
        }
        self.linear_scaled(&format!("{}-{l}", a.names.ffn_down), m, &format!("blk.{l}.ffn_down.weight"), a.scales)
    }

    /// The whole decoder: embedding, `hp.n_layer` pre-norm blocks with residuals, final
    /// norm, LM head `head`; then the select-hoisting pass
    /// ([`graph::GraphBuilder::hoist_selects`]: the last layer's feed-forward block runs on
    /// the output rows only, as in llama.cpp). Returns the finished graph.
    pub fn decoder(mut self, hp: &HParams, a: &ArchBlocks, head: &str) -> Result<graph::Graph> {
        let tokens = self.b.add("inp_tokens", Op::InputTokens, &[])?;
        let pos = self.b.add("inp_pos", Op::InputPositions, &[])?;
        self.seqs = Some(self.b.add("inp_seqs", Op::InputSeqs, &[])?);
        let rows = self.b.add("inp_out_ids", Op::InputOutputRows, &[])?;
        self.out_rows = Some(rows);
        let embd = self.weight("token_embd.weight")?;
        let mut x = self.b.add("inp_embd", Op::Embedding, &[embd, tokens])?;
        for l in 0..hp.n_layer {
            self.b.set_layer(Some(l));
            let h = self.rms_norm(&format!("attn_norm-{l}"), x, &format!("blk.{l}.attn_norm.weight"), hp.eps)?;
            let h = self.attention(hp, l, h, pos, a)?;
            let ffn_inp = self.b.add(format!("ffn_inp-{l}"), Op::Add, &[h, x])?;
            let f = self.rms_norm(&format!("ffn_norm-{l}"), ffn_inp, &format!("blk.{l}.ffn_norm.weight"), hp.eps)?;
            let f = self.ffn(hp, l, f, a)?;
            x = self.b.add(format!("l_out-{l}"), Op::Add, &[f, ffn_inp])?;
        }
        self.b.set_layer(None);
        let out = self.b.add("result_rows", Op::SelectOutputs, &[x, rows])?;
        let z = self.rms_norm("result_norm", out, "output_norm.weight", hp.eps)?;
        let logits = self.linear("result_output", z, head)?;
        self.b.output(logits);
        self.b.hoist_selects()?;
        Ok(self.b.finish()?)
    }
}

/// llama.cpp's node names where the architectures differ (so that our nodes carry the names
/// of bitnet.cpp's tensor dumps).
#[derive(Clone, Copy, Debug)]
pub struct BlockNames {
    /// Attention output, heads concatenated.
    pub attn: &'static str,
    /// Output projection.
    pub wo: &'static str,
    /// `act(gate) · up`.
    pub ffn_prod: &'static str,
    /// Down projection.
    pub ffn_down: &'static str,
}

/// What distinguishes one architecture's blocks from another's.
#[derive(Clone, Copy, Debug)]
pub struct ArchBlocks {
    /// RoPE pairing.
    pub rope: RopeStyle,
    /// Whether `attn_sub_norm` / `ffn_sub_norm` exist.
    pub sub_norms: bool,
    /// FFN activation.
    pub act: FfnAct,
    /// Whether optional per-matrix `*.scale` tensors are honoured.
    pub scales: bool,
    /// Node names.
    pub names: BlockNames,
}
