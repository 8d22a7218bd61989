//! The NEON backend (aarch64) against bitnet.cpp's x86 reference, bit for bit: the answer
//! to bitnet.cpp's ARM reports of garbage from the official I2_S file.
//!
//! On `tiny-i2_s.gguf`, in both batch modes: every prompt position's logits equal the
//! reference's bit for bit (full files for the prompts that ship them, the top-64 logits
//! otherwise), the 32 greedy tokens equal the reference's, and every intermediate tensor of
//! prompt p1 equals the reference dump. On the SentencePiece model `b1-spm-i2_s.gguf`: the
//! 32 greedy tokens equal the reference's, p1's intermediate tensors equal the dump, and
//! every logit equals the scalar backend's bit for bit. Off aarch64 (or with
//! `BITNET_DISABLE_NEON` set) every test prints `SKIPPED` and passes. Cross-tested under
//! qemu by `.ci/neon.sh` with `QEMU_CPU=max` (sdot) and `QEMU_CPU=cortex-a72` (plain NEON).
//! Run with `--release`.

use ops_tests::parity::*;
use ops_tests::{load, run_prompt, shared};

fn neon_here() -> bool {
    match runtime::backends::by_name("neon") {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED: {e}");
            false
        }
    }
}

/// Prompt logits and greedy tokens of every prompt of `dir`, on neon, equal the reference
/// bit for bit.
fn logits_and_tokens_bit_exact(model: &str, dir: &str, ubatch: usize) {
    let m = load(model, "neon", ubatch);
    let n_vocab = m.n_vocab();
    for p in prompts(dir) {
        let run = run_prompt(&m, &p.tokens, 32);
        let n = p.tokens.len();
        let mut compared = 0usize;
        if let Some(f) = &p.logits_file {
            let r = gguf::npy::read_f32(shared(&format!("{dir}/{f}"))).unwrap();
            assert_eq!(r.shape, vec![n, n_vocab]);
            for (i, (g, w)) in run.prompt_logits.iter().zip(&r.data).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{dir} {}: logit {i} (pos {}): neon {g:e}, reference {w:e}",
                    p.id,
                    i / n_vocab
                );
            }
            compared = r.data.len();
        } else {
            let ids = gguf::npy::read_i32(shared(&format!("{dir}/compact/{}_top64_ids.npy", p.id))).unwrap();
            let vals = gguf::npy::read_f32(shared(&format!("{dir}/compact/{}_top64_logits.npy", p.id))).unwrap();
            for pos in 0..n {
                for j in 0..64 {
                    let (id, w) = (ids.data[pos * 64 + j] as usize, vals.data[pos * 64 + j]);
                    let g = run.prompt_logits[pos * n_vocab + id];
                    assert_eq!(g.to_bits(), w.to_bits(), "{dir} {}: pos {pos} token {id}: neon {g:e}, reference {w:e}", p.id);
                    compared += 1;
                }
            }
        }
        assert_eq!(run.tokens, p.gen_tokens, "{dir} {}: greedy tokens", p.id);
        println!("{dir} ubatch {ubatch} {}: {compared} logits bit-identical, 32 greedy tokens identical", p.id);
    }
}

fn p1(dir: &str) -> Vec<u32> {
    prompts(dir).into_iter().find(|p| p.id == "p1_capital").unwrap().tokens
}

#[test]
fn tiny_i2s_batched_bit_exact() {
    if neon_here() {
        logits_and_tokens_bit_exact("tiny-i2_s.gguf", "reference/tiny-i2_s", 512);
    }
}

#[test]
fn tiny_i2s_token_by_token_bit_exact() {
    if neon_here() {
        logits_and_tokens_bit_exact("tiny-i2_s.gguf", "reference/tiny-i2_s/seq", 1);
    }
}

#[test]
fn tiny_i2s_p1_intermediate_tensors() {
    if neon_here() {
        let t = p1("reference/tiny-i2_s");
        compare_nodes_on("neon", "tiny-i2_s.gguf", "reference/tiny-i2_s/tensors", &[], &[(t.clone(), 0, t.len())]);
    }
}

#[test]
fn sentencepiece_b1_spm_i2s() {
    if !neon_here() {
        return;
    }
    let dir = "reference/b1-spm-i2_s";
    let (neon, scalar) = (load("b1-spm-i2_s.gguf", "neon", 512), load("b1-spm-i2_s.gguf", "scalar", 512));
    for p in prompts(dir) {
        let (a, b) = (run_prompt(&neon, &p.tokens, 32), run_prompt(&scalar, &p.tokens, 32));
        assert_eq!(a.tokens, p.gen_tokens, "{}: greedy tokens", p.id);
        let differ = a.prompt_logits.iter().zip(&b.prompt_logits).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        assert_eq!(differ, 0, "{}: {differ} prompt logits differ from scalar", p.id);
        for (k, (x, y)) in a.step_logits.iter().zip(&b.step_logits).enumerate() {
            assert!(x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()), "{}: step {k} logits differ from scalar", p.id);
        }
        println!("{dir} {}: logits bit-identical to scalar, 32 greedy tokens identical to the reference", p.id);
    }
    let t = p1(dir);
    compare_nodes_on("neon", "b1-spm-i2_s.gguf", &format!("{dir}/tensors"), &[], &[(t.clone(), 0, t.len())]);
}
