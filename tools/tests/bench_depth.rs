//! `bench -d DEPTH` and `-pg PP,TG` (issue 16), like llama-bench's: the JSON carries the
//! depth and the combined measurement, the text names the tests llama-bench's way, and bad
//! values exit 2 with a message naming the flag. Run with `--release`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/tiny-i2_s.gguf").display().to_string()
}

fn bench(args: &[&str]) -> Output {
    let m = tiny();
    let mut all = vec!["bench", m.as_str(), "-t", "1", "-r", "1"];
    all.extend_from_slice(args);
    Command::new(env!("CARGO_BIN_EXE_bitnet-graph")).args(&all).output().expect("run bitnet-graph")
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("bench --json prints one JSON object")
}

#[test]
fn depth_is_reported_and_every_measurement_runs_after_it() {
    // tiny-i2_s has 512 positions: 480 + 32 fills them exactly.
    let v = json(&bench(&["-d", "480", "-p", "32", "-n", "32", "--json"]));
    assert_eq!(v["n_depth"], 480);
    assert_eq!(v["n_prompt"], 32);
    assert_eq!(v["n_gen"], 32);
    assert!(v["pp_tok_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["tg_tok_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["pg_prompt"], 0);
    assert_eq!(v["pg_tok_s"], 0.0);
    // One position more is refused before anything runs.
    let o = bench(&["-d", "481", "-p", "32", "-n", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("context"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn pg_measures_prompt_then_generation() {
    // llama.cpp's spelling `-pg` and the long one; -p/-n 0 leave only the combined test.
    for flag in ["-pg", "--pg"] {
        let v = json(&bench(&["-p", "0", "-n", "0", flag, "24,8", "-d", "16", "--json"]));
        assert_eq!((v["pg_prompt"].as_u64(), v["pg_gen"].as_u64()), (Some(24), Some(8)), "{v}");
        assert!(v["pg_tok_s"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(v["n_depth"], 16);
        assert_eq!(v["pp_tok_s"], 0.0);
        assert_eq!(v["tg_tok_s"], 0.0);
    }
    let o = bench(&["-p", "16", "-n", "4", "-pg", "16,4", "-d", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for name in ["pp16 @ d32", "tg4 @ d32", "pp16+tg4 @ d32"] {
        assert!(text.contains(name), "no `{name}` in\n{text}");
    }
}

#[test]
fn bad_depth_and_pg_values_exit_2() {
    let cases: [(&[&str], &str); 6] = [
        (&["-pg", "16"], "--pg"),
        (&["-pg", "0,4"], "--pg"),
        (&["-pg", "16,4,2"], "--pg"),
        (&["-d", "-3"], "-d"),
        (&["-d", "8", "--parallel", "1,2"], "--parallel"),
        (&["-p", "0", "-n", "0", "-pg", "500,13"], "context"),
    ];
    for (args, needle) in cases {
        let o = bench(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
