//! The `bitnet-graph` binary as a user runs it: dump in every format, exec matching
//! bitnet.cpp's tokens through the whole pipeline (tokenizer included), and clear errors
//! with exit code 2 on bad input. Run with `--release`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

fn tiny() -> String {
    shared("models/tiny-i2_s.gguf").display().to_string()
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

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(shared(path)).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn dump_table_dot_json_and_tensors() {
    let model = tiny();
    let t = bg(&["dump", &model]);
    assert!(t.status.success(), "{}", stderr(&t));
    let s = stdout(&t);
    assert!(s.contains("architecture: bitnet-b1.58"));
    assert!(s.contains("ffn_sub_norm-1") && s.contains("[T, 512]") && s.contains("[O, 128256]"), "{s}");

    let d = bg(&["dump", &model, "--format", "dot"]);
    assert!(d.status.success());
    let dot = stdout(&d);
    assert!(dot.starts_with("digraph") && dot.contains("subgraph cluster_layer_0") && dot.contains("subgraph cluster_layer_1"));
    assert_eq!(dot, stdout(&bg(&["dump", &model, "--format", "dot"])), "DOT output must be deterministic");

    let j = bg(&["dump", &model, "--format", "json"]);
    assert!(j.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&j)).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    let sub = nodes.iter().find(|n| n["name"] == "ffn_sub_norm-0").unwrap();
    assert_eq!(sub["op"], "RmsNorm");
    assert_eq!(sub["shape"], serde_json::json!(["T", 512]));
    assert_eq!(sub["dtype"], "f32");
    assert_eq!(sub["weight"]["name"], "blk.0.ffn_sub_norm.weight");
    assert_eq!(sub["inputs"], serde_json::json!(["ffn_out-0", "blk.0.ffn_sub_norm.weight"]));
    assert_eq!(v["hparams"]["n_ff"], 512);

    let ts = bg(&["dump", &model, "--tensors"]);
    assert!(ts.status.success());
    let ts = stdout(&ts);
    assert_eq!(ts.lines().count(), 25);
    assert!(ts.contains("blk.0.attn_q.weight") && ts.contains("i2_s") && ts.contains("16416"), "{ts}");
}

#[test]
fn dot_renders_with_graphviz_when_available() {
    let dot_ok = Command::new("dot").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
    if !dot_ok {
        println!("graphviz `dot` not installed; skipping the render check");
        return;
    }
    let src = stdout(&bg(&["dump", &tiny(), "--format", "dot"]));
    let dir = std::env::temp_dir().join(format!("bg-dot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("g.dot"), src).unwrap();
    let out = Command::new("dot").args(["-Tsvg", "-o"]).arg(dir.join("g.svg")).arg(dir.join("g.dot")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(dir.join("g.svg")).unwrap().contains("<svg"));
}

/// Every shared prompt of every shared model through the CLI, token by token (`--ubatch 1`,
/// bitnet.cpp's `run_inference.py` mode): prompt ids, 32 greedy tokens and the generated
/// text equal the reference (BPE and SentencePiece vocabularies; I2_S, TQ2_0, TQ1_0; archs
/// bitnet-b1.58, bitnet, llama).
#[test]
fn exec_greedy_matches_reference_token_by_token() {
    let models = [
        ("tiny-i2_s", "reference/tiny-i2_s/seq"),
        ("b1-spm-i2_s", "reference/b1-spm-i2_s/seq"),
        ("llama-tern-i2_s", "reference/llama-tern-i2_s/seq"),
        ("b158-spm-tq2_0", "reference/b158-spm-tq2_0/seq"),
        ("b158-spm-tq1_0", "reference/b158-spm-tq1_0/seq"),
    ];
    for (model, dir) in models {
        let path = shared(&format!("models/{model}.gguf")).display().to_string();
        let idx = json(&format!("{dir}/index.json"));
        for p in idx["prompts"].as_array().unwrap() {
            let o = bg(&[
                "exec",
                &path,
                "-p",
                p["text"].as_str().unwrap(),
                "-n",
                "32",
                "--temperature",
                "0",
                "--ubatch",
                "1",
                "--ignore-eos",
                "--json",
            ]);
            assert!(o.status.success(), "{model}: {}", stderr(&o));
            let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            assert_eq!(ids(&r["prompt_tokens"]), ids(&p["prompt_tokens"]), "{model} {}", p["id"]);
            assert_eq!(ids(&r["generated_tokens"]), ids(&p["gen_tokens"]), "{model} {}", p["id"]);
            assert_eq!(r["text"], p["gen_text"], "{model} {}", p["id"]);
        }
    }
}

/// Batched prompt (`--ubatch 512`) with `--logits-out`, every shared prompt of the tiny
/// model on the default backend: the greedy tokens equal the reference's batched run, and
/// where the reference ships full logits, every position's logits are bit-identical.
#[test]
fn exec_batched_logits_out_matches_reference() {
    let idx = json("reference/tiny-i2_s/index.json");
    let dir = std::env::temp_dir().join(format!("bg-logits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for p in idx["prompts"].as_array().unwrap() {
        let out = dir.join("l.npy");
        let o = bg(&[
            "exec",
            &tiny(),
            "-p",
            p["text"].as_str().unwrap(),
            "-n",
            "32",
            "--temperature",
            "0",
            "--ignore-eos",
            "--json",
            "--ubatch",
            "512",
            "--logits-out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(ids(&r["generated_tokens"]), ids(&p["gen_tokens"]), "{}", p["id"]);
        let got = gguf::npy::read_f32(&out).unwrap();
        assert_eq!(got.shape, vec![ids(&p["prompt_tokens"]).len(), 128256]);
        let ref_file = shared(&format!("reference/tiny-i2_s/{}", p["logits_file"].as_str().unwrap()));
        if ref_file.exists() {
            let want = gguf::npy::read_f32(ref_file).unwrap();
            let differ = got.data.iter().zip(&want.data).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{}: {differ} logits differ", p["id"]);
        }
    }
}

#[test]
fn exec_streams_text_and_reports_timings() {
    let o = bg(&["exec", &tiny(), "-p", "Hello, world!", "-n", "4", "--temperature", "0", "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).trim().is_empty());
    let e = stderr(&o);
    assert!(e.contains("loading") && e.contains("timings:") && e.contains("tok/s"), "{e}");
}

#[test]
fn bad_input_gives_clear_errors_and_exit_2() {
    let model = tiny();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["exec", "/nonexistent.gguf", "-p", "x"], "/nonexistent.gguf"),
        (vec!["exec", &model, "-p", "one two three four five six seven", "--ctx-size", "4"], "context holds 4"),
        (vec!["exec", &model, "-p", "x", "--top-p", "2"], "top-p"),
        (vec!["exec", &model, "-p", "x", "--ubatch", "0"], "--ubatch"),
        (vec!["exec", &model, "-p", "x", "--frobnicate"], "--frobnicate"),
        (vec!["exec", &model, "-p", "", "--no-bos"], "empty"),
        (vec!["dump", "Cargo.toml"], "gguf"),
        (vec!["dump", &model, "--format", "yaml"], "yaml"),
    ];
    for (args, needle) in cases {
        let o = bg(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
}

/// `synth` writes every supported architecture and weight type; each file dumps, runs and
/// passes the cross-check of the default backend against scalar.
#[test]
fn synth_writes_every_architecture_and_type() {
    let dir = std::env::temp_dir().join(format!("bg-synth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vocab = shared("models/b1-spm-i2_s.gguf").display().to_string();
    let cases: &[&[&str]] = &[
        &["--arch", "bitnet-b1.58"],
        &["--arch", "bitnet"],
        &["--arch", "llama", "--output-weight"],
        &["--type", "tq2_0", "--embd-type", "q4_0"],
        &["--type", "tq1_0"],
        &["--arch", "bitnet", "--embd", "384", "--heads", "6", "--kv-heads", "6"],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let out = dir.join(format!("m{i}.gguf")).display().to_string();
        let mut args = vec!["synth", "--vocab-from", &vocab, "--out", &out, "--seed", "3"];
        args.extend_from_slice(extra);
        let o = bg(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let d = bg(&["dump", &out]);
        assert!(d.status.success(), "{extra:?}: {}", stderr(&d));
        let e = bg(&["exec", &out, "-p", "Hello world", "-n", "3", "--temperature", "0", "--json"]);
        assert!(e.status.success(), "{extra:?}: {}", stderr(&e));
        let c = bg(&["check", &out]);
        assert!(c.status.success(), "{extra:?}: {}{}", stdout(&c), stderr(&c));
        assert!(stdout(&c).contains(" 0 failed"), "{extra:?}");
    }
    let bad = bg(&["synth", "--vocab-from", &vocab, "--out", "/tmp/never.gguf", "--embd", "200"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("multiple of 128"), "{}", stderr(&bad));
}

/// `check` in both modes and all formats, and `exec --crosscheck`, on the tiny model.
#[test]
fn check_and_crosscheck_pass_on_the_tiny_model() {
    let model = tiny();
    for mode in ["isolated", "cumulative"] {
        let o = bg(&["check", &model, "--mode", mode]);
        assert!(o.status.success(), "{mode}: {}{}", stdout(&o), stderr(&o));
        let last = stdout(&o).lines().last().unwrap_or_default().to_string();
        assert!(last.starts_with("check: ") && last.contains(" 0 failed"), "{mode}: {last}");
    }
    let j = bg(&["check", &model, "--format", "json"]);
    assert!(j.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&j)).unwrap();
    assert_eq!(v["failed"], 0);
    assert!(v["report"]["nodes"].as_array().unwrap().len() > 50);
    let d = bg(&["check", &model, "--format", "dot"]);
    assert!(d.status.success() && stdout(&d).starts_with("digraph"));
    if stdout(&bg(&["dump", &model])).contains("avx2:") {
        let e = bg(&["exec", &model, "-p", "Hello, world!", "-n", "4", "--temperature", "0", "--crosscheck"]);
        assert!(e.status.success(), "{}", stderr(&e));
        assert!(stderr(&e).contains("crosscheck over 4 steps") && stderr(&e).contains(" 0 failed"), "{}", stderr(&e));
    } else {
        println!("no AVX2 on this host: exec --crosscheck has no candidate to check");
    }
}
