//! Long context, bit for bit (issue 16): models synthesized with a 2048-position context,
//! a 700-token prompt, and every backend this CPU runs must give the scalar reference's
//! logits exactly — at rows of every prompt chunk (attention over up to 700 positions, the
//! ≥ 2-column forms of ../shared/docs/format.md §4.4) and at decoded tokens after the prompt (the
//! 1-column forms at depth). Two shapes: head dim 128 with 4 query heads per KV head (the
//! 2B-4T's), and the tiny preset's head dim 64 with 2. Chunks of odd lengths put query
//! blocks across 32-position boundaries. Run with `--release`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use graph::{ExecConfig, Executor};
use runtime::{Model, ModelOptions};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

/// Writes a synthetic model with a 2048-position context.
fn synth(out: &Path, extra: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-graph"))
        .args(["synth", "--force", "--ctx", "2048", "--vocab-from"])
        .arg(shared("models/tiny-i2_s.gguf"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run bitnet-graph synth");
    assert!(o.status.success(), "synth: {}", String::from_utf8_lossy(&o.stderr));
}

/// Prompt tokens: deterministic, spread over the vocabulary.
fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

/// Logit rows of `backend`: the last `OUT` rows of every chunk of the prompt, then `DECODE`
/// one-token steps fed back greedily.
fn logits(model: &Path, backend: &str, tokens: &[u32], chunks: &[usize]) -> Vec<Vec<f32>> {
    const OUT: usize = 6;
    const DECODE: usize = 4;
    let opts = ModelOptions { backend: backend.into(), threads: 2, n_ctx: Some(2048), ..ModelOptions::default() };
    let m = Arc::new(Model::load(model, &opts).expect("load"));
    let mut ex = Executor::new(m.program().clone(), ExecConfig::solo(2048, 512)).expect("executor");
    let n_vocab = m.n_vocab();
    let mut rows = Vec::new();
    let mut pos = 0;
    for &c in chunks {
        let chunk = &tokens[pos..pos + c];
        let out = m.install(|| ex.forward(chunk, pos, OUT).map(<[f32]>::to_vec)).expect("prompt chunk");
        rows.extend(out.chunks(n_vocab).map(<[f32]>::to_vec));
        pos += c;
    }
    assert_eq!(pos, tokens.len());
    let mut tok = runtime::sampler::argmax(rows.last().unwrap()) as u32;
    for k in 0..DECODE {
        let out = m.install(|| ex.forward(&[tok], pos + k, 1).map(<[f32]>::to_vec)).expect("decode step");
        tok = runtime::sampler::argmax(&out) as u32;
        rows.push(out);
    }
    rows
}

fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> Option<(usize, usize, f32, f32)> {
    for (r, (x, y)) in a.iter().zip(b).enumerate() {
        if let Some(i) = x.iter().zip(y).position(|(p, q)| p.to_bits() != q.to_bits()) {
            return Some((r, i, x[i], y[i]));
        }
    }
    None
}

fn check_shape(tag: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{tag}.gguf"));
    synth(&path, extra);
    let tokens = prompt(700, 128_256);
    let others: Vec<&str> = ["avx2", "avx512"].into_iter().filter(|b| runtime::backends::by_name(b).is_ok()).collect();
    for chunks in [&[512usize, 188][..], &[37, 300, 363][..]] {
        let reference = logits(&path, "scalar", &tokens, chunks);
        assert!(reference.iter().flatten().all(|v| v.is_finite()), "{tag}: non-finite reference logits");
        for &b in &others {
            let got = logits(&path, b, &tokens, chunks);
            assert_eq!(got.len(), reference.len());
            if let Some((r, i, x, y)) = same_bits(&reference, &got) {
                panic!("{tag}, chunks {chunks:?}: {b} differs from scalar at row {r}, logit {i}: {x} vs {y}");
            }
        }
        eprintln!("{tag}, chunks {chunks:?}: scalar and {others:?} agree bit for bit on {} rows", reference.len());
    }
}

#[test]
fn head_dim_128_gqa_4_at_700_tokens() {
    check_shape("hd128", &["--embd", "512", "--heads", "4", "--kv-heads", "1", "--ff", "512", "--layers", "2"]);
}

#[test]
fn tiny_dims_at_700_tokens() {
    check_shape("tiny", &[]);
}
