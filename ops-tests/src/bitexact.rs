//! Bit-for-bit comparison reports for the kernel tests against bitnet.cpp's tensor dumps.

/// Collects per-node results of one test: which nodes were checked and which differed.
#[derive(Default)]
pub struct BitReport {
    checked: Vec<String>,
    failures: Vec<String>,
    values: usize,
}

impl BitReport {
    /// Compares f32 bits of one node; `key` is what [`BitReport::finish`]'s required list
    /// names, `label` what messages show.
    pub fn compare(&mut self, key: String, label: &str, got: &[f32], want: &[f32]) {
        if got.len() != want.len() {
            self.failures.push(format!("{label}: computed {} values, dump has {}", got.len(), want.len()));
            return;
        }
        let mut bad = 0usize;
        let mut max_abs = 0.0f64;
        let mut first = None;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if g.to_bits() != w.to_bits() {
                bad += 1;
                let d = (f64::from(g) - f64::from(w)).abs();
                if d > max_abs || d.is_nan() {
                    max_abs = d;
                }
                first.get_or_insert((i, g, w));
            }
        }
        self.values += got.len();
        self.checked.push(key);
        if bad == 0 {
            println!("[bit-exact] {label}: {} values", got.len());
        } else {
            let (i, g, w) = first.unwrap();
            let msg = format!(
                "{label}: {bad}/{} values differ, max |Δ| = {max_abs:.3e}; first at {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
                got.len(),
                g.to_bits(),
                w.to_bits()
            );
            println!("[MISMATCH] {msg}");
            self.failures.push(msg);
        }
    }

    /// Panics if a node differed or a required key was not checked.
    pub fn finish(self, what: &str, required: &[String]) {
        let missing: Vec<&String> = required.iter().filter(|r| !self.checked.contains(r)).collect();
        println!("{what}: {} nodes, {} values compared, {} differ", self.checked.len(), self.values, self.failures.len());
        assert!(missing.is_empty(), "{what}: required nodes were not checked: {missing:?}");
        assert!(self.failures.is_empty(), "{what}: {} nodes not bit-exact:\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

/// Splits `out` over threads; `f(i)` computes element `i`.
pub fn par_fill(out: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let chunk = out.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (c, part) in out.chunks_mut(chunk).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (j, o) in part.iter_mut().enumerate() {
                    *o = f(c * chunk + j);
                }
            });
        }
    });
}
