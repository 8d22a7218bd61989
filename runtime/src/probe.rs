//! The memory read-bandwidth probe: how fast this machine streams memory that no cache
//! holds, the denominator of decode's roofline (`bench`, `benches`'s `decode_i2s`).
//!
//! ## Design
//! One function reads memory ([`par_sum`]: a parallel sum of `u64` words, eight
//! independent sums per task so the loop is bound by loads, not by an add chain); the probe
//! ([`read_bandwidth`]) and the benches call it, so every figure that is compared with the
//! roofline reads memory the same way. The probe's buffer is sized from the last-level
//! cache (sysfs, [`last_level_cache_bytes`]): at least [`LLC_FACTOR`] times it, so that no
//! pass is served from a cache, within [`MIN_BUFFER`]..[`MAX_BUFFER`] and half of the
//! memory available. It is allocated like the weight arena (anonymous memory advised for
//! transparent huge pages), faulted in before timing, and read by every thread of the
//! current rayon pool in [`PASSES`] passes; the report keeps the best, the median and the
//! spread, so a run on a busy machine shows it.

use std::time::Instant;

use rayon::prelude::*;

/// The buffer is at least this many times the last-level cache.
pub const LLC_FACTOR: usize = 4;
/// Smallest buffer (when no cache size is known, or the cache is small).
pub const MIN_BUFFER: usize = 1 << 30;
/// Largest buffer (4 GiB: a few seconds of faulting in at most).
pub const MAX_BUFFER: usize = 4 << 30;
/// Timed passes over the buffer.
pub const PASSES: usize = 10;
/// Tasks per pool thread (a thread that starts late delays a pass by a fraction of its share).
const TASKS_PER_THREAD: usize = 4;

/// What the probe measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Bandwidth {
    /// The fastest pass, GB/s (10⁹ bytes per second).
    pub best_gb_s: f64,
    /// The median pass, GB/s.
    pub median_gb_s: f64,
    /// The slowest pass, GB/s.
    pub worst_gb_s: f64,
    /// `(best − worst) / median`: how much the passes disagreed (0.05 = 5 %).
    pub spread: f64,
    /// Timed passes.
    pub passes: usize,
    /// Bytes read per pass.
    pub buffer_bytes: usize,
    /// The last-level cache the buffer was sized from, if sysfs gave it.
    pub llc_bytes: Option<usize>,
    /// Threads that read (the current rayon pool's).
    pub threads: usize,
}

/// Wrapping sum of `words` on the current rayon pool in `tasks` contiguous parts (at least
/// one), each summed with eight independent accumulators: a read of every byte, bound by
/// memory bandwidth rather than by arithmetic.
pub fn par_sum(words: &[u64], tasks: usize) -> u64 {
    if words.is_empty() {
        return 0;
    }
    let chunk = words.len().div_ceil(tasks.max(1));
    words.par_chunks(chunk).map(sum_words).reduce(|| 0, u64::wrapping_add)
}

/// Wrapping sum of `words` on this thread, eight independent sums (the inner loop of
/// [`par_sum`]).
pub fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut it = words.chunks_exact(8);
    for q in &mut it {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(q[i]);
        }
    }
    let tail = it.remainder().iter().fold(0u64, |a, &b| a.wrapping_add(b));
    acc.iter().fold(tail, |a, &b| a.wrapping_add(b))
}

/// The largest data or unified cache of CPU 0, from
/// `/sys/devices/system/cpu/cpu0/cache/index*/size` (`None` where sysfs has none).
pub fn last_level_cache_bytes() -> Option<usize> {
    let mut best: Option<usize> = None;
    for i in 0..16 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let Ok(size) = std::fs::read_to_string(format!("{dir}/size")) else { continue };
        let kind = std::fs::read_to_string(format!("{dir}/type")).unwrap_or_default();
        if kind.trim() == "Instruction" {
            continue;
        }
        if let Some(bytes) = parse_cache_size(&size) {
            best = Some(best.map_or(bytes, |b| b.max(bytes)));
        }
    }
    best
}

/// Parses sysfs cache sizes: `32K`, `2048K`, `30M`, `1G` or plain bytes.
pub fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K') => (&s[..i], 1usize << 10),
        (i, 'M') => (&s[..i], 1 << 20),
        (i, 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available_bytes() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<usize>().ok()?.checked_mul(1024)
}

/// The probe's buffer size for a last-level cache of `llc` bytes and `available` bytes of
/// free memory: `LLC_FACTOR · llc` within `MIN_BUFFER..=MAX_BUFFER`, then at most half of
/// `available` (but never under 64 MiB), rounded down to 2 MiB (a huge page).
pub fn buffer_bytes(llc: Option<usize>, available: Option<usize>) -> usize {
    let want = llc.map_or(MIN_BUFFER, |c| c.saturating_mul(LLC_FACTOR)).clamp(MIN_BUFFER, MAX_BUFFER);
    let cap = available.map_or(want, |a| (a / 2).max(64 << 20));
    want.min(cap) / (2 << 20) * (2 << 20)
}

/// Measures this machine's read bandwidth with every thread of the current rayon pool (call
/// it inside the pool the model runs on, e.g. `Model::install`). `None` if the buffer
/// cannot be allocated.
pub fn read_bandwidth() -> Option<Bandwidth> {
    let llc = last_level_cache_bytes();
    let bytes = buffer_bytes(llc, mem_available_bytes());
    let mut map = memmap2::MmapMut::map_anon(bytes).ok()?;
    let _ = map.advise(memmap2::Advice::HugePage);
    // Fault every page in (with distinct contents) before timing.
    map.par_chunks_mut(1 << 20).enumerate().for_each(|(i, chunk)| {
        for (j, page) in chunk.chunks_mut(4096).enumerate() {
            page[0] = (i ^ j) as u8;
        }
    });
    let words: &[u64] = bytemuck::cast_slice(&map[..]);
    let threads = rayon::current_num_threads().max(1);
    let mut rates = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let t = Instant::now();
        std::hint::black_box(par_sum(words, threads * TASKS_PER_THREAD));
        rates.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Some(summarize(&rates, bytes, llc, threads))
}

/// Best, median, worst and spread of per-pass rates.
fn summarize(rates: &[f64], buffer_bytes: usize, llc_bytes: Option<usize>, threads: usize) -> Bandwidth {
    let mut r = rates.to_vec();
    r.sort_by(f64::total_cmp);
    let (worst, best) = (r.first().copied().unwrap_or(0.0), r.last().copied().unwrap_or(0.0));
    let median = match r.len() {
        0 => 0.0,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    };
    let spread = if median > 0.0 { (best - worst) / median } else { 0.0 };
    Bandwidth {
        best_gb_s: best,
        median_gb_s: median,
        worst_gb_s: worst,
        spread,
        passes: rates.len(),
        buffer_bytes,
        llc_bytes,
        threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_word() {
        let w: Vec<u64> = (1..=1001).collect();
        let want: u64 = w.iter().sum();
        assert_eq!(sum_words(&w), want);
        for tasks in [0, 1, 2, 7, 2000] {
            assert_eq!(par_sum(&w, tasks), want, "{tasks} tasks");
        }
        assert_eq!(par_sum(&[], 4), 0);
        assert_eq!(sum_words(&[u64::MAX, 2]), 1, "wrapping");
    }

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_cache_size("491520K"), Some(480 << 20));
        assert_eq!(parse_cache_size("30M"), Some(30 << 20));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("99999999999999999999G"), None);
    }

    #[test]
    fn buffer_is_well_above_the_cache_and_bounded() {
        let mib = 1usize << 20;
        // 480 MiB of L3 (the development VM): 4× it.
        assert_eq!(buffer_bytes(Some(480 * mib), Some(20 << 30)), 1920 * mib);
        // Small or unknown caches: the 1 GiB floor; huge ones: the 4 GiB ceiling.
        assert_eq!(buffer_bytes(Some(32 * mib), None), 1 << 30);
        assert_eq!(buffer_bytes(None, None), 1 << 30);
        assert_eq!(buffer_bytes(Some(8 << 30), None), 4 << 30);
        // Never more than half of the free memory, never under 64 MiB.
        assert_eq!(buffer_bytes(Some(480 * mib), Some(1 << 30)), 512 * mib);
        assert_eq!(buffer_bytes(Some(480 * mib), Some(10 * mib)), 64 * mib);
    }

    #[test]
    fn summary_statistics() {
        let b = summarize(&[30.0, 20.0, 25.0, 35.0], 1 << 30, Some(1), 2);
        assert_eq!((b.best_gb_s, b.worst_gb_s, b.median_gb_s), (35.0, 20.0, 27.5));
        assert!((b.spread - 15.0 / 27.5).abs() < 1e-12);
        assert_eq!(b.passes, 4);
        let e = summarize(&[], 0, None, 1);
        assert_eq!((e.best_gb_s, e.median_gb_s, e.spread), (0.0, 0.0, 0.0));
    }
}
