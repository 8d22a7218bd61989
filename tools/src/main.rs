//! `bitnet-graph`: dump, exec, check, bench, synth.
//!
//! Exit codes: 0 success (also when the reader of our output closed the pipe), 1 a check
//! failed, 2 bad usage or input (and any other error). Never a panic on bad input.
#![forbid(unsafe_code)]

mod bench;
mod check;
mod cli;
mod dump;
mod exec;
mod load;
mod out;
mod perplexity;
mod pull;
mod serve;
mod synth;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) if out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
