//! llama.cpp's `--check-tensors`: scan every tensor's data for values no writer produces
//! (non-finite floats, non-finite or zero scales, the unused ternary code 3), which would
//! otherwise turn into silent garbage at run time.
//!
//! What is checked, per type (layouts in ../shared/docs/format.md §2):
//! - F32, F16, BF16: every element is finite.
//! - Q8_0, Q4_0, Q6_K: every block's f16 scale `d` is finite.
//! - I2_S: no 2-bit code is 3, and the per-tensor f32 scale is finite and non-zero.
//! - TQ2_0: every block's f16 scale is finite and no 2-bit code is 3.
//! - TQ1_0: every block's f16 scale is finite. Its codes cannot be invalid: every byte
//!   decodes to trits in {0, 1, 2} (`((B·3^n mod 256)·3) >> 8` is at most 2).
//!
//! The data is read with [`GgufFile::read_tensor_range`] (never through the map), in chunks,
//! one tensor per rayon task.

use std::fmt;

use graph::quant::{f16_at, i2s_code, tq2_code, I2S_GROUP};
use graph::DType;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::reader::{GgufFile, TensorInfo};

/// Most problems listed per tensor; all of them are counted.
pub const MAX_LISTED: usize = 4;

/// Bytes read per chunk (rounded down to whole blocks).
const CHUNK: usize = 1 << 20;

/// One value that no writer produces.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A float element that is NaN or infinite (F32, F16, BF16). `value` is NaN or ±inf
    /// (JSON writes a NaN as `null`).
    NonFiniteValue {
        /// Flat element index (row-major).
        element: u64,
        /// The value.
        value: f32,
    },
    /// A scale that is NaN or infinite, or zero for I2_S's one per-tensor scale.
    BadScale {
        /// The block (Q8_0, Q4_0, TQ1_0, TQ2_0), or `None` for I2_S's per-tensor scale.
        block: Option<u64>,
        /// The scale.
        value: f32,
    },
    /// A 2-bit ternary code 3 (I2_S, TQ2_0): the meaning of codes 0, 1 and 2 is −1, 0 and
    /// +1; 3 is never written, and decoders and kernels disagree on it.
    InvalidCode {
        /// Flat element index (row-major).
        element: u64,
        /// The code.
        code: u8,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::NonFiniteValue { element, value } => write!(f, "element {element} is {value}"),
            Problem::BadScale { block: Some(b), value } => write!(f, "scale of block {b} is {value}"),
            Problem::BadScale { block: None, value } => write!(f, "scale is {value}"),
            Problem::InvalidCode { element, code } => write!(f, "element {element} has code {code}"),
        }
    }
}

/// A tensor with at least one problem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadTensor {
    /// The tensor's name.
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// How many problems it has.
    pub count: u64,
    /// The first [`MAX_LISTED`] of them, in file order.
    pub first: Vec<Problem>,
}

impl fmt::Display for BadTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor `{}` ({}): {} problem{}: ", self.name, self.dtype, self.count, if self.count == 1 { "" } else { "s" })?;
        for (i, p) in self.first.iter().enumerate() {
            write!(f, "{}{p}", if i > 0 { ", " } else { "" })?;
        }
        if self.count > self.first.len() as u64 {
            write!(f, ", …")?;
        }
        Ok(())
    }
}

/// What [`check_tensors`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorCheck {
    /// Tensors checked (all of the file's).
    pub tensors: usize,
    /// Bytes of tensor data read.
    pub bytes: u64,
    /// The tensors with problems, in file order; empty when the file is clean.
    pub bad: Vec<BadTensor>,
}

impl TensorCheck {
    /// Whether no tensor has a problem.
    pub fn is_ok(&self) -> bool {
        self.bad.is_empty()
    }
}

impl fmt::Display for TensorCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "check-tensors: {} tensors ({} bytes) checked, {} with problems", self.tensors, self.bytes, self.bad.len())?;
        for b in &self.bad {
            write!(f, "\n  {b}")?;
        }
        Ok(())
    }
}

/// Reads every tensor of `file` and reports the values no writer produces (see the module
/// documentation for the rules per type). An `Err` means the data could not be read (for
/// a file, [`crate::ErrorKind::FileChanged`] when it changed since it was opened); problems in
/// the data are in the `Ok` report.
pub fn check_tensors(file: &GgufFile) -> Result<TensorCheck> {
    let results: Vec<Option<BadTensor>> = file.tensors().par_iter().map(|t| check_tensor(file, t)).collect::<Result<_>>()?;
    Ok(TensorCheck {
        tensors: file.tensors().len(),
        bytes: file.tensors().iter().map(|t| t.nbytes).sum(),
        bad: results.into_iter().flatten().collect(),
    })
}

/// Counts problems and keeps the first [`MAX_LISTED`].
struct Found {
    count: u64,
    first: Vec<Problem>,
}

impl Found {
    fn push(&mut self, p: Problem) {
        self.count += 1;
        if self.first.len() < MAX_LISTED {
            self.first.push(p);
        }
    }
}

fn check_tensor(file: &GgufFile, t: &TensorInfo) -> Result<Option<BadTensor>> {
    let mut found = Found { count: 0, first: Vec::new() };
    let n = t.n_elements();
    match t.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            // A value is NaN or infinite exactly when its exponent bits are all ones.
            let (size, exp) = match t.dtype {
                DType::F32 => (4, 0x7f80_0000u32),
                DType::F16 => (2, 0x7c00),
                _ => (2, 0x7f80),
            };
            for_chunks(file, t, t.nbytes, size, |start, bytes| {
                let base = start / size as u64;
                for (i, c) in bytes.chunks_exact(size).enumerate() {
                    let bits = if size == 4 {
                        u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                    } else {
                        u32::from(u16::from_le_bytes([c[0], c[1]]))
                    };
                    if bits & exp == exp {
                        let value = match t.dtype {
                            DType::F32 => f32::from_bits(bits),
                            DType::F16 => half::f16::from_bits(bits as u16).to_f32(),
                            _ => half::bf16::from_bits(bits as u16).to_f32(),
                        };
                        found.push(Problem::NonFiniteValue { element: base + i as u64, value });
                    }
                }
            })?;
        }
        DType::Q8_0 | DType::Q4_0 | DType::Q6K | DType::TQ1_0 | DType::TQ2_0 => {
            let Some((_, size)) = t.dtype.block() else { return Ok(None) };
            // Q8_0 and Q4_0 blocks start with `d`; Q6_K, TQ1_0 and TQ2_0 blocks end with it.
            let d_at = if matches!(t.dtype, DType::Q8_0 | DType::Q4_0) { 0 } else { size - 2 };
            for_chunks(file, t, t.nbytes, size, |start, bytes| {
                let base = start / size as u64;
                for (i, blk) in bytes.chunks_exact(size).enumerate() {
                    let block = base + i as u64;
                    let d = f16_at(blk, d_at);
                    if !d.is_finite() {
                        found.push(Problem::BadScale { block: Some(block), value: d });
                    }
                    if t.dtype == DType::TQ2_0 && blk[..64].iter().any(|&b| has_code3(b)) {
                        for e in (0..256).filter(|&e| tq2_code(&blk[..64], e) == 3) {
                            found.push(Problem::InvalidCode { element: block * 256 + e as u64, code: 3 });
                        }
                    }
                }
            })?;
        }
        DType::I2S => {
            // Codes in 32-byte groups of 128 elements, then the f32 scale.
            for_chunks(file, t, n / 4, 32, |start, bytes| {
                let base = start * 4;
                for (g, grp) in bytes.chunks_exact(32).enumerate() {
                    if grp.iter().any(|&b| has_code3(b)) {
                        for e in (0..I2S_GROUP).filter(|&e| i2s_code(grp, e) == 3) {
                            found.push(Problem::InvalidCode { element: base + (g * I2S_GROUP + e) as u64, code: 3 });
                        }
                    }
                }
            })?;
            let mut s = [0u8; 4];
            file.read_tensor_range(t, n / 4, &mut s)?;
            let scale = f32::from_le_bytes(s);
            if !scale.is_finite() || scale == 0.0 {
                found.push(Problem::BadScale { block: None, value: scale });
            }
        }
        // Activation types: never in a file (`dtype_from_ggml` does not produce them).
        DType::I32 | DType::Q8Tok | DType::Q8K => {}
    }
    Ok((found.count > 0).then(|| BadTensor { name: t.name.clone(), dtype: t.dtype, count: found.count, first: found.first }))
}

/// Whether any of a byte's four 2-bit pairs is 3.
fn has_code3(b: u8) -> bool {
    b & (b >> 1) & 0x55 != 0
}

/// Reads the first `len` bytes of `t` in chunks of whole `unit`s and calls `f(offset, bytes)`
/// on each, in order.
fn for_chunks(file: &GgufFile, t: &TensorInfo, len: u64, unit: usize, mut f: impl FnMut(u64, &[u8])) -> Result<()> {
    let step = (CHUNK / unit).max(1) * unit;
    let mut buf = vec![0u8; step.min(len as usize)];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(step as u64) as usize;
        file.read_tensor_range(t, off, &mut buf[..n])?;
        f(off, &buf[..n]);
        off += n as u64;
    }
    Ok(())
}
