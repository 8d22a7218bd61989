//! bitnet.cpp parity on `tiny-i2_s-q6k.gguf` (../shared/reference/README.md §7.1): the Q6_K
//! token embedding (rows dequantized as `dequantize_row_q6_K`) that is also the tied LM head
//! (Q8_K activations, `vec_dot_q6_K_q8_K`). Prompt logits bit for bit (full rows for p0 and
//! p1, the top-64 entries for p2 and p4) and the 32 greedy tokens, on the scalar reference
//! and on every registered backend this CPU runs (each falls back per op). Run with
//! `--release`.

use ops_tests::parity::*;
use ops_tests::*;
use runtime::ModelOptions;

const MODEL: &str = "models-q6k/tiny-i2_s-q6k.gguf";
const DIR: &str = "reference/tiny-i2_s-q6k";

/// Positions × values whose bits differ from the reference (full rows or the compact top 64).
fn differing(p: &Prompt, got: &[f32], n_vocab: usize) -> usize {
    let n = p.tokens.len();
    if let Some(f) = &p.logits_file {
        let r = gguf::npy::read_f32(shared(&format!("{DIR}/{f}"))).unwrap();
        assert_eq!(r.shape, vec![n, n_vocab]);
        return got.iter().zip(&r.data).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    }
    let ids = gguf::npy::read_i32(shared(&format!("{DIR}/compact/{}_top64_ids.npy", p.id))).unwrap();
    let vals = gguf::npy::read_f32(shared(&format!("{DIR}/compact/{}_top64_logits.npy", p.id))).unwrap();
    assert_eq!(ids.shape, vec![n, 64]);
    (0..n * 64).filter(|&j| got[(j / 64) * n_vocab + ids.data[j] as usize].to_bits() != vals.data[j].to_bits()).count()
}

fn check_backend(backend: &str) {
    let m = load_with(MODEL, ModelOptions { backend: backend.into(), ubatch: 512, ..ModelOptions::default() });
    let info = m.info();
    assert!(info.tensor_types.iter().any(|(t, _)| t == "q6_k"), "the file's embedding is Q6_K");
    println!("{backend}: {}", info.kernels.join(", "));
    let n_vocab = m.n_vocab();
    let all = prompts(DIR);
    assert_eq!(all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["p0_hello", "p1_capital", "p2_code", "p4_numbers"]);
    for p in all {
        let run = run_prompt(&m, &p.tokens, 32);
        let bad = differing(&p, &run.prompt_logits, n_vocab);
        assert_eq!(bad, 0, "{backend} {}: {bad} logits differ from bitnet.cpp's", p.id);
        assert_eq!(run.tokens, p.gen_tokens, "{backend} {}: greedy tokens", p.id);
        println!("{backend} {}: logits bit-identical, 32 greedy tokens identical", p.id);
    }
}

#[test]
fn q6k_embedding_and_head_match_reference_scalar() {
    check_backend("scalar");
}

#[test]
fn q6k_embedding_and_head_match_reference_every_backend() {
    for b in runtime::backends::available() {
        if b.name() != "scalar" {
            check_backend(b.name());
        }
    }
}
