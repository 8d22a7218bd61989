//! Paths that are not regular files, and model files that change while they load: each gives
//! a clear error, never a hang, a panic or a bus error.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use gguf::{ErrorKind, GgufFile};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models");

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("gguf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GgufFile::open(path)`'s error message, failing the test if it takes over 10 s (a FIFO
/// opened for reading blocks until a writer appears).
fn open_err_within_10s(path: &Path) -> (ErrorKind, String) {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(GgufFile::open(&p).map(|_| ()).map_err(|e| (e.kind().clone(), e.to_string())));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("{}: accepted", path.display()),
        Err(_) => panic!("{}: GgufFile::open still blocked after 10 s", path.display()),
    }
}

#[test]
fn open_refuses_fifo_directory_and_devices() {
    let dir = TempDir::new("not-regular");
    let fifo = dir.0.join("model.gguf");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(st.success());
    let link = dir.0.join("link-to-fifo.gguf");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        (link.as_path(), "a FIFO"),
        (dir.0.as_path(), "a directory"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        let (kind, msg) = open_err_within_10s(path);
        assert!(matches!(kind, ErrorKind::Io { .. }), "{msg}");
        assert_eq!(msg, format!("gguf: {}: not a regular file ({what})", path.display()));
    }
    // A link to a regular file is followed.
    let good = dir.0.join("link-to-model.gguf");
    std::os::unix::fs::symlink(Path::new(MODELS).join("b1-spm-i2_s.gguf"), &good).unwrap();
    assert!(GgufFile::open(&good).is_ok());
}

/// A copy of a shared model in `dir`.
fn copy_model(dir: &TempDir, name: &str) -> PathBuf {
    let p = dir.0.join(name);
    std::fs::copy(Path::new(MODELS).join(name), &p).unwrap();
    p
}

#[test]
fn a_file_truncated_or_grown_after_open_gives_file_changed() {
    let dir = TempDir::new("changed");
    let path = copy_model(&dir, "b1-spm-i2_s.gguf");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = GgufFile::open(&path).unwrap();
    let last = f.tensors().iter().max_by_key(|t| t.abs_offset).unwrap();
    let first = f.tensors().iter().min_by_key(|t| t.abs_offset).unwrap();
    let cuts = [
        last.abs_offset + last.nbytes - 1,
        last.abs_offset + 1,
        first.abs_offset + first.nbytes / 2,
        f.data_start,
        f.data_start / 2,
        0,
        len + 1,
        len + 4096,
    ];
    let handle = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for cut in cuts {
        handle.set_len(cut).unwrap();
        let expect =
            format!("gguf: {}: file changed while loading (it is now {cut} bytes, it was {len} when opened)", path.display());
        for t in f.tensors() {
            let mut dst = vec![0u8; t.nbytes as usize];
            let e = f.read_tensor_into(t, &mut dst).unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::FileChanged { .. }), "cut {cut}, `{}`: {e}", t.name);
            assert_eq!(e.to_string(), expect);
            let e = f.read_tensor_range(t, 0, &mut dst[..1]).unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::FileChanged { .. }), "cut {cut}, `{}`: {e}", t.name);
        }
        let e = gguf::check_tensors(&f).unwrap_err();
        assert_eq!(e.to_string(), expect, "check_tensors, cut {cut}");
    }
    handle.set_len(len).unwrap();
}

#[test]
fn a_file_shorter_than_its_header_claims_is_refused_at_open() {
    let dir = TempDir::new("short");
    let path = copy_model(&dir, "b1-spm-i2_s.gguf");
    let f = GgufFile::open(&path).unwrap();
    let last = f.tensors().iter().max_by_key(|t| t.abs_offset).unwrap().clone();
    let data_start = f.data_start;
    drop(f);
    let handle = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Inside the data: the last tensor's range. (Each cut shortens the file further.)
    handle.set_len(last.abs_offset + last.nbytes - 1).unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Tensor { name, .. } if *name == last.name), "{e}");
    assert!(e.to_string().contains("exceeds file size"), "{e}");
    // Inside the header: a field cut short, or a count that no longer fits what is left.
    for cut in [data_start - 1, data_start / 3, 20, 3] {
        handle.set_len(cut).unwrap();
        let e = GgufFile::open(&path).unwrap_err();
        match e.kind() {
            ErrorKind::Truncated { len, .. } => assert_eq!(*len, cut, "{e}"),
            ErrorKind::Invalid { msg, .. } => assert!(msg.contains("cannot fit"), "{e}"),
            _ => panic!("cut {cut}: {e}"),
        }
        assert!(e.to_string().contains("at offset 0x"), "{e}");
    }
}
