//! The closed set of ops, with shape inference and per-op tolerances.

use serde::Serialize;

use crate::shape::{Dim, Shape, Sym, TensorFact};
use crate::DType;

/// How a rotary embedding pairs dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    /// GPT-NeoX: dimension i is rotated with i + n_rot/2 (`bitnet*` architectures).
    Neox,
    /// Original LLaMA: adjacent pairs (2i, 2i+1) (`llama` architecture files).
    Norm,
}

/// The op kinds, listed once: [`OpKind`], [`OpKind::ALL`] and [`OpKind::name`] are generated
/// from this list, and [`Op::kind`] is an exhaustive match, so a new [`Op`] variant does not
/// compile until it has a kind here — and then every consumer that matches on kinds
/// exhaustively (the op-test case generator) does not compile until it handles it.
///
/// `with_op_kinds!(my_macro, ARGS…)` calls `my_macro! { [ARGS…] Kind1, Kind2, … }` with the
/// whole list, so other crates can generate items per kind (ops-tests makes one `#[test]`
/// per kind).
#[macro_export]
macro_rules! with_op_kinds {
    ($m:path $(, $($arg:tt)*)?) => {
        $m! {
            [$($($arg)*)?]
            InputTokens, InputPositions, InputSeqs, InputOutputRows, Weight, Embedding, RmsNorm, QuantizeI8, MatMulI2S,
            MatMulF16, MatMulQ8_0, QuantizeQ8K, MatMulTQ, Reshape, Rope, Attention, Scale, Add, Mul, Relu, Sqr, Silu,
            SelectOutputs
        }
    };
}

macro_rules! define_op_kinds {
    ([] $($k:ident),* $(,)?) => {
        /// The kind of an [`Op`], without its parameters.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[allow(missing_docs)]
        pub enum OpKind { $($k),* }

        impl OpKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$k),*];

            /// The kind's name (`RmsNorm`, `MatMulI2S`, …).
            pub fn name(self) -> &'static str {
                match self { $(OpKind::$k => stringify!($k)),* }
            }
        }
    };
}

with_op_kinds!(define_op_kinds);

impl OpKind {
    /// Whether ops of this kind compute nothing: graph inputs and weight constants (the
    /// executor fills or binds them) and views ([`Op::Reshape`], which aliases its input).
    /// Every other kind is run by a backend kernel.
    pub fn has_kernel(self) -> bool {
        !matches!(
            self,
            OpKind::InputTokens
                | OpKind::InputPositions
                | OpKind::InputSeqs
                | OpKind::InputOutputRows
                | OpKind::Weight
                | OpKind::Reshape
        )
    }
}

/// One operation of the graph.
///
/// ## Design
/// The set is closed: every op a supported architecture needs is listed here with its input
/// contract, and [`Op::infer`] computes the output fact from the input facts, so a graph
/// that builds is shape-correct by construction. Numerics are *defined* by the scalar
/// backend (see its docs); this enum only states what each op computes and how closely
/// another backend must agree ([`Op::tolerance`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Op {
    /// Token ids of this step: `[T]` i32 (graph input).
    InputTokens,
    /// Positions of this step's tokens: `[T]` i32 (graph input).
    InputPositions,
    /// The sequence (KV-cache slot) of each of this step's tokens: `[T]` i32 (graph input).
    /// Tokens of several sequences share one step; each attends to its own slot only.
    InputSeqs,
    /// The token rows whose logits this step produces: `[O]` i32 indices into `T` (graph
    /// input), in increasing order.
    InputOutputRows,
    /// A weight constant borrowed from the model file, by name.
    Weight {
        /// The tensor's name in the model file.
        name: String,
        /// Its dtype and shape.
        fact: TensorFact,
    },
    /// Row lookup: `table [V, D]`, `ids [T]` → `[T, D]` f32 (dequantized rows).
    Embedding,
    /// RMSNorm then elementwise weight: `x [.., D]` f32, `w [D]` f32 → `[.., D]`.
    RmsNorm {
        /// Epsilon added to the mean square.
        eps: f32,
    },
    /// Per-token int8 activation quantization: `x [T, K]` f32 → `[T, K]` q8_tok.
    QuantizeI8,
    /// Ternary matmul: `w [M, K]` i2_s, `x [T, K]` q8_tok → `[T, M]` f32.
    MatMulI2S,
    /// F16-weight matmul: `w [M, K]` f16, `x [R, K]` f32, `seqs [R]` i32 (the sequence of
    /// each row) → `[R, M]` f32. A row that is the only row of its sequence in `x` is
    /// rounded to f16 and takes `dot16`; rows of a sequence with two or more rows keep f32
    /// and take `dotblas` (bitnet.cpp's one-column rule, ../shared/docs/format.md §4.4,
    /// counted per sequence so that a row's bits do not depend on its neighbours:
    /// ../shared/docs/batching.md; see [`rows_per_seq`]).
    MatMulF16,
    /// Block-quantized-weight matmul: `w [M, K]` q8_0 or q4_0, `x [T, K]` f32 → `[T, M]`
    /// f32; the activation is quantized to Q8_0 blocks of 32 first (../shared/docs/format.md §4.6.2),
    /// in every batch mode.
    MatMulQ8_0,
    /// Per-256-block int8 activation quantization for TQ weights: `x [T, K]` f32 →
    /// `[T, K]` q8_k (reference README-more-models §4.2).
    QuantizeQ8K,
    /// Block matmul against Q8_K activations: `w [M, K]` tq2_0, tq1_0 (ternary) or q6_k (a
    /// Q6_K LM head), `x [T, K]` q8_k → `[T, M]` f32.
    MatMulTQ,
    /// Reinterprets the input with another shape of the same element count.
    Reshape {
        /// The new shape.
        to: Shape,
    },
    /// Rotary position embedding: `x [T, H, hd]` f32, `pos [T]` i32 → `[T, H, hd]`.
    Rope {
        /// Rotated dimensions per head.
        n_rot: usize,
        /// Frequency base.
        freq_base: f32,
        /// Pairing style.
        style: RopeStyle,
    },
    /// Causal attention over the layer's f16 KV cache: `q [T, H, hd]`, `k [T, Hkv, hd]`,
    /// `v [T, Hkv, hd]` f32, `pos [T]`, `seqs [T]` i32 → `[T, H·hd]`. Writes f16(k), f16(v)
    /// at each token's (sequence slot, position), then each token attends to the cached
    /// positions ≤ its own in its own sequence's slot. P·V takes the one-column form
    /// (P rounded to f16, `dot16`) for a token that is its sequence's only token in the
    /// step, else f32 P and `dotblas` (format.md §4.4, per sequence: [`rows_per_seq`]).
    Attention {
        /// Layer index (selects the KV cache slot).
        layer: usize,
        /// Query heads.
        n_head: usize,
        /// KV heads (divides `n_head`).
        n_head_kv: usize,
        /// Head dimension.
        head_dim: usize,
        /// Score scale (`1/sqrt(head_dim)`).
        scale: f32,
    },
    /// Multiplies every element by a one-element f32 weight: `x [..]`, `s [1]` → `[..]`
    /// (the optional per-matrix `*.scale` tensors of arch `bitnet`).
    Scale,
    /// Elementwise sum of two equal shapes.
    Add,
    /// Elementwise product of two equal shapes.
    Mul,
    /// `max(x, 0)`.
    Relu,
    /// `x·x`.
    Sqr,
    /// `x / (1 + exp(−x))`.
    Silu,
    /// Gathers the rows whose logits are requested: `x [T, …]` of any dtype, `rows [O]` i32
    /// (token indices) → `[O, …]`.
    SelectOutputs,
}

/// How closely a backend must match the scalar reference on an op.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Tolerance {
    /// Bit for bit (integer results, data movement).
    Exact,
    /// `|a − b| ≤ abs + rel·|b|` element-wise.
    Close {
        /// Absolute part.
        abs: f32,
        /// Relative part.
        rel: f32,
    },
}

/// Why an op rejects its inputs.
#[derive(Debug, Clone)]
pub(crate) enum InferError {
    Arity(usize),
    Shape { input: usize, what: String, expected: Shape, got: Shape },
    DType { input: usize, expected: String, got: DType },
    Other(String),
}

fn want_dtype(inputs: &[&TensorFact], i: usize, ok: &[DType]) -> Result<(), InferError> {
    if ok.contains(&inputs[i].dtype) {
        Ok(())
    } else {
        Err(InferError::DType {
            input: i,
            expected: ok.iter().map(|d| d.name()).collect::<Vec<_>>().join("|"),
            got: inputs[i].dtype,
        })
    }
}

fn want_rank(inputs: &[&TensorFact], i: usize, rank: usize, expected: Shape) -> Result<(), InferError> {
    if inputs[i].shape.rank() == rank {
        Ok(())
    } else {
        Err(InferError::Shape { input: i, what: "rank".into(), expected, got: inputs[i].shape.clone() })
    }
}

fn want_shape(inputs: &[&TensorFact], i: usize, expected: Shape) -> Result<(), InferError> {
    if inputs[i].shape == expected {
        Ok(())
    } else {
        Err(InferError::Shape { input: i, what: String::new(), expected, got: inputs[i].shape.clone() })
    }
}

const FLOAT_TABLES: &[DType] = &[DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q6K];

impl Op {
    /// The op's kind (exhaustive: a new variant must be given a kind in [`with_op_kinds!`]).
    pub fn kind(&self) -> OpKind {
        match self {
            Op::InputTokens => OpKind::InputTokens,
            Op::InputPositions => OpKind::InputPositions,
            Op::InputSeqs => OpKind::InputSeqs,
            Op::InputOutputRows => OpKind::InputOutputRows,
            Op::Weight { .. } => OpKind::Weight,
            Op::Embedding => OpKind::Embedding,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::QuantizeI8 => OpKind::QuantizeI8,
            Op::MatMulI2S => OpKind::MatMulI2S,
            Op::MatMulF16 => OpKind::MatMulF16,
            Op::MatMulQ8_0 => OpKind::MatMulQ8_0,
            Op::QuantizeQ8K => OpKind::QuantizeQ8K,
            Op::MatMulTQ => OpKind::MatMulTQ,
            Op::Reshape { .. } => OpKind::Reshape,
            Op::Rope { .. } => OpKind::Rope,
            Op::Attention { .. } => OpKind::Attention,
            Op::Scale => OpKind::Scale,
            Op::Add => OpKind::Add,
            Op::Mul => OpKind::Mul,
            Op::Relu => OpKind::Relu,
            Op::Sqr => OpKind::Sqr,
            Op::Silu => OpKind::Silu,
            Op::SelectOutputs => OpKind::SelectOutputs,
        }
    }

    /// The op's name (`RmsNorm`, `MatMulI2S`, …).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// One-line description with parameters, for dumps.
    pub fn info(&self) -> String {
        match self {
            Op::RmsNorm { eps } => format!("RmsNorm(eps={eps:e})"),
            Op::Rope { n_rot, freq_base, style } => format!("Rope({style:?}, n_rot={n_rot}, base={freq_base})"),
            Op::Attention { layer, n_head, n_head_kv, head_dim, .. } => {
                format!("Attention(layer={layer}, heads={n_head}/{n_head_kv}, hd={head_dim})")
            }
            Op::Reshape { to } => format!("Reshape({to})"),
            other => other.name().to_string(),
        }
    }

    /// Whether the op has no computation (graph inputs and constants).
    pub fn is_source(&self) -> bool {
        self.arity() == 0
    }

    /// For ops that compute each output row from the same row of some inputs alone (row-wise
    /// ops), the argument slots that are indexed by row; `None` for every other op. Selecting
    /// rows of the output equals computing the op on the same rows of those inputs, bit for
    /// bit, which is what the select-hoisting pass relies on.
    pub fn row_inputs(&self) -> Option<&'static [usize]> {
        match self {
            Op::RmsNorm { .. } | Op::QuantizeI8 | Op::QuantizeQ8K | Op::Scale | Op::Relu | Op::Sqr | Op::Silu => Some(&[0]),
            Op::MatMulI2S | Op::MatMulQ8_0 | Op::MatMulTQ => Some(&[1]),
            Op::MatMulF16 => Some(&[1, 2]),
            Op::Add | Op::Mul => Some(&[0, 1]),
            _ => None,
        }
    }

    /// How closely another backend must reproduce the scalar reference's output.
    ///
    /// Integer and data-movement results are exact. Float ops allow the differences that a
    /// different summation order or vector exp produce, relative to the magnitude of the
    /// value; the numbers are the op's own, never loosened by a caller.
    pub fn tolerance(&self) -> Tolerance {
        match self {
            Op::InputTokens
            | Op::InputPositions
            | Op::InputSeqs
            | Op::InputOutputRows
            | Op::Weight { .. }
            | Op::Embedding
            | Op::QuantizeI8
            | Op::QuantizeQ8K
            | Op::Reshape { .. }
            | Op::SelectOutputs
            | Op::Scale
            | Op::Add
            | Op::Mul
            | Op::Relu
            | Op::Sqr => Tolerance::Exact,
            // Integer dot product; the float epilogue is three f32 ops in a fixed order.
            Op::MatMulI2S => Tolerance::Exact,
            // Integer lane sums, then f32 multiply-adds in a fixed order.
            Op::MatMulTQ => Tolerance::Close { abs: 1e-5, rel: 1e-5 },
            Op::RmsNorm { .. } => Tolerance::Close { abs: 1e-6, rel: 1e-5 },
            Op::Rope { .. } => Tolerance::Close { abs: 1e-6, rel: 1e-5 },
            Op::Silu => Tolerance::Close { abs: 1e-6, rel: 1e-5 },
            Op::MatMulF16 | Op::MatMulQ8_0 => Tolerance::Close { abs: 1e-4, rel: 1e-4 },
            Op::Attention { .. } => Tolerance::Close { abs: 1e-4, rel: 1e-4 },
        }
    }

    /// Number of inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::InputTokens | Op::InputPositions | Op::InputSeqs | Op::InputOutputRows | Op::Weight { .. } => 0,
            Op::QuantizeI8 | Op::QuantizeQ8K | Op::Reshape { .. } | Op::Relu | Op::Sqr | Op::Silu => 1,
            Op::MatMulF16 => 3,
            Op::Embedding
            | Op::SelectOutputs
            | Op::RmsNorm { .. }
            | Op::MatMulI2S
            | Op::MatMulQ8_0
            | Op::MatMulTQ
            | Op::Rope { .. }
            | Op::Scale
            | Op::Add
            | Op::Mul => 2,
            Op::Attention { .. } => 5,
        }
    }

    /// Infers the output fact from the input facts, checking every input's dtype and shape.
    pub(crate) fn infer(&self, inputs: &[&TensorFact]) -> Result<TensorFact, InferError> {
        if inputs.len() != self.arity() {
            return Err(InferError::Arity(inputs.len()));
        }
        let t = Dim::Sym(Sym::Tokens);
        match self {
            Op::InputTokens | Op::InputPositions | Op::InputSeqs => Ok(TensorFact::new(DType::I32, Shape::new([t]))),
            Op::InputOutputRows => Ok(TensorFact::new(DType::I32, Shape::new([Dim::Sym(Sym::Outputs)]))),
            Op::Weight { fact, .. } => Ok(fact.clone()),
            Op::Embedding => {
                want_dtype(inputs, 0, FLOAT_TABLES)?;
                want_rank(inputs, 0, 2, Shape::new([Dim::Fixed(0), Dim::Fixed(0)]))?;
                want_dtype(inputs, 1, &[DType::I32])?;
                want_shape(inputs, 1, Shape::new([t]))?;
                let d = inputs[0].shape.dims()[1];
                Ok(TensorFact::new(DType::F32, Shape::new([t, d])))
            }
            Op::RmsNorm { .. } => {
                want_dtype(inputs, 0, &[DType::F32])?;
                want_dtype(inputs, 1, &[DType::F32])?;
                let d = inputs[0].shape.last().ok_or_else(|| InferError::Other("input is a scalar".into()))?;
                want_shape(inputs, 1, Shape::new([d]))?;
                Ok(inputs[0].clone())
            }
            Op::QuantizeI8 => {
                want_dtype(inputs, 0, &[DType::F32])?;
                want_rank(inputs, 0, 2, Shape::new([t, Dim::Fixed(0)]))?;
                Ok(TensorFact::new(DType::Q8Tok, inputs[0].shape.clone()))
            }
            Op::QuantizeQ8K => {
                want_dtype(inputs, 0, &[DType::F32])?;
                want_rank(inputs, 0, 2, Shape::new([t, Dim::Fixed(0)]))?;
                match inputs[0].shape.dims()[1] {
                    Dim::Fixed(k) if k % 256 == 0 => {}
                    other => return Err(InferError::Other(format!("width {other} is not a multiple of 256"))),
                }
                Ok(TensorFact::new(DType::Q8K, inputs[0].shape.clone()))
            }
            Op::MatMulI2S | Op::MatMulF16 | Op::MatMulQ8_0 | Op::MatMulTQ => {
                let (wty, xty): (&[DType], DType) = match self {
                    Op::MatMulI2S => (&[DType::I2S], DType::Q8Tok),
                    Op::MatMulQ8_0 => (&[DType::Q8_0, DType::Q4_0], DType::F32),
                    Op::MatMulTQ => (&[DType::TQ2_0, DType::TQ1_0, DType::Q6K], DType::Q8K),
                    _ => (&[DType::F16], DType::F32),
                };
                want_dtype(inputs, 0, wty)?;
                want_dtype(inputs, 1, &[xty])?;
                want_rank(inputs, 0, 2, Shape::new([Dim::Fixed(0), Dim::Fixed(0)]))?;
                want_rank(inputs, 1, 2, Shape::new([t, Dim::Fixed(0)]))?;
                let (m, k) = (inputs[0].shape.dims()[0], inputs[0].shape.dims()[1]);
                let rows = inputs[1].shape.dims()[0];
                want_shape(inputs, 1, Shape::new([rows, k]))?;
                if matches!(self, Op::MatMulF16) {
                    want_dtype(inputs, 2, &[DType::I32])?;
                    want_shape(inputs, 2, Shape::new([rows]))?;
                }
                Ok(TensorFact::new(DType::F32, Shape::new([rows, m])))
            }
            Op::Reshape { to } => {
                let from = &inputs[0].shape;
                let syms = |s: &Shape| {
                    let mut v: Vec<Sym> =
                        s.dims().iter().filter_map(|d| if let Dim::Sym(x) = d { Some(*x) } else { None }).collect();
                    v.sort_by_key(|s| s.name());
                    v
                };
                let fixed = |s: &Shape| s.dims().iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).product::<usize>();
                if syms(from) != syms(to) || fixed(from) != fixed(to) {
                    return Err(InferError::Shape {
                        input: 0,
                        what: format!("element count differs from target {to}:"),
                        expected: to.clone(),
                        got: from.clone(),
                    });
                }
                Ok(TensorFact::new(inputs[0].dtype, to.clone()))
            }
            Op::Rope { n_rot, .. } => {
                want_dtype(inputs, 0, &[DType::F32])?;
                want_rank(inputs, 0, 3, Shape::new([t, Dim::Fixed(0), Dim::Fixed(0)]))?;
                want_dtype(inputs, 1, &[DType::I32])?;
                let rows = inputs[0].shape.dims()[0];
                want_shape(inputs, 1, Shape::new([rows]))?;
                match inputs[0].shape.dims()[2] {
                    Dim::Fixed(hd) if *n_rot <= hd && n_rot % 2 == 0 && *n_rot > 0 => {}
                    other => return Err(InferError::Other(format!("n_rot {n_rot} does not fit head dim {other}"))),
                }
                Ok(inputs[0].clone())
            }
            Op::Attention { n_head, n_head_kv, head_dim, .. } => {
                if *n_head_kv == 0 || n_head % n_head_kv != 0 {
                    return Err(InferError::Other(format!("{n_head_kv} KV heads do not divide {n_head} heads")));
                }
                for i in 0..3 {
                    want_dtype(inputs, i, &[DType::F32])?;
                }
                want_dtype(inputs, 3, &[DType::I32])?;
                let q = Shape::new([t, Dim::Fixed(*n_head), Dim::Fixed(*head_dim)]);
                let kv = Shape::new([t, Dim::Fixed(*n_head_kv), Dim::Fixed(*head_dim)]);
                want_shape(inputs, 0, q)?;
                want_shape(inputs, 1, kv.clone())?;
                want_shape(inputs, 2, kv)?;
                want_shape(inputs, 3, Shape::new([t]))?;
                want_dtype(inputs, 4, &[DType::I32])?;
                want_shape(inputs, 4, Shape::new([t]))?;
                Ok(TensorFact::new(DType::F32, Shape::new([t, Dim::Fixed(n_head * head_dim)])))
            }
            Op::Scale => {
                want_dtype(inputs, 0, &[DType::F32])?;
                want_dtype(inputs, 1, &[DType::F32])?;
                want_shape(inputs, 1, Shape::fixed(&[1]))?;
                Ok(inputs[0].clone())
            }
            Op::Add | Op::Mul => {
                want_dtype(inputs, 0, &[DType::F32])?;
                want_dtype(inputs, 1, &[DType::F32])?;
                want_shape(inputs, 1, inputs[0].shape.clone())?;
                Ok(inputs[0].clone())
            }
            Op::Relu | Op::Sqr | Op::Silu => {
                want_dtype(inputs, 0, &[DType::F32])?;
                Ok(inputs[0].clone())
            }
            Op::SelectOutputs => {
                want_dtype(inputs, 1, &[DType::I32])?;
                want_shape(inputs, 1, Shape::new([Dim::Sym(Sym::Outputs)]))?;
                match inputs[0].shape.dims().split_first() {
                    Some((r, rest)) if *r == t => Ok(TensorFact::new(
                        inputs[0].dtype,
                        Shape::new(std::iter::once(Dim::Sym(Sym::Outputs)).chain(rest.iter().copied())),
                    )),
                    _ => Err(InferError::Shape {
                        input: 0,
                        what: "(rows of the step first)".into(),
                        expected: Shape::new([t]),
                        got: inputs[0].shape.clone(),
                    }),
                }
            }
        }
    }
}

/// For each row of a step, how many rows of the same sequence the step holds: the count that
/// decides bitnet.cpp's one-column forms ([`Op::MatMulF16`], [`Op::Attention`]) per sequence.
/// Every backend calls this one function, so they cannot disagree on the rule.
pub fn rows_per_seq(seqs: &[i32]) -> Vec<usize> {
    let mut counts: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
    for &s in seqs {
        *counts.entry(s).or_default() += 1;
    }
    seqs.iter().map(|s| counts[s]).collect()
}
