//! Loading a model for a subcommand: the path (or a model by name), the run options, and
//! the progress lines on stderr.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use runtime::{Model, ModelOptions};

use crate::cli::{ModelArg, RunArgs};

/// The model file a [`ModelArg`] names: the path, or the Hugging Face cache's copy of
/// `--hf REPO[:FILE]` (downloaded first when it is not there, saying what, from where and
/// how big).
pub fn model_path(m: &ModelArg) -> Result<PathBuf> {
    match (&m.model, &m.hf) {
        (Some(p), None) => Ok(p.clone()),
        (None, Some(spec)) => {
            let mut opts = runtime::hub::HubOptions::from_env()?;
            opts.offline |= m.offline;
            Ok(runtime::hub::resolve(spec, &opts)?)
        }
        _ => bail!("give a model path or --hf REPO"),
    }
}

/// The runtime options of `run`, with `n_parallel` sequences.
pub fn options(run: &RunArgs, n_parallel: usize) -> ModelOptions {
    ModelOptions {
        backend: run.backend.clone(),
        threads: run.threads,
        lm_head: run.lm_head.into(),
        n_ctx: run.ctx_size,
        n_parallel,
        ubatch: run.ubatch,
        check_tensors: run.check_tensors,
    }
}

/// Loads the model, saying so on stderr unless `quiet`.
pub fn load(m: &ModelArg, opts: &ModelOptions, quiet: bool) -> Result<Arc<Model>> {
    let path = model_path(m)?;
    opts.validate().map_err(|e| anyhow::anyhow!("{}", cli_names(&e.to_string())))?;
    if !quiet {
        eprintln!("loading {} …", path.display());
    }
    let model = Model::load(&path, opts).with_context(|| format!("loading {}", path.display()))?;
    let hp = model.hparams();
    if !quiet {
        eprintln!(
            "loaded {}: {} layers, n_embd {}, vocab {}, graph of {} nodes verified ({:.0} ms)",
            hp.arch,
            hp.n_layer,
            hp.n_embd,
            hp.n_vocab,
            model.program().graph().len(),
            model.load_ms()
        );
        if model.n_ctx() > hp.n_ctx_train {
            eprintln!(
                "warning: --ctx-size {} exceeds the {} positions the model was trained with; quality may degrade past them",
                model.n_ctx(),
                hp.n_ctx_train
            );
        }
    }
    Ok(Arc::new(model))
}

/// The runtime's option names as this CLI spells them.
fn cli_names(msg: &str) -> String {
    msg.replace("ctx_size", "--ctx-size")
        .replace("ubatch", "--ubatch")
        .replace("parallel", "--parallel")
        .replace("threads", "--threads")
}
