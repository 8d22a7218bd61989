//! The opt-in `--lm-head q8` (the tied F16 embedding requantized to Q8_0 at load) against
//! exact mode on the shared prompts: top-1 agreement and max |Δlogit|, measured and bounded.

use std::sync::Arc;

use backend_scalar::ScalarBackend;
use gguf::lower::{quantize_head_q8, q8_head_base, WithQ8Head, Q8_HEAD};
use graph::Executor;
use ops_tests::parity::prompts;
use ops_tests::*;

#[test]
fn q8_head_stays_close_to_exact() {
    let file = open_model("tiny-i2_s.gguf");
    let exact = gguf::lower(&file).unwrap();
    let q8 = gguf::lower_with(&file, gguf::LowerOptions { lm_head_q8: true }).unwrap();
    assert!(q8.graph.find(Q8_HEAD).is_some(), "the q8 graph reads the requantized head");
    let head = quantize_head_q8(&file, q8_head_base(&file, &q8.hparams)).unwrap();
    let src = WithQ8Head { file: &file, head: Some(&head) };
    let n_vocab = exact.hparams.n_vocab;
    let (mut agree, mut total, mut worst) = (0usize, 0usize, 0.0f32);
    for p in prompts("reference/tiny-i2_s") {
        let fast = || backend_avx2::Avx2Backend::new().map(|b| Arc::new(b) as Arc<dyn graph::Backend>);
        let mut ex = Executor::new(exact.graph.clone(), &file, fast(), Arc::new(ScalarBackend), 512).unwrap();
        let a = prompt_logits(&mut ex, &p.tokens, 512);
        let mut eq = Executor::new(q8.graph.clone(), &src, fast(), Arc::new(ScalarBackend), 512).unwrap();
        let b = prompt_logits(&mut eq, &p.tokens, 512);
        for (ra, rb) in a.chunks(n_vocab).zip(b.chunks(n_vocab)) {
            total += 1;
            agree += usize::from(argmax(ra) == argmax(rb));
            worst = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(worst, f32::max);
        }
    }
    println!("--lm-head q8 vs exact, tiny-i2_s, {total} positions: top-1 agreement {agree}/{total}, max |Δlogit| {worst:e}");
    // A Q8_0 head differs from F16 by the rounding of 8-bit weights and activations. Measured
    // here (2026-11-26): 331/335 top-1, max |Δlogit| 0.146 on logits spanning about ±4; the
    // bounds leave room for other hosts' thread counts but would catch a broken head.
    assert!(worst > 0.0, "the q8 head must actually be used");
    assert!(worst < 0.25, "max |Δlogit| {worst}");
    assert!(agree * 100 >= total * 95, "top-1 agreement {agree}/{total}");
}
