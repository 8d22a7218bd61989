//! The backend registry: every backend crate, in the order the executor tries them.
//!
//! Adding a backend is one crate under `backends/`, its dependency line in
//! `runtime/Cargo.toml`, and one line in [`REGISTRY`]: the CLI's `--backend`, `check`,
//! `dump`, the op suites of `ops-tests` and the benches all read this table.

use std::sync::Arc;

use graph::Backend;

/// One registered backend.
pub struct BackendEntry {
    /// Its name (`--backend NAME`).
    pub name: &'static str,
    /// What it needs from the CPU, for messages.
    pub requires: &'static str,
    /// The backend, or `None` when this CPU (or a `BITNET_DISABLE_*` variable) rules it out.
    pub make: fn() -> Option<Arc<dyn Backend>>,
}

fn arc<B: Backend + 'static>(b: Option<B>) -> Option<Arc<dyn Backend>> {
    b.map(|b| Arc::new(b) as Arc<dyn Backend>)
}

/// Every backend, most specialised first; the scalar reference, which plans every op, last.
pub const REGISTRY: &[BackendEntry] = &[
    BackendEntry {
        name: "avx512",
        requires: "x86-64 with AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C (BITNET_DISABLE_AVX512 unset)",
        make: || arc(backend_avx512::Avx512Backend::new()),
    },
    BackendEntry {
        name: "avx2",
        requires: "x86-64 with AVX2, FMA and F16C (BITNET_DISABLE_AVX2 unset)",
        make: || arc(backend_avx2::Avx2Backend::new()),
    },
    BackendEntry {
        name: "neon",
        requires: "aarch64 with NEON; sdot where the CPU has dotprod (BITNET_DISABLE_NEON, BITNET_DISABLE_DOTPROD unset)",
        make: || arc(backend_neon::NeonBackend::new()),
    },
    BackendEntry { name: "scalar", requires: "any CPU", make: || arc(Some(backend_scalar::ScalarBackend::new())) },
];

/// The names of every registered backend, and `auto`.
pub fn choices() -> Vec<&'static str> {
    std::iter::once("auto").chain(REGISTRY.iter().map(|e| e.name)).collect()
}

/// The backends this CPU can run, in registry order.
pub fn available() -> Vec<Arc<dyn Backend>> {
    REGISTRY.iter().filter_map(|e| (e.make)()).collect()
}

/// The scalar reference backend.
pub fn reference() -> Arc<dyn Backend> {
    Arc::new(backend_scalar::ScalarBackend::new())
}

/// One backend by name (for `check --candidate`).
pub fn by_name(name: &str) -> Result<Arc<dyn Backend>, String> {
    let entry = REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("unknown backend `{name}` (known: {})", choices().join(", ")))?;
    (entry.make)().ok_or_else(|| format!("backend `{name}` is not available on this machine: it needs {}", entry.requires))
}

/// The ordered list the executor tries for `--backend choice`: `auto` is every available
/// backend; a name is that backend followed by the ones after it in the registry that are
/// available (so ops it does not implement run on the next, ending with scalar).
pub fn resolve(choice: &str) -> Result<Vec<Arc<dyn Backend>>, String> {
    if choice == "auto" {
        return Ok(available());
    }
    let pos = REGISTRY
        .iter()
        .position(|e| e.name == choice)
        .ok_or_else(|| format!("unknown backend `{choice}` (known: {})", choices().join(", ")))?;
    let first = by_name(choice)?;
    Ok(std::iter::once(first).chain(REGISTRY[pos + 1..].iter().filter_map(|e| (e.make)())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_last_and_always_there() {
        assert_eq!(REGISTRY.last().map(|e| e.name), Some("scalar"));
        assert_eq!(resolve("scalar").unwrap().iter().map(|b| b.name()).collect::<Vec<_>>(), ["scalar"]);
        assert_eq!(available().last().map(|b| b.name()), Some("scalar"));
        assert!(resolve("nope").unwrap_err().contains("unknown backend `nope`"));
    }
}
