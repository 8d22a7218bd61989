//! `runtime::hub` against the fake hub (`runtime::hub::testing`, a local HTTP server on
//! 127.0.0.1): downloads land in huggingface_hub's cache layout, byte for byte; a cached file
//! costs no request; broken transfers resume with `Range`; a corrupt byte is caught by the
//! SHA-256 and the partial blob deleted; errors name what is missing. Every test has its own
//! server and its own temporary cache; nothing leaves 127.0.0.1.
//!
//! Unix only: the layout checks read the snapshot's symbolic links.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::hub::testing::{FakeHub, Request};
use runtime::hub::{resolve, snapshot_dir, HubErrorKind, HubOptions};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

/// Options that talk to `hub` and keep their cache in `dir`: quiet, no retries.
fn opts(hub: &FakeHub, dir: &Path) -> HubOptions {
    let mut o = HubOptions::new(dir.join("hub"));
    o.endpoint = hub.url();
    o.progress = false;
    o.retries = 0;
    o.read_timeout = Duration::from_secs(10);
    o
}

/// `n` pseudo-random bytes, different per seed.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = graph::rng::Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect()
}

fn gets(reqs: &[Request]) -> Vec<&Request> {
    reqs.iter().filter(|r| r.method == "GET" && r.path.starts_with("/cdn/")).collect()
}

const MIB: usize = 1 << 20;

#[test]
fn first_download_is_byte_exact_in_the_hf_layout_then_the_cache_costs_no_request() {
    let hub = FakeHub::start();
    let model = shared("models/tiny-i2_s.gguf");
    hub.add_file_from("test/tiny", "tiny-i2_s.gguf", &model).unwrap();
    hub.add_file("test/tiny", "README.md", b"# tiny\n".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());

    let path = resolve("test/tiny:tiny-i2_s.gguf", &o).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&model).unwrap(), "the download differs from the source");

    // huggingface_hub's layout: snapshots/<commit>/FILE -> ../../blobs/<sha256>, refs/main.
    let commit = hub.commit("test/tiny");
    let sha = hub.sha256("test/tiny", "tiny-i2_s.gguf");
    let repo_dir = o.cache_dir.join("models--test--tiny");
    assert_eq!(path, snapshot_dir(&o.cache_dir, "test/tiny", &commit).join("tiny-i2_s.gguf"));
    assert_eq!(std::fs::read_link(&path).unwrap(), PathBuf::from("../../blobs").join(&sha));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(), commit);
    let blobs: Vec<String> =
        std::fs::read_dir(repo_dir.join("blobs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(blobs, vec![sha.clone()], "one blob named by its SHA-256, no partial file left");
    assert!(
        o.cache_dir.join(".locks/models--test--tiny").join(format!("{sha}.lock")).exists(),
        "the lock is where huggingface_hub takes it"
    );

    // HEAD resolve (headers), GET resolve (redirect), GET cdn (the bytes).
    let reqs = hub.requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    assert_eq!(reqs[0].method, "HEAD");
    assert_eq!(gets(&reqs).len(), 1);

    hub.clear_requests();
    assert_eq!(resolve("test/tiny:tiny-i2_s.gguf", &o).unwrap(), path);
    assert_eq!(resolve("test/tiny", &o).unwrap(), path, "without :FILE the cached snapshot decides");
    assert_eq!(hub.request_count(), 0, "{:#?}", hub.requests());
}

#[test]
fn the_single_gguf_is_chosen() {
    let hub = FakeHub::start();
    hub.add_file("o/single", "README.md", b"hi".to_vec());
    hub.add_file("o/single", "model.gguf", bytes(100_000, 1));
    let dir = tempfile::tempdir().unwrap();
    let path = resolve("o/single", &opts(&hub, dir.path())).unwrap();
    assert!(path.ends_with("model.gguf"), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), bytes(100_000, 1));
    assert!(hub.requests().iter().any(|r| r.path == "/api/models/o/single/revision/main"));
}

#[test]
fn the_official_repository_resolves_to_its_i2_s_file_and_downloads_only_that() {
    let hub = FakeHub::start();
    let repo = "microsoft/bitnet-b1.58-2B-4T-gguf";
    hub.add_file(repo, ".gitattributes", b"*.gguf filter=lfs\n".to_vec());
    hub.add_file(repo, "README.md", b"# BitNet\n".to_vec());
    hub.add_file(repo, "ggml-model-f16.gguf", bytes(300_000, 2));
    hub.add_file(repo, "ggml-model-i2_s.gguf", bytes(200_000, 3));
    hub.add_file(repo, "ggml-model-tq2_0.gguf", bytes(250_000, 4));
    let dir = tempfile::tempdir().unwrap();
    let path = resolve(repo, &opts(&hub, dir.path())).unwrap();
    assert!(path.ends_with("ggml-model-i2_s.gguf"), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), bytes(200_000, 3));
    let reqs = hub.requests();
    let transfers = gets(&reqs);
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0].path, format!("/cdn/{}", hub.sha256(repo, "ggml-model-i2_s.gguf")));
    hub.clear_requests();
    assert_eq!(resolve(repo, &opts(&hub, dir.path())).unwrap(), path);
    assert_eq!(hub.request_count(), 0);
}

#[test]
fn several_ggufs_without_one_i2_s_are_an_error_listing_them() {
    let hub = FakeHub::start();
    hub.add_file("o/many", "a-f16.gguf", bytes(10, 5));
    hub.add_file("o/many", "a-tq2_0.gguf", bytes(10, 6));
    hub.add_file("o/two", "x-i2_s.gguf", bytes(10, 7));
    hub.add_file("o/two", "y-I2_S.gguf", bytes(10, 8));
    hub.add_file("o/none", "README.md", bytes(10, 9));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());

    let e = resolve("o/many", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::Ambiguous { choices, .. } if choices.len() == 2), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("hub: o/many: ") && msg.contains("a-f16.gguf, a-tq2_0.gguf") && msg.contains("o/many:FILE"), "{msg}");

    let e = resolve("o/two", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::Ambiguous { .. }), "{e}");

    let e = resolve("o/none", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::NoGguf { files, .. } if files == &["README.md"]), "{e}");
    assert!(gets(&hub.requests()).is_empty(), "nothing is downloaded before the choice is made");
}

#[test]
fn a_missing_repository_or_file_is_a_clear_error() {
    let hub = FakeHub::start();
    hub.add_file("o/r", "m-i2_s.gguf", bytes(10, 10));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());

    for spec in ["nobody/nothing", "nobody/nothing:x.gguf"] {
        let e = resolve(spec, &o).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::RepoNotFound { status: 401, token_sent: false, .. }), "{spec}: {e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("hub: nobody/nothing: repository not found at http://127.0.0.1:") && msg.contains("HF_TOKEN"),
            "{msg}"
        );
    }
    let e = resolve("o/r:nope.gguf", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::FileNotFound { file, .. } if file == "nope.gguf"), "{e}");
    assert_eq!(e.to_string(), "hub: o/r: no file `nope.gguf` in the repository; its .gguf files: m-i2_s.gguf");

    let e = resolve("not a spec", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::BadSpec { .. }), "{e}");
    assert!(!dir.path().join("hub").join("models--nobody--nothing").join("snapshots").exists());
}

#[test]
fn an_interrupted_transfer_resumes_with_range_in_the_same_call() {
    let hub = FakeHub::start();
    let data = bytes(3 * MIB, 11);
    hub.add_file("o/r", "m.gguf", data.clone());
    hub.cut_next_transfer_after(MIB as u64 + 17);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, dir.path());
    o.retries = 2;
    let path = resolve("o/r:m.gguf", &o).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let reqs = hub.requests();
    let t = gets(&reqs);
    assert_eq!(t.len(), 2, "{reqs:#?}");
    assert_eq!(t[0].range, None);
    assert_eq!(t[1].range.as_deref(), Some(format!("bytes={}-", MIB + 17).as_str()));
}

#[test]
fn an_interrupted_transfer_keeps_its_partial_blob_and_the_next_call_resumes_it() {
    let hub = FakeHub::start();
    let data = bytes(3 * MIB, 12);
    hub.add_file("o/r", "m.gguf", data.clone());
    let sha = hub.sha256("o/r", "m.gguf");
    hub.cut_next_transfer_after(MIB as u64);
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());

    let e = resolve("o/r:m.gguf", &o).unwrap_err();
    let blobs = o.cache_dir.join("models--o--r/blobs");
    let partial = blobs.join(format!("{sha}.incomplete"));
    match e.kind() {
        HubErrorKind::Interrupted { have, size, partial: p, .. } => {
            assert_eq!((*have, *size), (MIB as u64, data.len() as u64), "{e}");
            assert_eq!(p, &partial);
        }
        _ => panic!("expected Interrupted, got: {e}"),
    }
    assert!(e.to_string().contains("the next run resumes it"), "{e}");
    assert_eq!(std::fs::read(&partial).unwrap(), data[..MIB]);
    assert!(!blobs.join(&sha).exists(), "no blob before the whole file is checked");
    assert!(!o.cache_dir.join("models--o--r/snapshots").exists(), "no snapshot link to a partial file");

    hub.clear_requests();
    let path = resolve("o/r:m.gguf", &o).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let reqs = hub.requests();
    let t = gets(&reqs);
    assert_eq!(t.len(), 1, "{reqs:#?}");
    assert_eq!(t[0].range.as_deref(), Some(format!("bytes={MIB}-").as_str()));
    assert!(!partial.exists());
}

#[test]
fn a_stalled_transfer_times_out_and_resumes() {
    let hub = FakeHub::start();
    let data = bytes(2 * MIB, 21);
    hub.add_file("o/r", "m.gguf", data.clone());
    hub.stall_next_transfer_after(MIB as u64);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, dir.path());
    o.retries = 1;
    o.read_timeout = Duration::from_millis(300);
    let t = std::time::Instant::now();
    assert_eq!(std::fs::read(resolve("o/r:m.gguf", &o).unwrap()).unwrap(), data);
    assert!(t.elapsed() < Duration::from_secs(4), "the stall must end by the read timeout, not by the server: {:?}", t.elapsed());
    let reqs = hub.requests();
    let t = gets(&reqs);
    assert_eq!(t.len(), 2, "{reqs:#?}");
    assert_eq!(t[1].range.as_deref(), Some(format!("bytes={MIB}-").as_str()));
}

#[test]
fn a_corrupt_byte_is_caught_by_the_checksum_and_the_partial_blob_deleted() {
    let hub = FakeHub::start();
    let data = bytes(2 * MIB, 13);
    hub.add_file("o/r", "m.gguf", data.clone());
    let sha = hub.sha256("o/r", "m.gguf");
    hub.corrupt_byte_at(Some(123_457));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());

    let e = resolve("o/r:m.gguf", &o).unwrap_err();
    let partial = o.cache_dir.join("models--o--r/blobs").join(format!("{sha}.incomplete"));
    match e.kind() {
        HubErrorKind::ChecksumMismatch { expected, got, deleted, .. } => {
            assert_eq!(expected, &sha);
            assert_ne!(got, &sha);
            assert_eq!(deleted, &partial);
        }
        _ => panic!("expected ChecksumMismatch, got: {e}"),
    }
    assert!(e.to_string().contains("deleted"), "{e}");
    assert!(!partial.exists() && !o.cache_dir.join("models--o--r/blobs").join(&sha).exists());
    assert!(!o.cache_dir.join("models--o--r/snapshots").exists());

    hub.corrupt_byte_at(None);
    assert_eq!(std::fs::read(resolve("o/r:m.gguf", &o).unwrap()).unwrap(), data);
}

#[test]
fn a_corrupt_byte_in_the_part_kept_from_an_earlier_run_is_caught_after_resuming() {
    let hub = FakeHub::start();
    let data = bytes(2 * MIB, 14);
    hub.add_file("o/r", "m.gguf", data.clone());
    hub.corrupt_byte_at(Some(1000));
    hub.cut_next_transfer_after(MIB as u64);
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());
    let e = resolve("o/r:m.gguf", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::Interrupted { .. }), "{e}");
    hub.corrupt_byte_at(None);
    // The rest arrives intact; the hash covers the kept part too.
    let e = resolve("o/r:m.gguf", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::ChecksumMismatch { .. }), "{e}");
    assert_eq!(std::fs::read(resolve("o/r:m.gguf", &o).unwrap()).unwrap(), data);
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over_cleanly() {
    let hub = FakeHub::start();
    let data = bytes(2 * MIB, 15);
    hub.add_file("o/r", "m.gguf", data.clone());
    hub.ignore_range(true);
    hub.cut_next_transfer_after(MIB as u64);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, dir.path());
    o.retries = 1;
    assert_eq!(std::fs::read(resolve("o/r:m.gguf", &o).unwrap()).unwrap(), data);
    assert_eq!(gets(&hub.requests()).len(), 2);
}

#[test]
fn offline_uses_the_cache_only() {
    let hub = FakeHub::start();
    let data = bytes(100_000, 16);
    hub.add_file("o/r", "m-i2_s.gguf", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, dir.path());
    o.offline = true;

    for spec in ["o/r", "o/r:m-i2_s.gguf"] {
        let e = resolve(spec, &o).unwrap_err();
        assert!(matches!(e.kind(), HubErrorKind::NotCached { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("hub: {spec}: not in the cache ")) && msg.contains("offline"), "{msg}");
    }
    assert_eq!(hub.request_count(), 0, "offline makes no request");

    o.offline = false;
    let path = resolve("o/r:m-i2_s.gguf", &o).unwrap();
    hub.clear_requests();
    o.offline = true;
    assert_eq!(resolve("o/r:m-i2_s.gguf", &o).unwrap(), path);
    assert_eq!(resolve("o/r", &o).unwrap(), path);
    let e = resolve("o/r:other.gguf", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::NotCached { .. }), "{e}");
    assert_eq!(hub.request_count(), 0);
}

/// Lays out `files` as huggingface_hub's `hf_hub_download` leaves them: blobs named by hash,
/// relative links from the snapshot, `refs/main`.
fn place_like_huggingface_hub(cache: &Path, repo: &str, commit: &str, files: &[(&str, &[u8], &str)]) -> Vec<PathBuf> {
    let repo_dir = cache.join(runtime::hub::repo_folder_name(repo));
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let snap = snapshot_dir(cache, repo, commit);
    std::fs::create_dir_all(&snap).unwrap();
    files
        .iter()
        .map(|(name, data, etag)| {
            std::fs::write(repo_dir.join("blobs").join(etag), data).unwrap();
            std::os::unix::fs::symlink(PathBuf::from("../../blobs").join(etag), snap.join(name)).unwrap();
            snap.join(name)
        })
        .collect()
}

#[test]
fn a_file_placed_by_huggingface_hub_is_reused_without_a_request() {
    let hub = FakeHub::start();
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let paths = place_like_huggingface_hub(
        &o.cache_dir,
        "microsoft/bitnet-b1.58-2B-4T-gguf",
        commit,
        &[("ggml-model-i2_s.gguf", b"GGUF i2_s", &"a".repeat(64)), ("README.md", b"readme", &"b".repeat(40))],
    );
    assert_eq!(resolve("microsoft/bitnet-b1.58-2B-4T-gguf:ggml-model-i2_s.gguf", &o).unwrap(), paths[0]);
    assert_eq!(resolve("microsoft/bitnet-b1.58-2B-4T-gguf", &o).unwrap(), paths[0]);
    assert_eq!(resolve("microsoft/bitnet-b1.58-2B-4T-gguf:README.md", &o).unwrap(), paths[1]);
    let mut off = o.clone();
    off.offline = true;
    assert_eq!(resolve("microsoft/bitnet-b1.58-2B-4T-gguf", &off).unwrap(), paths[0]);
    assert_eq!(hub.request_count(), 0, "{:#?}", hub.requests());
}

#[test]
fn a_gated_repository_needs_the_token_and_storage_never_sees_it() {
    let hub = FakeHub::start();
    let data = bytes(50_000, 17);
    hub.add_file("org/gated", "m.gguf", data.clone());
    hub.require_token("org/gated", "hf_secret");
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, dir.path());

    let e = resolve("org/gated:m.gguf", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::AccessDenied { status: 401, token_sent: false, .. }), "{e}");
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");

    o.token = Some("hf_wrong".into());
    let e = resolve("org/gated", &o).unwrap_err();
    assert!(matches!(e.kind(), HubErrorKind::AccessDenied { token_sent: true, .. }), "{e}");

    o.token = Some("hf_secret".into());
    hub.clear_requests();
    assert_eq!(std::fs::read(resolve("org/gated:m.gguf", &o).unwrap()).unwrap(), data);
    for r in hub.requests() {
        let expected = if r.path.starts_with("/cdn/") { None } else { Some("Bearer hf_secret") };
        assert_eq!(r.authorization.as_deref(), expected, "{r:?}");
    }
}

#[test]
fn a_small_non_lfs_file_is_fetched_by_its_git_etag() {
    let hub = FakeHub::start();
    hub.add_file("o/r", "config.json", b"{\"a\": 1}".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());
    let path = resolve("o/r:config.json", &o).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\": 1}");
    let target = std::fs::read_link(&path).unwrap();
    assert_eq!(target.file_name().unwrap().len(), 40, "blob named by the 40-hex git ETag: {}", target.display());
}

#[test]
fn a_new_commit_links_an_existing_blob_without_downloading_it_again() {
    let hub = FakeHub::start();
    let data = bytes(500_000, 18);
    hub.add_file("o/r", "a.gguf", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&hub, dir.path());
    let first = resolve("o/r:a.gguf", &o).unwrap();
    hub.add_file("o/r", "b.gguf", bytes(10, 19)); // a new commit
    assert!(resolve("o/r:b.gguf", &o).is_ok());
    hub.clear_requests();
    // refs/main now names the new commit, whose snapshot lacks a.gguf: one HEAD, no transfer.
    let again = resolve("o/r:a.gguf", &o).unwrap();
    assert_ne!(again, first);
    assert_eq!(std::fs::read(&again).unwrap(), data);
    let reqs = hub.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].method, "HEAD");
}

#[test]
fn a_file_in_a_subfolder_links_back_to_the_blobs() {
    let hub = FakeHub::start();
    hub.add_file("o/r", "sub/dir/m.gguf", bytes(1000, 20));
    let dir = tempfile::tempdir().unwrap();
    let path = resolve("o/r", &opts(&hub, dir.path())).unwrap();
    assert!(path.ends_with("sub/dir/m.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes(1000, 20));
    assert!(std::fs::read_link(&path).unwrap().starts_with("../../../../blobs"));
}
