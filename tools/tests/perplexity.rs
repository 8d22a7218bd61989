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
