//! Element types of tensors: activations and the weight storage formats.

use serde::Serialize;

/// The data type of a tensor.
///
/// Activation types (`F32`, `F16`, `I32`, `Q8Tok`) are what nodes produce; the block and
/// ternary types only occur on weight constants and are decoded by the kernels themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (top half of an f32).
    BF16,
    /// 32-bit signed integers (token ids, positions).
    I32,
    /// Per-token int8 activations: each row of K values is stored as K `i8`, then the f32
    /// scale `s` (q = round(x·s)) and the i32 sum of the row's q, 8 bytes in all.
    Q8Tok,
    /// Per-256-block int8 activations (ggml Q8_K as bitnet.cpp uses it with TQ weights):
    /// each block is an f32 scale `d` then 256 `i8` (260 bytes).
    Q8K,
    /// ggml Q8_0: blocks of 32 `i8` with one f16 scale (34 bytes).
    Q8_0,
    /// ggml Q4_0: blocks of 32 4-bit values with one f16 scale (18 bytes).
    Q4_0,
    /// ggml Q6_K: 256-element super-blocks of 6-bit values (`ql[128]`, `qh[64]`, 16 `i8`
    /// sub-block scales, f16 `d`: 210 bytes).
    Q6K,
    /// bitnet.cpp I2_S: 2-bit ternary codes in 128-element groups, one f32 scale per tensor.
    I2S,
    /// ggml TQ1_0: base-3 packed ternary, 256-element blocks (54 bytes).
    TQ1_0,
    /// ggml TQ2_0: 2-bit ternary, 256-element blocks (66 bytes).
    TQ2_0,
}

impl DType {
    /// Lower-case name as shown in dumps (`f32`, `i2_s`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::Q8Tok => "q8_tok",
            DType::Q8K => "q8_k",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q6K => "q6_k",
            DType::I2S => "i2_s",
            DType::TQ1_0 => "tq1_0",
            DType::TQ2_0 => "tq2_0",
        }
    }

    /// Elements per block and bytes per block for block types; `None` for I2_S and Q8Tok,
    /// whose sizes are per tensor / per row (see [`DType::nbytes`]).
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            DType::F32 | DType::I32 => Some((1, 4)),
            DType::F16 | DType::BF16 => Some((1, 2)),
            DType::Q8_0 => Some((32, 34)),
            DType::Q4_0 => Some((32, 18)),
            DType::Q6K => Some((256, 210)),
            DType::TQ1_0 => Some((256, 54)),
            DType::TQ2_0 => Some((256, 66)),
            DType::Q8K => Some((256, 260)),
            DType::I2S | DType::Q8Tok => None,
        }
    }

    /// Whether this is a weight storage format that kernels decode (not an activation type).
    pub fn is_quantized_weight(self) -> bool {
        matches!(self, DType::Q8_0 | DType::Q4_0 | DType::Q6K | DType::I2S | DType::TQ1_0 | DType::TQ2_0)
    }

    /// Byte size of a tensor of this type whose innermost (contiguous) dimension is `row`
    /// and which has `rows` rows. Returns `None` when the row is not a whole number of
    /// blocks or the size overflows.
    ///
    /// I2_S is the exception to the block rule: `row·rows/4 + 32` bytes for the whole tensor
    /// (codes, f32 scale, 28 unused bytes).
    pub fn nbytes(self, row: usize, rows: usize) -> Option<usize> {
        let n = row.checked_mul(rows)?;
        match self {
            DType::I2S => {
                if !row.is_multiple_of(128) {
                    return None;
                }
                (n / 4).checked_add(32)
            }
            DType::Q8Tok => row.checked_add(8)?.checked_mul(rows),
            _ => {
                let (blk, size) = self.block()?;
                if !row.is_multiple_of(blk) {
                    return None;
                }
                (n / blk).checked_mul(size)
            }
        }
    }
}

impl DType {
    /// Byte size of a tensor with these concrete dims (outermost first; the last is the
    /// contiguous row), or `None` when a row is not a whole number of blocks or the size
    /// overflows. The one place tensor sizes are computed.
    pub fn tensor_bytes(self, dims: &[usize]) -> Option<usize> {
        let row = dims.last().copied().unwrap_or(1);
        let rows = dims[..dims.len().saturating_sub(1)].iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        self.nbytes(row, rows)
    }

    /// Byte size of one row of `k` elements (a weight row, an activation row). For I2_S,
    /// whose scale is per tensor, this is the size of a one-row tensor; its rows are `k/4`
    /// bytes of codes apart.
    pub fn row_bytes(self, k: usize) -> Option<usize> {
        self.nbytes(k, 1)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
