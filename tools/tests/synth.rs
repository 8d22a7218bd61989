//! `bitnet-graph synth` refuses bad dimensions before writing anything, never leaves a
//! partial file at `--out` (nor its temporary file), never overwrites an existing file
//! without `--force`, and never overwrites its own `--vocab-from` input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vocab() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/b1-spm-i2_s.gguf")
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("bg-synth-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The names of the files in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn synth(out: &Path, vocab_from: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet-graph"))
        .arg("synth")
        .arg("--vocab-from")
        .arg(vocab_from)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run bitnet-graph")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, `needle` in the message, no panic.
fn assert_refused(o: &Output, needle: &str, case: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{case}: {e}");
    assert!(e.contains(needle), "{case}: expected `{needle}` in: {e}");
    assert!(!e.contains("panicked"), "{case}: {e}");
}

#[test]
fn bad_dimensions_exit_2_and_write_nothing() {
    let dir = TempDir::new("dims");
    let out = dir.0.join("m.gguf");
    let cases: &[(&[&str], &str)] = &[
        (&["--embd", "1099511627776"], "synth: --embd 1099511627776: out of range 1..=16777216"),
        (
            &["--embd", "16777216"],
            "synth: --embd 16777216 --ff 512 --layers 2 (vocab 32000): the file would be 423299562283936 bytes",
        ),
        (&["--embd", "16777216"], "above synth's limit of 16 GiB"),
        (
            &["--preset", "2b4t", "--layers", "4096"],
            "synth: --embd 2560 --ff 6912 --layers 4096 (vocab 32000): the file would be",
        ),
        (&["--ctx", "4294967808"], "synth: --ctx 4294967808: out of range 1..=16777216"),
        (&["--ctx", "0"], "synth: --ctx 0: out of range 1..=16777216"),
        (&["--layers", "0"], "synth: --layers 0: out of range 1..=4096"),
        (&["--layers", "4097"], "synth: --layers 4097: out of range 1..=4096"),
        (&["--ff", "0"], "synth: --ff 0: out of range"),
        (&["--heads", "0"], "synth: --heads 0: out of range"),
        (&["--kv-heads", "0"], "synth: --kv-heads 0: out of range"),
        (&["--heads", "3"], "synth: --heads 3: does not divide --embd 256"),
        (&["--kv-heads", "3"], "synth: --kv-heads 3: does not divide --heads 4"),
        (&["--embd", "200"], "synth: --embd 200: i2_s rows need a multiple of 128"),
        (&["--ff", "200"], "synth: --ff 200: i2_s rows need a multiple of 128"),
        (
            &["--type", "tq1_0", "--embd", "384", "--heads", "6", "--kv-heads", "6"],
            "synth: --embd 384: tq1_0 rows need a multiple of 256",
        ),
        (&["--type", "tq2_0", "--ff", "640"], "synth: --ff 640: tq2_0 rows need a multiple of 256"),
        (&["--embd", "384", "--heads", "128"], "synth: --heads 128: head dimension 3 (--embd 384 / --heads) is odd"),
        (
            &["--embd", "384", "--heads", "64", "--kv-heads", "1"],
            "synth: --kv-heads 1: K/V width 1 × head dimension 6 = 6 is not a multiple of 4",
        ),
        (&["--vocab", "5"], "--vocab 5 differs from the 32000 tokens of --vocab-from"),
    ];
    for (args, needle) in cases {
        let o = synth(&out, &vocab(), args);
        assert_refused(&o, needle, &format!("{args:?}"));
        assert!(dir.names().is_empty(), "{args:?} left {:?}", dir.names());
    }
}

#[test]
fn out_exists_needs_force_and_the_vocab_input_is_never_overwritten() {
    let dir = TempDir::new("out");
    let out = dir.0.join("m.gguf");
    std::fs::write(&out, b"keep").unwrap();
    let o = synth(&out, &vocab(), &[]);
    assert_refused(&o, &format!("synth: --out {}: exists; pass --force to overwrite it", out.display()), "no --force");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    assert_eq!(dir.names(), ["m.gguf"]);

    let o = synth(&out, &vocab(), &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(gguf::GgufFile::open(&out).is_ok());
    assert_eq!(dir.names(), ["m.gguf"], "no temporary file is left");

    // The input, by the same path, another spelling, a symbolic link or a hard link.
    let input = dir.0.join("v.gguf");
    std::fs::copy(vocab(), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let link = dir.0.join("link.gguf");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = dir.0.join("hard.gguf");
    std::fs::hard_link(&input, &hard).unwrap();
    let respelled = dir.0.join(".").join("v.gguf");
    for target in [&input, &respelled, &link, &hard] {
        let o = synth(target, &input, &["--force"]);
        assert_refused(&o, "is the --vocab-from input; refusing to overwrite it", &target.display().to_string());
        assert_eq!(std::fs::read(&input).unwrap(), before);
    }
    assert_eq!(dir.names(), ["hard.gguf", "link.gguf", "m.gguf", "v.gguf"]);

    // A directory, and a directory that does not exist.
    let o = synth(&dir.0, &vocab(), &["--force"]);
    assert_refused(&o, &format!("synth: --out {}: is a directory", dir.0.display()), "directory");
    let missing = dir.0.join("no/such/dir/m.gguf");
    let o = synth(&missing, &vocab(), &[]);
    assert_refused(&o, &format!("synth: --out {}: writing", missing.display()), "missing directory");
    assert_eq!(dir.names(), ["hard.gguf", "link.gguf", "m.gguf", "v.gguf"]);
}

/// A write that fails half-way (here: the file-size limit, with SIGXFSZ ignored so that the
/// write returns EFBIG) leaves neither `--out` nor the temporary file.
#[test]
fn a_write_that_fails_leaves_nothing() {
    let dir = TempDir::new("efbig");
    let out = dir.0.join("m.gguf");
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_bitnet-graph"))
        .args(["synth", "--vocab-from"])
        .arg(vocab())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused(&o, &format!("synth: --out {}: writing", out.display()), "EFBIG");
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    assert!(dir.names().is_empty(), "left {:?}", dir.names());
}

/// `--embd-type q6_k` writes a Q6_K embedding (llama-quantize's quantizer) that loads and
/// runs as the head; widths that are not whole 256-blocks are refused.
#[test]
fn q6_k_embedding() {
    let dir = TempDir::new("q6k");
    let out = dir.0.join("m.gguf");
    let o = synth(&out, &vocab(), &["--preset", "tiny", "--embd-type", "q6_k"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor("token_embd.weight").unwrap().dtype, graph::DType::Q6K);
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet-graph"))
        .args(["exec", out.to_str().unwrap(), "-p", "Hello", "-n", "4", "--temp", "0", "--ignore-eos"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = synth(&dir.0.join("w.gguf"), &vocab(), &["--preset", "tiny", "--embd-type", "q6_k", "--embd", "384", "--heads", "6"]);
    assert_refused(&o, "q6_k embedding rows need a multiple of 256", "embd 384");
}
