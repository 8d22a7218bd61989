//! `bitnet-graph pull REPO[:FILE]`: download a model from the Hugging Face hub into the
//! standard cache (or find it there) and print its local path.

use std::process::ExitCode;

use ::runtime::hub::{resolve, HubOptions};
use anyhow::Result;

/// Arguments of `pull`.
#[derive(clap::Args, Debug, Clone)]
pub struct PullArgs {
    /// The model: a Hugging Face repository `OWNER/NAME`, with `:FILE` to name the file
    /// (default: the repository's single .gguf, or its I2_S one), e.g.
    /// `microsoft/bitnet-b1.58-2B-4T-gguf`.
    #[arg(value_name = "REPO[:FILE]")]
    pub spec: String,
    /// Use the local cache only, make no request (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// No progress line (the line saying what is downloaded, from where and how big is always
    /// printed).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Resolves the spec (downloading when needed) and prints the local path on stdout.
pub fn run(a: &PullArgs) -> Result<ExitCode> {
    let mut opts = HubOptions::from_env()?;
    opts.offline |= a.offline;
    opts.progress &= !a.quiet;
    let path = resolve(&a.spec, &opts)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
