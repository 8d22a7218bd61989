//! Loading a model for running: file, lowering, backend choice, executor, tokenizer.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use backend_scalar::ScalarBackend;
use clap::ValueEnum;
use graph::{Backend, Executor};
use gguf::tokenizer::Tokenizer;
use gguf::{GgufFile, Model};

/// `--backend`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendChoice {
    /// AVX2 when this CPU and build have it, else scalar.
    Auto,
    /// The scalar reference.
    Scalar,
    /// The AVX2 backend.
    Avx2,
}

/// The AVX2 backend if this CPU can run it (and `BITNET_DISABLE_AVX2` is not set).
fn avx2() -> Option<Arc<dyn Backend>> {
    backend_avx2::Avx2Backend::new().map(|b| Arc::new(b) as Arc<dyn Backend>)
}

/// Resolves `--backend` to the preferred backend (`None` = scalar only), with its name.
pub fn pick_backend(choice: BackendChoice) -> Result<(Option<Arc<dyn Backend>>, &'static str)> {
    match choice {
        BackendChoice::Scalar => Ok((None, "scalar")),
        BackendChoice::Auto => Ok(match avx2() {
            Some(b) => (Some(b), "avx2"),
            None => (None, "scalar"),
        }),
        BackendChoice::Avx2 => match avx2() {
            Some(b) => Ok((Some(b), "avx2")),
            None => bail!("--backend avx2: unavailable (this CPU lacks AVX2/FMA/F16C, or BITNET_DISABLE_AVX2 is set); use --backend scalar or auto"),
        },
    }
}

/// A backend by name, for `check --candidate/--reference`.
pub fn backend_by_name(name: BackendChoice) -> Result<Arc<dyn Backend>> {
    Ok(match pick_backend(name)? {
        (Some(b), _) => b,
        (None, _) => Arc::new(ScalarBackend::new()),
    })
}

/// Sets the rayon pool size once (0 = rayon's default, one thread per core).
pub fn set_threads(threads: usize) -> Result<usize> {
    if threads > 0 {
        if threads > 1024 {
            bail!("--threads {threads} is not plausible");
        }
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("setting up the thread pool")?;
    }
    Ok(rayon::current_num_threads())
}

/// `--lm-head`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum LmHead {
    /// bitnet.cpp's numerics: the F16 head as stored.
    #[default]
    Exact,
    /// Opt-in: the F16 head requantized to Q8_0 at load (half the bytes per token; logits
    /// differ slightly from bitnet.cpp's).
    Q8,
}

/// A loaded model.
pub struct Loaded {
    /// The mapped file.
    pub file: GgufFile,
    /// Lowered graph and hyperparameters.
    pub model: Model,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// Milliseconds spent loading.
    pub load_ms: f64,
    /// The requantized LM head's bytes, with `--lm-head q8`.
    pub head_q8: Option<Vec<u8>>,
}

impl Loaded {
    fn weights(&self) -> gguf::lower::WithQ8Head<'_> {
        gguf::lower::WithQ8Head { file: &self.file, head: self.head_q8.as_deref() }
    }
}

impl graph::WeightSource for Loaded {
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.weights().bytes(name)
    }

    fn copy_weight(&self, name: &str, dst: &mut [u8]) -> bool {
        self.weights().copy_weight(name, dst)
    }
}

/// Opens, lowers and builds the tokenizer, reporting progress on stderr unless `quiet`.
pub fn load(path: &Path, quiet: bool) -> Result<Loaded> {
    load_with(path, quiet, LmHead::Exact)
}

/// [`load`] with an LM-head choice.
pub fn load_with(path: &Path, quiet: bool, lm_head: LmHead) -> Result<Loaded> {
    let t0 = Instant::now();
    if !quiet {
        eprintln!("loading {} …", path.display());
    }
    let file = GgufFile::open(path)?;
    let opts = gguf::LowerOptions { lm_head_q8: lm_head == LmHead::Q8 };
    let model = gguf::lower_with(&file, opts).with_context(|| format!("lowering {}", path.display()))?;
    let head_q8 = if model.graph.find(gguf::lower::Q8_HEAD).is_some() {
        Some(gguf::lower::quantize_head_q8(&file, gguf::lower::q8_head_base(&file, &model.hparams))?)
    } else {
        if lm_head == LmHead::Q8 && !quiet {
            eprintln!("--lm-head q8: the head is not F16 in this file; using it as stored");
        }
        None
    };
    let tokenizer = Tokenizer::from_gguf(&file).context("building the tokenizer")?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    if !quiet {
        let hp = &model.hparams;
        eprintln!(
            "loaded {}: {} layers, n_embd {}, vocab {}, graph of {} nodes verified ({load_ms:.0} ms)",
            hp.arch,
            hp.n_layer,
            hp.n_embd,
            hp.n_vocab,
            model.graph.nodes().len()
        );
    }
    Ok(Loaded { file, model, tokenizer, load_ms, head_q8 })
}

/// Builds an executor for `loaded` on the chosen backend with `n_ctx` positions.
pub fn executor<'a>(loaded: &'a Loaded, preferred: Option<Arc<dyn Backend>>, n_ctx: usize) -> Result<Executor<'a>> {
    Ok(Executor::new(loaded.model.graph.clone(), loaded, preferred, Arc::new(ScalarBackend::new()), n_ctx)?)
}
