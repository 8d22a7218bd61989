//! The Q6_K quantizer (`gguf::quantize::quantize_q6_k` through `gguf::lower::quantize_head`, llama-quantize's
//! `quantize_row_q6_K_ref`) against a file llama-quantize wrote: requantizing tiny-i2_s's
//! F16 embedding gives exactly the bytes of tiny-i2_s-q6k's Q6_K embedding
//! (../shared/reference/README.md §7.1: made with `llama-quantize --token-embedding-type q6_k`
//! from an unquantized copy of tiny-i2_s).

use gguf::GgufFile;
use graph::DType;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

#[test]
fn requantized_embedding_matches_llama_quantize() {
    let src = GgufFile::open(format!("{SHARED}/models/tiny-i2_s.gguf")).unwrap();
    let q6k = GgufFile::open(format!("{SHARED}/models-q6k/tiny-i2_s-q6k.gguf")).unwrap();
    let (s, q) = (src.tensor("token_embd.weight").unwrap(), q6k.tensor("token_embd.weight").unwrap());
    assert_eq!((s.dtype, q.dtype), (DType::F16, DType::Q6K));
    // `--lm-head q6k`'s load-time requantization, row by row in parallel.
    let out = gguf::lower::quantize_head(&src, "token_embd.weight", DType::Q6K).unwrap();
    let want = q6k.tensor_data(q);
    assert_eq!(out.len(), want.len());
    let bad: Vec<usize> = (0..out.len() / 210).filter(|&b| out[210 * b..210 * b + 210] != want[210 * b..210 * b + 210]).collect();
    assert!(bad.is_empty(), "{} of {} blocks differ, first {:?}", bad.len(), out.len() / 210, &bad[..bad.len().min(5)]);
}
