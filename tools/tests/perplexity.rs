//! `bitnet-graph perplexity` against bitnet.cpp's `llama-perplexity` (../shared/reference/
//! perplexity): every run of summary.json reproduced to every printed digit (running
//! estimates, final PPL and ±), the KL-divergence run's statistics from a base file written
//! by llama-perplexity itself (tests/data), and clear errors with exit code 2 on bad input.
//! Run with `--release`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn bg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet-graph")).args(args).output().expect("run bitnet-graph")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn gpl3() -> String {
    shared("reference/perplexity/gpl3.txt").display().to_string()
}

/// The model file of a summary.json run.
fn model_path(name: &str) -> String {
    let dir = if name.ends_with("-q6k") { "models-q6k" } else { "models" };
    shared(&format!("{dir}/{name}.gguf")).display().to_string()
}

#[test]
fn every_summary_run_to_every_printed_digit() {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared("reference/perplexity/summary.json")).unwrap()).unwrap();
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 7);
    for r in runs {
        let (model, ctx) = (r["model"].as_str().unwrap(), r["ctx"].as_u64().unwrap().to_string());
        assert_eq!(r["text"], "gpl3");
        let o = bg(&["perplexity", &model_path(model), "-f", &gpl3(), "-c", &ctx, "-b", &ctx, "-t", "2"]);
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let out = stdout(&o);
        let want: String = r["per_chunk"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| format!("[{}]{:.4},", i + 1, v.as_f64().unwrap()))
            .collect();
        let final_line =
            format!("Final estimate: PPL = {:.4} +/- {:.5}", r["final"].as_f64().unwrap(), r["plusminus"].as_f64().unwrap());
        assert_eq!(out, format!("{want}\n{final_line}\n"), "{model} -c {ctx}");
        assert_eq!(r["n_chunks"].as_u64().unwrap() as usize, r["per_chunk"].as_array().unwrap().len());
        let tokens = format!("perplexity: {} tokens;", r["n_tokens"]);
        assert!(stderr(&o).contains(&tokens), "{model}: {}", stderr(&o));
        println!("{model} -c {ctx}: {} running estimates and the final line identical", r["n_chunks"]);
    }
}

/// llama-perplexity's base file (tests/data, made by the shared tool) and ours for the same
/// run are the same bytes; reading it back, the statistics are llama-perplexity's.
#[test]
fn base_file_is_llama_perplexitys() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.kld");
    let model = model_path("b1-spm-i2_s");
    let o = bg(&["perplexity", &model, "-f", &gpl3(), "-c", "8", "-b", "8", "--chunks", "2", "--kl-divergence-base"]).status;
    assert!(!o.success(), "--kl-divergence-base needs a file");
    let o = bg(&[
        "perplexity",
        &model,
        "-f",
        &gpl3(),
        "-c",
        "8",
        "-b",
        "8",
        "--chunks",
        "2",
        "--kl-divergence-base",
        ours.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "[1]5164012.8948,[2]751141.2602,\nFinal estimate: PPL = 751141.2602 +/- 1009837.75820\n");
    let theirs = std::fs::read(data("b1-spm-i2_s_c8_chunks2.kld")).unwrap();
    assert!(std::fs::read(&ours).unwrap() == theirs, "the base file differs from llama-perplexity's");

    let base = data("b1-spm-i2_s_c8_chunks2.kld").display().to_string();
    let o = bg(&["perplexity", &model_path("llama-tern-i2_s"), "-b", "8", "--kl-divergence-base", &base, "--kl-divergence"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), std::fs::read_to_string(data("llama-tern-i2_s_vs_b1-spm-i2_s_c8.txt")).unwrap());
}

/// The shared KL-divergence run (tiny-i2_s-q6k against tiny-i2_s, -c 128, 8 chunks): every
/// chunk line and every closing statistic as llama-perplexity printed them.
#[test]
fn kl_divergence_reference_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("tiny.kld").display().to_string();
    let args = ["-f", &gpl3(), "-c", "128", "-b", "128", "--chunks", "8", "-t", "2", "--kl-divergence-base", &base];
    let o = bg(&[&["perplexity", &model_path("tiny-i2_s")][..], &args].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bg(&[&["perplexity", &model_path("tiny-i2_s-q6k")][..], &args, &["--kl-divergence"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(shared("reference/perplexity/kld_tiny-i2_s-q6k_vs_tiny-i2_s.log")).unwrap();
    let from = log.find("\nchunk ").expect("the log's first chunk line");
    let to = log.find("llama_perf").expect("the log's closing timings");
    assert_eq!(stdout(&o), &log[from..to]);
    assert!(stdout(&o).contains("Mean    KLD:   0.012877 ±   0.000185") && stdout(&o).contains("Same top p: 87.302 ± 1.485 %"));

    // --json carries the same figures.
    let o = bg(&[&["perplexity", &model_path("tiny-i2_s-q6k")][..], &args, &["--kl-divergence", "--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(format!("{:.6}", v["mean_kld"].as_f64().unwrap()), "0.012877");
    assert_eq!(format!("{:.3}", 100.0 * v["same_top_p"].as_f64().unwrap()), "87.302");

    // The base holds the text's tokens: the same text passes, another is refused.
    let q6k = model_path("tiny-i2_s-q6k");
    let o = bg(&["perplexity", &q6k, "-f", &gpl3(), "--kl-divergence-base", &base, "--kl-divergence", "--chunks", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = dir.path().join("other.txt");
    std::fs::write(&other, "Some other text entirely. ".repeat(400)).unwrap();
    let o = bg(&[
        "perplexity",
        &model_path("tiny-i2_s-q6k"),
        "-f",
        other.to_str().unwrap(),
        "--kl-divergence-base",
        &base,
        "--kl-divergence",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("was made from another text"), "{}", stderr(&o));
    // A base from another vocabulary.
    let o = bg(&["perplexity", &model_path("b1-spm-i2_s"), "--kl-divergence-base", &base, "--kl-divergence"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("vocabulary of 128256 tokens, this model has 32000"), "{}", stderr(&o));
    // Not a base file, and a truncated one.
    let o = bg(&["perplexity", &model_path("tiny-i2_s"), "--kl-divergence-base", &gpl3(), "--kl-divergence"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a llama-perplexity base file"), "{}", stderr(&o));
    let cut = dir.path().join("cut.kld");
    let bytes = std::fs::read(&base).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = bg(&["perplexity", &model_path("tiny-i2_s"), "--kl-divergence-base", cut.to_str().unwrap(), "--kl-divergence"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("(truncated or not a base file)"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("chunk 1/8"), "checked before evaluating: {}", stderr(&o));
}

#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = model_path("tiny-i2_s");
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![file("empty.txt", b"")], "tokenizes to 1 tokens; perplexity with a context of 512 needs at least 1024"),
        (vec![file("short.txt", b"Just a few words."), "-c".into(), "8".into()], "needs at least 16"),
        (vec![file("latin1.txt", b"caf\xe9 au lait")], "not UTF-8 text (invalid byte at offset 3)"),
        (vec![gpl3(), "-c".into(), "127".into()], "-c/--ctx-size 127 must be even"),
        (vec![gpl3(), "-c".into(), "1000000".into()], "exceeds the"),
        (vec![gpl3(), "--chunks".into(), "0".into()], "--chunks must be at least 1"),
        (vec![dir.path().join("missing.txt").display().to_string()], "missing.txt"),
    ];
    for (args, want) in cases {
        let mut all = vec!["perplexity".to_string(), tiny.clone(), "-f".into()];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = bg(&refs);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
}

/// --json: per-chunk estimates, final PPL and ±, token counts and tok/s.
#[test]
fn json_output() {
    let o = bg(&["perplexity", &model_path("b1-spm-i2_s"), "-f", &gpl3(), "-c", "128", "--chunks", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let r = &v["result"];
    let per: Vec<String> = r["per_chunk"].as_array().unwrap().iter().map(|x| format!("{:.4}", x.as_f64().unwrap())).collect();
    assert_eq!(per, ["4226294.7655", "5785240.5293", "4009217.5739"]);
    assert_eq!((r["n_tokens"].as_u64(), r["n_chunks"].as_u64(), r["n_scored"].as_u64()), (Some(8707), Some(3), Some(189)));
    assert_eq!(r["n_evaluated"].as_u64(), Some(384));
    assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0 && r["plusminus"].as_f64().unwrap() > 0.0);
}
