//! Shapes with fixed and symbolic dimensions, outermost first.

use serde::{Serialize, Serializer};
use std::fmt;

/// A symbolic dimension, bound when a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sym {
    /// `T`: tokens in this step (micro-batch size).
    Tokens,
    /// `O`: rows whose logits this step produces (1 for generation, T for `--logits-out`).
    Outputs,
}

impl Sym {
    /// Short name shown in dumps.
    pub fn name(self) -> &'static str {
        match self {
            Sym::Tokens => "T",
            Sym::Outputs => "O",
        }
    }
}

/// One dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size.
    Sym(Sym),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s.name()),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Fixed(n)
    }
}

impl From<Sym> for Dim {
    fn from(s: Sym) -> Dim {
        Dim::Sym(s)
    }
}

/// Values of the symbolic dimensions for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bindings {
    /// `T`.
    pub tokens: usize,
    /// `O`.
    pub outputs: usize,
}

impl Dim {
    /// The concrete size under `b`.
    pub fn resolve(self, b: Bindings) -> usize {
        match self {
            Dim::Fixed(n) => n,
            Dim::Sym(Sym::Tokens) => b.tokens,
            Dim::Sym(Sym::Outputs) => b.outputs,
        }
    }
}

/// A shape, outermost dimension first (`[T, n_embd]`, weights `[n_out, n_in]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// Builds a shape from dims.
    pub fn new(dims: impl IntoIterator<Item = Dim>) -> Shape {
        Shape(dims.into_iter().collect())
    }

    /// A fully fixed shape.
    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dims.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The last (innermost) dim.
    pub fn last(&self) -> Option<Dim> {
        self.0.last().copied()
    }

    /// Concrete sizes under `b`.
    pub fn resolve(&self, b: Bindings) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(b)).collect()
    }

    /// Product of the fixed dims if all are fixed.
    pub fn fixed_len(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, d| match d {
            Dim::Fixed(n) => acc.checked_mul(*n),
            Dim::Sym(_) => None,
        })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl Serialize for Shape {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for d in &self.0 {
            match d {
                Dim::Fixed(n) => seq.serialize_element(n)?,
                Dim::Sym(sym) => seq.serialize_element(sym.name())?,
            }
        }
        seq.end()
    }
}

/// A node's output type: dtype and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TensorFact {
    /// Element type.
    pub dtype: crate::DType,
    /// Shape, outermost first.
    pub shape: Shape,
}

impl TensorFact {
    /// Builds a fact.
    pub fn new(dtype: crate::DType, shape: Shape) -> TensorFact {
        TensorFact { dtype, shape }
    }
}

impl fmt::Display for TensorFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.dtype, self.shape)
    }
}
