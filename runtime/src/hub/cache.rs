//! huggingface_hub's cache layout for one model repository:
//!
//! ```text
//! <cache_dir>/models--owner--name/
//!     refs/main                      the commit `main` points at (40 hex digits, no newline)
//!     blobs/<etag>                   file contents, named by the hub's ETag (SHA-256 for LFS)
//!     blobs/<etag>.incomplete        a download in progress
//!     snapshots/<commit>/<file>      -> ../../blobs/<etag> (a relative symbolic link)
//! <cache_dir>/.locks/models--owner--name/<etag>.lock
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{repo_folder_name, HubError};

/// The cache folder of one repository.
pub(crate) struct RepoCache {
    dir: PathBuf,
    lock_dir: PathBuf,
}

impl RepoCache {
    pub(crate) fn new(cache_dir: &Path, repo: &str) -> Self {
        let folder = repo_folder_name(repo);
        RepoCache { dir: cache_dir.join(&folder), lock_dir: cache_dir.join(".locks").join(folder) }
    }

    fn ref_path(&self) -> PathBuf {
        self.dir.join("refs").join("main")
    }

    /// The commit in `refs/main`, or `None` when there is none (or it is not a commit id).
    pub(crate) fn main_commit(&self) -> Result<Option<String>, HubError> {
        let path = self.ref_path();
        match fs::read_to_string(&path) {
            Ok(s) => {
                let c = s.trim();
                Ok(is_safe_name(c).then(|| c.to_string()))
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(None),
            Err(e) => Err(HubError::io(path, "read", e)),
        }
    }

    /// Points `refs/main` at `commit` (written to a temporary file, then renamed).
    pub(crate) fn set_main(&self, commit: &str) -> Result<(), HubError> {
        if self.main_commit()?.as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.ref_path();
        let dir = self.dir.join("refs");
        fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, "create folder", e))?;
        let tmp = dir.join(format!(".main.{}.tmp", std::process::id()));
        fs::write(&tmp, commit).map_err(|e| HubError::io(&tmp, "write", e))?;
        fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, "rename into place", e))
    }

    pub(crate) fn snapshot_path(&self, commit: &str, file: &str) -> PathBuf {
        let mut p = self.dir.join("snapshots").join(commit);
        p.extend(file.split('/'));
        p
    }

    /// The snapshot path of `file` at `commit` when it is there and leads to a regular file.
    pub(crate) fn snapshot_file(&self, commit: &str, file: &str) -> Option<PathBuf> {
        let p = self.snapshot_path(commit, file);
        p.is_file().then_some(p)
    }

    /// The `.gguf` files present in the snapshot at `commit`, as repository paths, sorted.
    pub(crate) fn snapshot_ggufs(&self, commit: &str) -> Result<Vec<String>, HubError> {
        let root = self.dir.join("snapshots").join(commit);
        let mut out = Vec::new();
        let mut stack = vec![(root, String::new(), 0usize)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(HubError::io(dir, "list", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| HubError::io(&dir, "list", e))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                let path = entry.path();
                let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                if path.is_dir() {
                    if depth < 8 {
                        stack.push((path, rel, depth + 1));
                    }
                } else if name.to_ascii_lowercase().ends_with(".gguf") && path.is_file() {
                    out.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn blob_path(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    pub(crate) fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// Takes the lock that huggingface_hub also takes for this blob (an exclusive `flock` on
    /// `.locks/models--owner--name/<etag>.lock`), waiting, with a note on stderr, while another
    /// process holds it. Released when the returned file is dropped.
    pub(crate) fn lock_blob(&self, etag: &str) -> Result<File, HubError> {
        fs::create_dir_all(&self.lock_dir).map_err(|e| HubError::io(&self.lock_dir, "create folder", e))?;
        let path = self.lock_dir.join(format!("{etag}.lock"));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| HubError::io(&path, "open lock", e))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(fs::TryLockError::WouldBlock) => {
                eprintln!("hub: waiting for another process that downloads this file (lock {})", path.display());
                f.lock().map_err(|e| HubError::io(&path, "lock", e))?;
                Ok(f)
            }
            Err(fs::TryLockError::Error(e)) => Err(HubError::io(&path, "lock", e)),
        }
    }

    /// Makes `snapshots/<commit>/<file>` point at `blobs/<etag>` and returns its path. The link
    /// is created under a temporary name and renamed into place.
    pub(crate) fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, HubError> {
        let dst = self.snapshot_path(commit, file);
        let parent = dst.parent().expect("a snapshot path has a parent").to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| HubError::io(&parent, "create folder", e))?;
        let name = dst.file_name().expect("a snapshot path has a file name").to_string_lossy().into_owned();
        let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        // From snapshots/<commit>/<dirs…>/<name> up to the repository folder, then into blobs.
        let depth = 2 + file.split('/').count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        make_link(&target, &self.blob_path(etag), &tmp).map_err(|e| HubError::io(&tmp, "link to the blob", e))?;
        fs::rename(&tmp, &dst).map_err(|e| HubError::io(&dst, "rename into place", e))?;
        Ok(dst)
    }
}

#[cfg(unix)]
fn make_link(relative_target: &Path, _blob: &Path, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative_target, at)
}

#[cfg(windows)]
fn make_link(relative_target: &Path, blob: &Path, at: &Path) -> std::io::Result<()> {
    // huggingface_hub copies when symbolic links are not allowed (no developer mode).
    std::os::windows::fs::symlink_file(relative_target, at).or_else(|_| fs::copy(blob, at).map(|_| ()))
}

#[cfg(not(any(unix, windows)))]
fn make_link(_relative_target: &Path, blob: &Path, at: &Path) -> std::io::Result<()> {
    fs::copy(blob, at).map(|_| ())
}

/// Whether `s` can name a file in the cache: letters, digits, `-`, `_`, `.`, not starting with
/// `.`, 1 to 128 bytes. The hub's ETags and commit ids are hex; anything else is refused rather
/// than used as a path.
pub(crate) fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Flushes `f` to disk (data and size) before it is renamed into place.
pub(crate) fn sync(f: &mut File, path: &Path) -> Result<(), HubError> {
    f.flush().map_err(|e| HubError::io(path, "flush", e))?;
    f.sync_all().map_err(|e| HubError::io(path, "fsync", e))
}
