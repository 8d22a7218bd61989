//! `bitnet-graph pull` as a user runs it, against the fake hub (`runtime::hub::testing`, a
//! local HTTP server on 127.0.0.1) with `HF_ENDPOINT` pointing at it and `HF_HOME` in a
//! temporary folder: the path on stdout, the announcement on stderr before any transfer, the
//! cache reused without a request, resumption, the checksum, and errors with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runtime::hub::testing::FakeHub;

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

/// Runs `bitnet-graph ARGS` against `hub` with the cache under `home`, and with none of the
/// caller's hub or proxy settings.
fn bg(hub: &FakeHub, home: &Path, args: &[&str]) -> Output {
    bg_env(hub, home, &[], args)
}

/// [`bg`] with extra environment variables.
fn bg_env(hub: &FakeHub, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitnet-graph"));
    for v in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "XDG_CACHE_HOME",
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        c.env_remove(v);
    }
    c.env("HF_ENDPOINT", hub.url()).env("HF_HOME", home).envs(env.iter().copied()).args(args).output().expect("run bitnet-graph")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(u32::from(seed) % 32) as u8 ^ seed).collect()
}

#[test]
fn pull_announces_downloads_prints_the_path_then_reuses_the_cache() {
    let hub = FakeHub::start();
    let model = shared("models/tiny-i2_s.gguf");
    hub.add_file_from("test/tiny", "tiny-i2_s.gguf", &model).unwrap();
    hub.add_file("test/tiny", "README.md", b"# tiny\n".to_vec());
    let home = tempfile::tempdir().unwrap();

    let o = bg(&hub, home.path(), &["pull", "test/tiny"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let path = PathBuf::from(stdout(&o).trim_end());
    assert!(path.starts_with(home.path().join("hub/models--test--tiny/snapshots")), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&model).unwrap());
    let err = stderr(&o);
    let size = std::fs::metadata(&model).unwrap().len();
    let announce = format!(
        "hub: downloading test/tiny:tiny-i2_s.gguf (70.9 MiB, {size} bytes) from {}/test/tiny/resolve/main/tiny-i2_s.gguf",
        hub.url()
    );
    assert!(err.starts_with(&announce), "the first line must say what, how big and from where:\n{err}");
    assert!(err.contains("hub: received 70.9 MiB in "), "{err}");

    hub.clear_requests();
    for args in [&["pull", "test/tiny"][..], &["pull", "test/tiny:tiny-i2_s.gguf"], &["pull", "--offline", "test/tiny"]] {
        let again = bg(&hub, home.path(), args);
        assert!(again.status.success(), "{args:?}: {}", stderr(&again));
        assert_eq!(stdout(&again), stdout(&o), "{args:?}");
        assert_eq!(stderr(&again), "", "{args:?}: a cached file is used silently");
    }
    assert_eq!(hub.request_count(), 0, "{:#?}", hub.requests());
}

#[test]
fn pull_takes_the_i2_s_file_of_the_official_repository_and_says_so() {
    let hub = FakeHub::start();
    let repo = "microsoft/bitnet-b1.58-2B-4T-gguf";
    hub.add_file(repo, "ggml-model-f16.gguf", bytes(4000, 1));
    hub.add_file(repo, "ggml-model-i2_s.gguf", bytes(3000, 2));
    hub.add_file(repo, "README.md", b"x".to_vec());
    let home = tempfile::tempdir().unwrap();
    let o = bg(&hub, home.path(), &["pull", "--quiet", repo]);
    assert!(o.status.success(), "{}", stderr(&o));
    let path = PathBuf::from(stdout(&o).trim_end());
    assert!(path.ends_with("ggml-model-i2_s.gguf"), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), bytes(3000, 2));
    let err = stderr(&o);
    assert!(
        err.contains("took ggml-model-i2_s.gguf, the I2_S one of its 2 .gguf files (ggml-model-f16.gguf, ggml-model-i2_s.gguf)"),
        "{err}"
    );
    assert!(
        err.contains("hub: downloading microsoft/bitnet-b1.58-2B-4T-gguf:ggml-model-i2_s.gguf (2.93 KiB, 3000 bytes)"),
        "{err}"
    );
    assert!(!err.contains("received"), "--quiet draws no progress: {err}");
}

#[test]
fn pull_resumes_a_broken_transfer_and_refuses_a_corrupt_one() {
    let hub = FakeHub::start();
    let data = bytes(3 << 20, 3);
    hub.add_file("o/r", "m.gguf", data.clone());
    let sha = hub.sha256("o/r", "m.gguf");
    let home = tempfile::tempdir().unwrap();

    hub.corrupt_byte_at(Some(77));
    let o = bg(&hub, home.path(), &["pull", "o/r"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("error: hub: o/r:m.gguf: SHA-256 of the download is ")
            && err.contains(&format!("the hub announced {sha}; deleted ")),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
    assert!(!home.path().join("hub/models--o--r/blobs").join(format!("{sha}.incomplete")).exists());

    hub.corrupt_byte_at(None);
    hub.cut_next_transfer_after(1 << 20);
    hub.clear_requests();
    let o = bg(&hub, home.path(), &["pull", "o/r"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("hub: transfer interrupted at 1048576 of 3145728 bytes"), "{}", stderr(&o));
    assert_eq!(std::fs::read(stdout(&o).trim_end()).unwrap(), data);
    let ranges: Vec<Option<String>> =
        hub.requests().into_iter().filter(|r| r.path.starts_with("/cdn/")).map(|r| r.range).collect();
    assert_eq!(ranges, vec![None, Some("bytes=1048576-".to_string())]);
}

#[test]
fn pull_errors_name_the_repository_and_exit_2() {
    let hub = FakeHub::start();
    hub.add_file("o/r", "m-i2_s.gguf", bytes(10, 4));
    let home = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (&["pull", "nobody/nothing"][..], "error: hub: nobody/nothing: repository not found at http://127.0.0.1:"),
        (&["pull", "o/r:x.gguf"], "error: hub: o/r: no file `x.gguf` in the repository; its .gguf files: m-i2_s.gguf"),
        (&["pull", "--offline", "o/r"], "error: hub: o/r: not in the cache "),
        (&["pull", "o"], "error: hub: `o`: the repository must be OWNER/NAME"),
    ] {
        let o = bg(&hub, home.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).starts_with(expected), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
    let o = bg_env(&hub, home.path(), &[("HF_HUB_OFFLINE", "1")], &["pull", "o/r"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("offline mode is on"), "{}", stderr(&o));
    // The listing for nobody/nothing; a HEAD and the listing for o/r:x.gguf; nothing offline.
    assert_eq!(hub.request_count(), 3, "{:#?}", hub.requests());
}

/// `exec -hf REPO` downloads once and then runs exactly what `exec PATH` runs, token for
/// token; a second run makes no request; `--offline` without the file cached says so.
#[test]
fn exec_by_name_equals_exec_by_path() {
    let hub = FakeHub::start();
    let model = shared("models/tiny-i2_s.gguf");
    hub.add_file_from("test/tiny", "tiny-i2_s.gguf", &model).unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = ["-p", "The capital of France is", "-n", "8", "--temp", "0", "--json"];
    let by_path = bg(&hub, home.path(), &[&["exec", model.to_str().unwrap()][..], &run].concat());
    assert!(by_path.status.success(), "{}", stderr(&by_path));
    let by_name = bg(&hub, home.path(), &[&["exec", "-hf", "test/tiny"][..], &run].concat());
    assert!(by_name.status.success(), "{}", stderr(&by_name));
    let tokens = |o: &Output| serde_json::from_str::<serde_json::Value>(&stdout(o)).unwrap()["generated_tokens"].clone();
    assert_eq!(tokens(&by_name), tokens(&by_path));
    assert!(tokens(&by_path).as_array().is_some_and(|a| a.len() == 8));
    hub.clear_requests();
    let again = bg(&hub, home.path(), &[&["exec", "--hf", "test/tiny"][..], &run].concat());
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(tokens(&again), tokens(&by_path));
    assert_eq!(hub.request_count(), 0, "the second run uses the cache");
    let fresh = tempfile::tempdir().unwrap();
    let offline = bg(&hub, fresh.path(), &[&["exec", "-hf", "test/tiny", "--offline"][..], &run].concat());
    assert_eq!(offline.status.code(), Some(2), "{}", stderr(&offline));
    assert!(stderr(&offline).contains("hub: "), "{}", stderr(&offline));
}
