//! GGUF tensor type ids and their mapping to [`graph::DType`] (../shared/docs/format.md §2.1).

use graph::DType;

/// Name of a ggml type id, for error messages (fork ids for 36..=39).
pub fn ggml_type_name(id: u32) -> &'static str {
    const NAMES: [&str; 40] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
        "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
        "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "I2_S", "I8_S", "TL1", "TL2",
    ];
    NAMES.get(id as usize).copied().unwrap_or("unknown")
}

/// Maps a GGUF tensor type id to the dtype we decode, or explains why it is refused.
///
/// Policy (../shared/docs/format.md §2.1): 36 is bitnet.cpp's I2_S; 37–39 are fork-internal or LUT
/// formats (I8_S, TL1, TL2) that need a per-model kernel configuration and are refused.
pub fn dtype_from_ggml(id: u32) -> Result<DType, String> {
    Ok(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        8 => DType::Q8_0,
        14 => DType::Q6K,
        30 => DType::BF16,
        34 => DType::TQ1_0,
        35 => DType::TQ2_0,
        36 => DType::I2S,
        37 => return Err("type 37 (bitnet.cpp I8_S) is an activation type and never valid in a file".into()),
        38 | 39 => {
            return Err(format!(
                "type {id} ({}) is bitnet.cpp's lookup-table format, which needs a per-model kernel configuration; \
                 convert the model to I2_S",
                ggml_type_name(id)
            ))
        }
        _ => return Err(format!("unsupported tensor type {} (id {id})", ggml_type_name(id))),
    })
}

/// The GGUF type id of a weight dtype (inverse of [`dtype_from_ggml`]).
pub fn ggml_from_dtype(d: DType) -> Option<u32> {
    Some(match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q8_0 => 8,
        DType::Q6K => 14,
        DType::BF16 => 30,
        DType::TQ1_0 => 34,
        DType::TQ2_0 => 35,
        DType::I2S => 36,
        DType::I32 | DType::Q8Tok | DType::Q8K => return None,
    })
}

/// Decodes a whole tensor of `dtype` with `n` elements to f32 (the reference path).
pub fn decode_to_f32(dtype: DType, data: &[u8], n: usize) -> Vec<f32> {
    use graph::quant::*;
    let mut out = vec![0.0f32; n];
    match dtype {
        DType::F32 => decode_f32(data, &mut out),
        DType::F16 => decode_f16(data, &mut out),
        DType::BF16 => decode_bf16(data, &mut out),
        DType::Q8_0 => decode_q8_0(data, &mut out),
        DType::Q4_0 => decode_q4_0(data, &mut out),
        DType::Q6K => decode_q6_k(data, &mut out),
        DType::I2S => decode_i2s(data, n, &mut out),
        DType::TQ1_0 => decode_tq1_0(data, &mut out),
        DType::TQ2_0 => decode_tq2_0(data, &mut out),
        DType::I32 | DType::Q8Tok | DType::Q8K => {}
    }
    out
}
