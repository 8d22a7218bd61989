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
}

impl<'f> Lowerer<'f> {
    /// Starts a lowering of `file` for `arch`.
    pub fn new(file: &'f GgufFile, arch: &str) -> Lowerer<'f> {
        Lowerer { b: GraphBuilder::new(), file, arch: arch.to_string(), weights: HashMap::new(), quantized: HashMap::new() }
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
            graph::DType::F16 => Ok(self.b.add(name, Op::MatMulF16, &[w, x])?),
            graph::DType::Q8_0 => Ok(self.b.add(name, Op::MatMulQ8_0, &[w, x])?),
            other => Err(Error::tensor(weight, format!("{other} weights are not supported as a linear layer yet"))),
        }
    }

    /// Self-attention of layer `l` on the normed input `x`: Q/K/V projections, RoPE, causal
    /// attention over the KV cache, optional sub-norm, output projection. Returns the output
    /// projection's node (`attn_o_out-l`).
    pub fn attention(
        &mut self,
        hp: &HParams,
        l: usize,
        x: NodeId,
        pos: NodeId,
        rope: RopeStyle,
        sub_norm: bool,
    ) -> Result<NodeId> {
        let t = Dim::Sym(Sym::Tokens);
        let (h, hkv, hd) = (hp.n_head, hp.n_head_kv, hp.head_dim);
        let q = self.linear(&format!("Qcur-{l}"), x, &format!("blk.{l}.attn_q.weight"))?;
        let k = self.linear(&format!("Kcur-{l}"), x, &format!("blk.{l}.attn_k.weight"))?;
        let v = self.linear(&format!("Vcur-{l}"), x, &format!("blk.{l}.attn_v.weight"))?;
        let q = self.b.add(format!("Qcur-{l} (reshaped)"), Op::Reshape { to: Shape::new([t, h.into(), hd.into()]) }, &[q])?;
        let k = self.b.add(format!("Kcur-{l} (reshaped)"), Op::Reshape { to: Shape::new([t, hkv.into(), hd.into()]) }, &[k])?;
        let v = self.b.add(format!("Vcur-{l} (reshaped)"), Op::Reshape { to: Shape::new([t, hkv.into(), hd.into()]) }, &[v])?;
        let rope_op = Op::Rope { n_rot: hp.n_rot, freq_base: hp.rope_base, style: rope };
        let q = self.b.add(format!("Qcur-{l} (rope)"), rope_op.clone(), &[q, pos])?;
        let k = self.b.add(format!("Kcur-{l} (rope)"), rope_op, &[k, pos])?;
        let attn = Op::Attention { layer: l, n_head: h, n_head_kv: hkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
        let mut o = self.b.add(format!("kqv_out-{l}"), attn, &[q, k, v, pos])?;
        if sub_norm {
            o = self.rms_norm(&format!("attn_sub_norm-{l}"), o, &format!("blk.{l}.attn_sub_norm.weight"), hp.eps)?;
        }
        self.linear(&format!("attn_o_out-{l}"), o, &format!("blk.{l}.attn_output.weight"))
    }

    /// Gated feed-forward of layer `l` on the normed input `x`: `act(gate)·up`, optional
    /// sub-norm (length n_ff, from its tensor), down projection. Returns `ffn_down-l`.
    pub fn ffn(&mut self, hp: &HParams, l: usize, x: NodeId, act: FfnAct, sub_norm: bool) -> Result<NodeId> {
        let gate = self.linear(&format!("ffn_gate-{l}"), x, &format!("blk.{l}.ffn_gate.weight"))?;
        let g = match act {
            FfnAct::ReluSqr => {
                let r = self.b.add(format!("ffn_relu-{l}"), Op::Relu, &[gate])?;
                self.b.add(format!("ffn_sqr(relu)-{l}"), Op::Sqr, &[r])?
            }
            FfnAct::Silu => self.b.add(format!("ffn_silu-{l}"), Op::Silu, &[gate])?,
        };
        let up = self.linear(&format!("ffn_up-{l}"), x, &format!("blk.{l}.ffn_up.weight"))?;
        let mut m = self.b.add(format!("ffn_out-{l}"), Op::Mul, &[g, up])?;
        if sub_norm {
            m = self.rms_norm(&format!("ffn_sub_norm-{l}"), m, &format!("blk.{l}.ffn_sub_norm.weight"), hp.eps)?;
        }
        self.linear(&format!("ffn_down-{l}"), m, &format!("blk.{l}.ffn_down.weight"))
    }
}
