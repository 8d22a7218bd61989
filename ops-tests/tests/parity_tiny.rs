//! bitnet.cpp parity on `tiny-i2_s.gguf` (scalar backend), against ../shared/reference:
//! logits in both batch modes, 32-token greedy continuations, and every intermediate tensor
//! of prompt p1 node by node. Run with `--release`.

use ops_tests::parity::*;
use ops_tests::*;

const MODEL: &str = "tiny-i2_s.gguf";

#[test]
fn batched_prompt_matches_reference() {
    run_mode(MODEL, "reference/tiny-i2_s", 512);
}

#[test]
fn token_by_token_prompt_matches_reference() {
    run_mode(MODEL, "reference/tiny-i2_s/seq", 1);
}

fn p1_tokens() -> Vec<u32> {
    prompts("reference/tiny-i2_s").into_iter().find(|p| p.id == "p1_capital").unwrap().tokens
}

#[test]
fn p1_intermediate_tensors_batched() {
    let t = p1_tokens();
    compare_nodes(MODEL, "reference/tiny-i2_s/tensors", &[], &[(t.clone(), 0, t.len())]);
}

#[test]
fn p1_intermediate_tensors_first_generation_step() {
    let t = p1_tokens();
    let idx = shared_json("reference/tiny-i2_s/tensors_gen0/index.json");
    let (token, pos) = (idx["token"].as_u64().unwrap() as u32, idx["pos"].as_u64().unwrap() as usize);
    assert_eq!(pos, t.len());
    compare_nodes(MODEL, "reference/tiny-i2_s/tensors_gen0", &t, &[(vec![token], pos, 1)]);
}

#[test]
fn p1_intermediate_tensors_token_by_token() {
    let t = p1_tokens();
    let passes: Vec<(Vec<u32>, usize, usize)> = t.iter().enumerate().map(|(i, &tok)| (vec![tok], i, 1)).collect();
    compare_nodes(MODEL, "reference/tiny-i2_s/seq/tensors", &[], &passes);
}
