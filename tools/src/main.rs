//! `bitnet-graph`: dump, exec.
#![forbid(unsafe_code)]

mod bench;
mod chat;
mod check;
mod cli;
mod dump;
mod exec;
mod pull;
mod runtime;
mod sampler;
mod synth;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
