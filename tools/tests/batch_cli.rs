//! `exec --prompts-file FILE --parallel N` as a user runs it: every line's result equals the
//! same prompt run alone by `exec`, token for token (greedy and seeded sampling), in input
//! order; bad lines are reported with their line number while the others still run; bad
//! files and flags are clear errors. Run with `--release`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

fn bg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet-graph")).args(args).output().expect("run bitnet-graph")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bg-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const PROMPTS: [&str; 6] = [
    "Hello, world!",
    "The capital of France is",
    "def fibonacci(n):",
    "- a prompt that starts with a dash",
    "Once upon a time, in a land far away, there lived",
    "1 2 3 4 5 6 7 8 9 10",
];

#[test]
fn prompts_file_equals_solo_exec() {
    for model in ["models/tiny-i2_s.gguf", "models/b1-spm-i2_s.gguf"] {
        let model = shared(model).display().to_string();
        // Plain lines (greedy from the command line) and JSONL lines with their own settings.
        let mut lines: Vec<String> = PROMPTS[..3].iter().map(|p| p.to_string()).collect();
        for (i, p) in PROMPTS[3..].iter().enumerate() {
            lines.push(serde_json::json!({"prompt": p, "max_tokens": 12, "temperature": 0.8, "seed": 40 + i}).to_string());
        }
        let file = tmp("prompts.txt", &lines.join("\n"));
        let o = bg(&[
            "exec",
            &model,
            "--prompts-file",
            file.to_str().unwrap(),
            "--parallel",
            "4",
            "-n",
            "16",
            "--temp",
            "0",
            "--ignore-eos",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let got = json_lines(&o);
        assert_eq!(got.len(), PROMPTS.len());
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r["line"], i + 1);
            let solo = if i < 3 {
                bg(&["exec", &model, "-p", PROMPTS[i], "-n", "16", "--temp", "0", "--ignore-eos", "--json"])
            } else {
                let seed = (40 + i - 3).to_string();
                bg(&["exec", &model, "-p", PROMPTS[i], "-n", "12", "--temp", "0.8", "--seed", &seed, "--ignore-eos", "--json"])
            };
            assert!(solo.status.success(), "{}", stderr(&solo));
            let want = &json_lines(&solo)[0];
            assert_eq!(r["prompt_tokens"], want["prompt_tokens"], "{model} line {}", i + 1);
            assert_eq!(r["generated_tokens"], want["generated_tokens"], "{model} line {}", i + 1);
            assert_eq!(r["text"], want["text"], "{model} line {}", i + 1);
        }
    }
}

#[test]
fn bad_lines_are_reported_and_the_others_still_run() {
    let model = shared("models/tiny-i2_s.gguf").display().to_string();
    let long = "word ".repeat(600);
    let text =
        format!("Hello\n{{\"prompt\": \n{long}\n{{\"prompt\": \"x\", \"temperature\": \"hot\"}}\nThe capital of France is\n");
    let file = tmp("bad.txt", &text);
    let o = bg(&["exec", &model, "--prompts-file", file.to_str().unwrap(), "-n", "4", "--temp", "0", "--parallel", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let got = json_lines(&o);
    assert_eq!(got.len(), 5, "one result per line, in order");
    assert!(got[0]["text"].is_string() && got[4]["text"].is_string(), "the good lines ran");
    let e = stderr(&o);
    assert!(got[1]["error"].as_str().unwrap().contains("invalid JSON"), "{}", got[1]);
    assert!(e.contains(":2: invalid JSON"), "{e}");
    assert!(got[2]["error"].as_str().unwrap().contains("context holds 512"), "{}", got[2]);
    assert!(e.contains(":3: "), "{e}");
    assert!(got[3]["error"].as_str().unwrap().contains("invalid JSON"), "{}", got[3]);
    assert!(!e.contains("panicked"));

    let empty = tmp("empty.txt", "\n\n");
    let o = bg(&["exec", &model, "--prompts-file", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no prompts (the file is empty)"), "{}", stderr(&o));
    let o = bg(&["exec", &model, "--prompts-file", file.to_str().unwrap(), "--parallel", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--parallel 0"), "{}", stderr(&o));
    let o = bg(&["exec", &model, "--prompts-file", "/nonexistent/prompts.txt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/prompts.txt"), "{}", stderr(&o));
}
