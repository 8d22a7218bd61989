//! Output: every subcommand writes stdout through [`Stdout`], so a closed pipe ends the
//! program quietly (as `head` expects) and a full disk is an error naming what was written,
//! and files through [`write_file`], which never leaves a half-written file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Locked, buffered stdout whose errors say "writing to standard output".
pub struct Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>);

/// Standard output.
pub fn stdout() -> Stdout {
    Stdout(std::io::BufWriter::new(std::io::stdout().lock()))
}

impl Stdout {
    /// Writes `s` (and flushes, so streamed text appears as it is generated).
    pub fn put(&mut self, s: &str) -> Result<()> {
        self.0.write_all(s.as_bytes()).and_then(|_| self.0.flush()).context("writing to standard output")
    }

    /// Writes `s` and a newline.
    pub fn line(&mut self, s: &str) -> Result<()> {
        self.put(s)?;
        self.put("\n")
    }
}

/// Whether an error is a closed reader of our output (EPIPE): the program then stops
/// quietly, with success, as `cat` and `head` expect of their writers.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Writes a file through a temporary file in the same directory, renamed into place only
/// when everything was written and synced: a failure (a full disk) leaves no partial file.
pub fn write_file(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}
