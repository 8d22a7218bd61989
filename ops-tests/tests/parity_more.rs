//! bitnet.cpp parity on the other shared models (arch `bitnet`, arch `llama` with ternary
//! weights; LLaMA-2 SentencePiece vocabulary): logits in both batch modes, 32 greedy tokens,
//! and every intermediate tensor of prompt p1's batched pass. Run with `--release`.

use ops_tests::parity::*;

fn p1(dir: &str) -> Vec<u32> {
    prompts(dir).into_iter().find(|p| p.id == "p1_capital").unwrap().tokens
}

fn model_parity(model: &str, dir: &str) {
    run_mode(&format!("{model}.gguf"), dir, 512);
    run_mode(&format!("{model}.gguf"), &format!("{dir}/seq"), 1);
    let t = p1(dir);
    compare_nodes(&format!("{model}.gguf"), &format!("{dir}/tensors"), &[], &[(t.clone(), 0, t.len())]);
}

#[test]
fn arch_bitnet_i2s_matches_reference() {
    model_parity("b1-spm-i2_s", "reference/b1-spm-i2_s");
}

#[test]
fn arch_llama_ternary_i2s_matches_reference() {
    model_parity("llama-tern-i2_s", "reference/llama-tern-i2_s");
}

#[test]
fn tq2_0_weights_match_reference() {
    model_parity("b158-spm-tq2_0", "reference/b158-spm-tq2_0");
}

#[test]
fn tq1_0_weights_match_reference() {
    // No tensor dumps for this file: logits (compact) and greedy tokens in both modes.
    run_mode("b158-spm-tq1_0.gguf", "reference/b158-spm-tq1_0", 512);
    run_mode("b158-spm-tq1_0.gguf", "reference/b158-spm-tq1_0/seq", 1);
}
