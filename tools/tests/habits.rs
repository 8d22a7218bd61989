//! The CLI's habits, as a llama.cpp user meets them (issue 14): output into a closed pipe ends
//! quietly, into a full disk is a clear error; llama.cpp's flag spellings; negative values
//! and prompts that start with `-`; `--chat-template`/`--system` imply `--chat`; clear
//! errors for conflicting or out-of-range flags. Exit codes: 0 ok, 1 a check failed, 2 bad
//! input. Run with `--release`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

fn tiny() -> String {
    shared("models/tiny-i2_s.gguf").display().to_string()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitnet-graph"))
}

fn bg(args: &[&str]) -> Output {
    bin().args(args).output().expect("run bitnet-graph")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every subcommand that writes to stdout, with arguments that make it write a lot.
fn writers() -> Vec<Vec<String>> {
    let m = tiny();
    [
        vec!["dump", &m],
        vec!["dump", &m, "--format", "json"],
        vec!["dump", &m, "--tensors"],
        vec!["exec", &m, "-p", "Hello", "-n", "64", "--temp", "0", "--ignore-eos"],
        vec!["exec", &m, "-p", "Hello", "-n", "4", "--temp", "0", "--json"],
        vec!["check", &m, "--steps", "1"],
        vec!["bench", &m, "-p", "8", "-n", "4", "-r", "1"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect()
}

#[test]
fn a_closed_pipe_ends_every_subcommand_quietly() {
    for args in writers() {
        // The reader reads one byte and goes away, as `| head -c 1` does.
        let mut child = bin().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut one = [0u8; 1];
        let _ = out.read(&mut one);
        drop(out);
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {e}");
        assert!(!e.contains("panicked") && !e.contains("error:"), "{args:?}: {e}");
    }
}

#[test]
fn a_full_disk_is_a_clear_error_naming_what_was_written() {
    if !std::path::Path::new("/dev/full").exists() {
        println!("SKIPPED: no /dev/full on this system");
        return;
    }
    for args in writers() {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = bin().args(&args).stdout(full).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains("writing to standard output") && e.contains("No space left"), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
    // A file output: the error names it and no partial file is left.
    let dir = std::env::temp_dir().join(format!("bg-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = bg(&["exec", &tiny(), "-p", "Hi", "-n", "1", "--logits-out", "/dev/full/l.npy"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/dev/full/l.npy"), "{}", stderr(&o));
}

/// llama.cpp's spellings give the same run as ours.
#[test]
fn llama_cpp_spellings_are_aliases() {
    let m = tiny();
    let ours = bg(&["exec", &m, "-p", "Hello", "--max-new-tokens", "6", "--temperature", "0", "--seed", "3", "--json"]);
    let theirs = bg(&["exec", &m, "-p", "Hello", "--n-predict", "6", "--temp", "0", "-s", "3", "--json"]);
    assert!(ours.status.success() && theirs.status.success(), "{}{}", stderr(&ours), stderr(&theirs));
    let toks = |o: &Output| serde_json::from_str::<serde_json::Value>(&stdout(o)).unwrap()["generated_tokens"].clone();
    assert_eq!(toks(&ours), toks(&theirs));
    // -f FILE and -f - (stdin) read the prompt.
    let file = std::env::temp_dir().join(format!("bg-prompt-{}.txt", std::process::id()));
    std::fs::write(&file, "Hello").unwrap();
    let from_file = bg(&["exec", &m, "-f", file.to_str().unwrap(), "-n", "6", "--temp", "0", "--json"]);
    assert_eq!(toks(&from_file), toks(&ours), "{}", stderr(&from_file));
    let mut child = bin()
        .args(["exec", &m, "-f", "-", "-n", "6", "--temp", "0", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"Hello").unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert_eq!(toks(&from_stdin), toks(&ours));
    // -n -1: until the end of generation or of the context (a 16-position context here).
    let o = bg(&["exec", &m, "-p", "Hello", "-n", "-1", "--temp", "0", "--ignore-eos", "-c", "16", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["stop_reason"], "context_full");
    assert_eq!(r["n_prompt_tokens"].as_u64().unwrap() + r["n_generated_tokens"].as_u64().unwrap(), 17, "{r}");
    // --verbose-prompt lists the prompt's tokens.
    let o = bg(&["exec", &m, "-p", "Hello", "-n", "1", "--verbose-prompt"]);
    assert!(stderr(&o).contains("128000 -> '<|begin_of_text|>'") && stderr(&o).contains("9906 -> 'Hello'"), "{}", stderr(&o));
}

#[test]
fn negative_values_and_dash_prompts() {
    let m = tiny();
    // A negative temperature is greedy (as in llama.cpp); seed -1 is random.
    let neg = bg(&["exec", &m, "-p", "- item one", "--temperature", "-1", "--seed", "-1", "-n", "4", "--json"]);
    assert!(neg.status.success(), "{}", stderr(&neg));
    let greedy = bg(&["exec", &m, "-p", "- item one", "--temperature", "0", "-n", "4", "--json"]);
    let toks = |o: &Output| serde_json::from_str::<serde_json::Value>(&stdout(o)).unwrap()["generated_tokens"].clone();
    assert_eq!(toks(&neg), toks(&greedy));
    for (args, needle) in [
        (vec!["--temperature", "NaN"], "--temperature"),
        (vec!["--temperature", "inf"], "--temperature"),
        (vec!["--seed", "-2"], "--seed -2"),
        (vec!["-n", "-3"], "--n-predict -3"),
        (vec!["--top-p", "-0.5"], "--top-p"),
    ] {
        let o = bg(&[&["exec", m.as_str(), "-p", "x"][..], &args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn chat_template_and_system_imply_chat_and_the_format_is_said() {
    let m = tiny();
    let named = bg(&["exec", &m, "-p", "Hi", "--chat-template", "llama3", "--system", "Be brief", "-n", "2", "--temp", "0"]);
    assert!(named.status.success(), "{}", stderr(&named));
    assert!(stderr(&named).contains("chat format: llama3 (--chat-template)"), "{}", stderr(&named));
    let detected = bg(&["exec", &m, "-p", "Hi", "--system", "Be brief", "-n", "2", "--temp", "0"]);
    assert!(detected.status.success(), "{}", stderr(&detected));
    assert!(stderr(&detected).contains("chat format: bitnet (detected from the model)"), "{}", stderr(&detected));
    let plain = bg(&["exec", &m, "-p", "Hi", "--chat", "-n", "2", "--temp", "0", "--json"]);
    let with_system = bg(&["exec", &m, "-p", "Hi", "--system", "Be brief", "-n", "2", "--temp", "0", "--json"]);
    let ptoks =
        |o: &Output| serde_json::from_str::<serde_json::Value>(&stdout(o)).unwrap()["prompt_tokens"].as_array().unwrap().len();
    assert!(ptoks(&with_system) > ptoks(&plain), "the system message is in the prompt");
}

#[test]
fn conflicting_and_out_of_range_flags_are_errors() {
    let m = tiny();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["bench", &m, "--ubatch", "0"], "--ubatch"),
        (vec!["check", &m, "--mode", "isolated", "--cumulative"], "cannot be used with"),
        (vec!["exec", &m, "-p", "x", "-f", "y.txt"], "cannot be used with"),
        (vec!["exec", &m, "-p", "x", "--backend", "gpu"], "gpu"),
        (vec!["exec", &m, "-p", "x", "--threads", "99999"], "--threads"),
        (vec!["dump", &m, "--tensors", "--format", "dot"], "--tensors"),
    ];
    for (args, needle) in cases {
        let o = bg(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
    // A context above the trained one is accepted with a warning; a prompt too long for the
    // context names both numbers without claiming a maximum.
    let o = bg(&["exec", &m, "-p", "Hello", "-n", "1", "-c", "1024"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: --ctx-size 1024 exceeds the 512 positions"), "{}", stderr(&o));
    let o = bg(&["exec", &m, "-p", "one two three four five", "-c", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has 6 tokens but the context holds 3 (raise --ctx-size"), "{}", stderr(&o));
    // check --reference avx2 works where avx2 runs (the ops it lacks run on scalar).
    if stdout(&bg(&["dump", &m])).contains("avx2:") {
        let o = bg(&["check", &m, "--reference", "avx2", "--candidate", "scalar", "--steps", "1"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));
    }
}

/// A copy of tiny-i2_s with a NaN written into `output_norm.weight` (in a temp dir).
fn nan_model(dir: &tempfile::TempDir) -> String {
    let src = shared("models/tiny-i2_s.gguf");
    let t = gguf::GgufFile::open(&src).unwrap().tensor("output_norm.weight").unwrap().clone();
    let mut data = std::fs::read(&src).unwrap();
    let at = t.abs_offset as usize + 4 * 3;
    data[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let path = dir.path().join("nan.gguf");
    std::fs::write(&path, data).unwrap();
    path.display().to_string()
}

#[test]
fn check_tensors_refuses_a_nan_weight_and_check_flags_non_finite_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let m = nan_model(&dir);
    // Without the flag the NaN runs through (llama.cpp's behaviour too) …
    let o = bg(&["exec", &m, "-p", "hi", "-n", "2", "--temp", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // … with it, `exec`, `serve` and `check` refuse the file before running, naming the tensor.
    for args in [
        vec!["exec", &m, "-p", "hi", "-n", "2", "--check-tensors"],
        vec!["serve", &m, "--port", "0", "--check-tensors"],
        vec!["check", &m, "--check-tensors"],
    ] {
        let o = bg(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("output_norm.weight") && e.contains("NaN"), "{args:?}: {e}");
    }
    // The clean model passes the scan.
    let o = bg(&["exec", &tiny(), "-p", "hi", "-n", "2", "--check-tensors"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // `check` without the scan flags the non-finite outputs both backends agree on.
    let o = bg(&["check", &m, "--candidate", "scalar", "--steps", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("non-finite output") && e.contains("`result_norm` (RmsNorm"), "{e}");
}
