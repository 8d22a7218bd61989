//! The download progress line on stderr: bytes, percent, rate, ETA. On a terminal it is
//! redrawn in place (`\r`) ten times a second; otherwise (a log file, a pipe) a new line is
//! written every ten seconds, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    enabled: bool,
    tty: bool,
    size: u64,
    /// Bytes on disk when this run's transfer started (a resumed download starts above 0).
    start_bytes: u64,
    start: Instant,
    last_draw: Option<Instant>,
    drawn_width: usize,
}

impl Progress {
    pub(crate) fn new(enabled: bool, size: u64, start_bytes: u64) -> Self {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            size,
            start_bytes,
            start: Instant::now(),
            last_draw: None,
            drawn_width: 0,
        }
    }

    /// Notes that `have` bytes of the file are on disk; redraws when due.
    pub(crate) fn update(&mut self, have: u64) {
        if !self.enabled {
            return;
        }
        let every = if self.tty { Duration::from_millis(100) } else { Duration::from_secs(10) };
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now - t < every) {
            return;
        }
        self.last_draw = Some(now);
        let line = self.line(have, now);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let pad = self.drawn_width.saturating_sub(line.len());
            let _ = write!(err, "\r{line}{:pad$}", "");
            self.drawn_width = line.len();
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn line(&self, have: u64, now: Instant) -> String {
        let secs = (now - self.start).as_secs_f64();
        let moved = have.saturating_sub(self.start_bytes);
        let pct = if self.size == 0 { 100.0 } else { have as f64 * 100.0 / self.size as f64 };
        let mut s = format!("hub: {} / {} {pct:5.1}%", human(have), human(self.size));
        if secs >= 0.5 && moved > 0 {
            let rate = moved as f64 / secs;
            let eta = self.size.saturating_sub(have) as f64 / rate;
            s += &format!("  {}/s  ETA {}", human(rate as u64), clock(eta));
        }
        s
    }

    /// Ends the line (when one was drawn) and prints the total and the mean rate.
    pub(crate) fn finish(&mut self, have: u64) {
        if !self.enabled {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64();
        let moved = have.saturating_sub(self.start_bytes);
        let mut err = std::io::stderr().lock();
        if self.tty && self.drawn_width > 0 {
            let _ = write!(err, "\r{:w$}\r", "", w = self.drawn_width);
        }
        let rate = if secs > 0.0 { moved as f64 / secs } else { 0.0 };
        let _ = writeln!(err, "hub: received {} in {secs:.1} s ({}/s)", human(moved), human(rate as u64));
        self.drawn_width = 0;
    }

    /// Ends a line left open by an interrupted transfer.
    pub(crate) fn break_line(&mut self) {
        if self.enabled && self.tty && self.drawn_width > 0 {
            let _ = writeln!(std::io::stderr());
            self.drawn_width = 0;
        }
    }
}

/// Bytes in binary units: `512 B`, `70.9 MiB`, `1.11 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// Seconds as `m:ss` or `h:mm:ss`.
fn clock(secs: f64) -> String {
    if !secs.is_finite() || secs > 359_999.0 {
        return "--:--".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_and_clock() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.00 KiB");
        assert_eq!(human(74_306_528), "70.9 MiB");
        assert_eq!(human(1_187_801_280), "1.11 GiB");
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(75.4), "1:15");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(f64::INFINITY), "--:--");
    }
}
