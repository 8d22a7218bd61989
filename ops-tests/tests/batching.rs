//! Batch invariance, exactly: every sequence run through a `runtime::Batch` together with
//! others — joining at different steps, some prefilling while others decode — gets the
//! logits at every position and the tokens it gets alone, bit for bit (greedy and seeded
//! sampling), on both tokenizers' models. Prompt lengths cover a 1-token prompt, the
//! chunk boundary (`ubatch` and `ubatch + 1`, where the last chunk is one token and takes
//! the one-column forms) and a prompt of several chunks. Run with `--release`.

use std::collections::HashMap;
use std::sync::Arc;

use ops_tests::parity::prompts;
use ops_tests::*;
use runtime::{Batch, Event, LogitsMode, Model, ModelOptions, Request, SamplingParams, SeqId};

/// What one sequence produced.
#[derive(Default, Debug, PartialEq)]
struct Out {
    prompt_logits: Vec<f32>,
    step_logits: Vec<f32>,
    tokens: Vec<u32>,
}

const UBATCH: usize = 64;
const N_GEN: usize = 32;

fn model(name: &str, n_parallel: usize) -> Arc<Model> {
    load_with(name, ModelOptions { n_parallel, ubatch: UBATCH, n_ctx: Some(1024), ..ModelOptions::default() })
}

/// Eight prompts of varied lengths: the five reference prompts (the longest spans several
/// chunks), a 1-token prompt, and prompts of exactly `UBATCH` and `UBATCH + 1` tokens (cut
/// from the long reference text).
fn eight_prompts(m: &Model, dir: &str) -> Vec<Vec<u32>> {
    let refs = prompts(dir);
    let long: Vec<u32> = refs.iter().max_by_key(|p| p.tokens.len()).unwrap().tokens.clone();
    assert!(long.len() > 3 * UBATCH, "the long reference prompt spans several chunks");
    let mut v: Vec<Vec<u32>> = refs.iter().map(|p| p.tokens.clone()).collect();
    v.push(vec![m.tokenizer().bos()]);
    v.push(long[..UBATCH].to_vec());
    v.push(long[..UBATCH + 1].to_vec());
    assert_eq!(v.len(), 8);
    v
}

fn params(i: usize, sampled: bool) -> SamplingParams {
    let mut p = if sampled {
        SamplingParams { temperature: 0.8, seed: Some(1000 + i as u64), max_tokens: Some(N_GEN), ..SamplingParams::default() }
    } else {
        SamplingParams::greedy(N_GEN)
    };
    p.ignore_eos = true;
    p
}

/// Runs `prompts` through one batch; request `i` is added before step `join[i]` and samples
/// with `params(seeds[i], sampled)`.
fn run_batched(m: &Arc<Model>, prompts: &[Vec<u32>], join: &[usize], seeds: &[usize], sampled: bool) -> Vec<Out> {
    let mut batch = Batch::new(m.clone()).unwrap();
    let mut ids: HashMap<SeqId, usize> = HashMap::new();
    let mut outs: Vec<Out> = prompts.iter().map(|_| Out::default()).collect();
    let mut step = 0;
    loop {
        for (i, p) in prompts.iter().enumerate() {
            if join[i] == step {
                let id =
                    batch.add(Request { prompt: p.clone(), params: params(seeds[i], sampled), logits: LogitsMode::All }).unwrap();
                ids.insert(id, i);
            }
        }
        if batch.is_idle() && step > *join.iter().max().unwrap() {
            break;
        }
        for e in batch.step().unwrap() {
            match e {
                Event::Logits { seq, first_pos, rows } => {
                    let o = &mut outs[ids[&seq]];
                    if first_pos < prompts[ids[&seq]].len() {
                        o.prompt_logits.extend_from_slice(&rows);
                    } else {
                        o.step_logits.extend_from_slice(&rows);
                    }
                }
                Event::Done(c) => outs[ids[&c.id]].tokens = c.tokens,
                _ => {}
            }
        }
        step += 1;
    }
    outs
}

fn check(name: &str, dir: &str) {
    let solo_model = model(name, 1);
    let prompts = eight_prompts(&solo_model, dir);
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    for sampled in [false, true] {
        let solo: Vec<Out> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| run_batched(&solo_model, std::slice::from_ref(p), &[0], &[i], sampled).remove(0))
            .collect();
        // Four slots for eight sequences: some wait for a free slot; the others join at
        // steps 0, 1, 3 and 7, while earlier ones prefill or decode.
        let together = run_batched(&model(name, 4), &prompts, &[0, 0, 1, 3, 3, 7, 7, 8], &[0, 1, 2, 3, 4, 5, 6, 7], sampled);
        for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
            assert_eq!(a.tokens.len(), N_GEN, "{name} prompt {i}");
            assert_eq!(a.tokens, b.tokens, "{name} prompt {i} ({} tokens, sampled: {sampled}): tokens differ", lens[i]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&a.prompt_logits) == bits(&b.prompt_logits),
                "{name} prompt {i} ({} tokens): prompt logits differ",
                lens[i]
            );
            assert!(bits(&a.step_logits) == bits(&b.step_logits), "{name} prompt {i}: generation logits differ");
            assert_eq!(a.prompt_logits.len(), lens[i] * solo_model.n_vocab());
            assert_eq!(a.step_logits.len(), (N_GEN - 1) * solo_model.n_vocab());
        }
        println!("{name}: 8 prompts of {lens:?} tokens, batched 4 at a time, bit-identical to solo (sampled: {sampled})");
    }
}

#[test]
fn batched_equals_solo_bpe_vocabulary() {
    check("tiny-i2_s.gguf", "reference/tiny-i2_s");
}

#[test]
fn batched_equals_solo_sentencepiece_vocabulary() {
    check("b1-spm-i2_s.gguf", "reference/b1-spm-i2_s");
}

/// A cancelled sequence leaves at once and its slot is reused: the next sequence in that
/// slot gets the bits it gets alone (the cache it finds is as clean as a fresh one).
#[test]
fn cancelled_slot_is_reused_cleanly() {
    let m = model("tiny-i2_s.gguf", 1);
    let prompts = eight_prompts(&m, "reference/tiny-i2_s");
    let alone = run_batched(&m, &prompts[4..5], &[0], &[4], false).remove(0);
    let mut batch = Batch::new(m.clone()).unwrap();
    let first = batch.add(Request::new(prompts[7].clone(), params(0, false))).unwrap();
    for _ in 0..6 {
        batch.step().unwrap();
    }
    let c = batch.cancel(first).expect("the sequence is running");
    assert_eq!(c.finish, runtime::FinishReason::Cancelled);
    assert_eq!(batch.n_active(), 0, "the slot is free at once");
    let second = batch.add(Request { prompt: prompts[4].clone(), params: params(4, false), logits: LogitsMode::All }).unwrap();
    let mut out = Out::default();
    while !batch.is_idle() {
        for e in batch.step().unwrap() {
            match e {
                Event::Logits { first_pos, rows, .. } if first_pos < prompts[4].len() => {
                    out.prompt_logits.extend_from_slice(&rows)
                }
                Event::Logits { rows, .. } => out.step_logits.extend_from_slice(&rows),
                Event::Done(c) if c.id == second => out.tokens = c.tokens,
                _ => {}
            }
        }
    }
    assert!(out == alone, "a reused slot changed the result");
}
