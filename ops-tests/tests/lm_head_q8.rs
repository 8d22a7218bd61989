//! The opt-in `--lm-head q8` and `--lm-head q6k` (the tied F16 embedding requantized to Q8_0
//! or Q6_K at load) against exact mode on the shared prompts: top-1 agreement and max
//! |Δlogit|, measured and bounded.

use gguf::lower::{Q6K_HEAD, Q8_HEAD};
use ops_tests::parity::prompts;
use ops_tests::*;
use runtime::{LmHead, ModelOptions};

/// (top-1 agreements, positions, max |Δlogit|) of `head` against exact mode on tiny-i2_s,
/// after checking that the graph reads the requantized weight `weight`.
fn against_exact(head: LmHead, weight: &str) -> (usize, usize, f32) {
    let exact = load("tiny-i2_s.gguf", "auto", 512);
    let other = load_with("tiny-i2_s.gguf", ModelOptions { lm_head: head, ..ModelOptions::default() });
    assert!(other.program().graph().find(weight).is_some(), "the {} graph reads the requantized head", head.name());
    let n_vocab = exact.n_vocab();
    let (mut agree, mut total, mut worst) = (0usize, 0usize, 0.0f32);
    for p in prompts("reference/tiny-i2_s") {
        let a = run_prompt(&exact, &p.tokens, 0).prompt_logits;
        let b = run_prompt(&other, &p.tokens, 0).prompt_logits;
        for (ra, rb) in a.chunks(n_vocab).zip(b.chunks(n_vocab)) {
            total += 1;
            agree += usize::from(argmax(ra) == argmax(rb));
            worst = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(worst, f32::max);
        }
    }
    println!(
        "--lm-head {} vs exact, tiny-i2_s, {total} positions: top-1 agreement {agree}/{total}, max |Δlogit| {worst:e}",
        head.name()
    );
    assert!(worst > 0.0, "the {} head must actually be used", head.name());
    (agree, total, worst)
}

#[test]
fn q8_head_stays_close_to_exact() {
    let (agree, total, worst) = against_exact(LmHead::Q8, Q8_HEAD);
    // A Q8_0 head differs from F16 by the rounding of 8-bit weights and activations. Measured
    // here (2026-11-26): 331/335 top-1, max |Δlogit| 0.146 on logits spanning about ±4; the
    // bounds leave room for other hosts' thread counts but would catch a broken head.
    assert!(worst < 0.25, "max |Δlogit| {worst}");
    assert!(agree * 100 >= total * 95, "top-1 agreement {agree}/{total}");
}

#[test]
fn q6k_head_stays_close_to_exact() {
    let (agree, total, worst) = against_exact(LmHead::Q6k, Q6K_HEAD);
    // Q6_K weights and Q8_K activations round more coarsely than the Q8_0 head. Measured here
    // (2026-12-05): 321/335 top-1, max |Δlogit| 0.327; the bounds leave room for other hosts
    // and would catch a broken head.
    assert!(worst < 0.5, "max |Δlogit| {worst}");
    assert!(agree * 100 >= total * 90, "top-1 agreement {agree}/{total}");
}
