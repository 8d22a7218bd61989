//! `perplexity`: llama-perplexity's perplexity and KL-divergence on the runtime
//! ([`runtime::perplexity`]), with its printed numbers; progress and ETA on stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use runtime::perplexity::{self as ppl, BaseReader, BaseWriter, PerplexityParams};
use runtime::ModelOptions;

use crate::cli::{LmHeadArg, ModelArg};
use crate::{load, out};

fn backend_names() -> Vec<&'static str> {
    runtime::backends::choices()
}

/// Arguments of `perplexity`.
#[derive(clap::Args, Debug, Clone)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text to score (UTF-8). With --kl-divergence it is optional (the base holds the
    /// tokens) and, when given, must tokenize to the base's tokens.
    #[arg(short = 'f', long, value_name = "FILE", required_unless_present = "kl_divergence")]
    pub file: Option<PathBuf>,
    /// Tokens per chunk (even; at most the model's training context).
    #[arg(short = 'c', long, default_value_t = 512)]
    pub ctx_size: usize,
    /// Tokens per forward pass (forward passes are at most 512 tokens, as llama.cpp's
    /// micro-batches).
    #[arg(short = 'b', long, visible_alias = "batch-size", default_value_t = 2048)]
    pub batch: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print one JSON object (per-chunk estimates, final PPL and ±, token counts, tok/s).
    #[arg(long)]
    pub json: bool,
    /// Save this run's log-probabilities as a KL-divergence base (llama-perplexity's format).
    #[arg(long, value_name = "FILE")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Score against the base given with --kl-divergence-base instead of writing one.
    #[arg(long, requires = "kl_divergence_base")]
    pub kl_divergence: bool,
    /// Backend: `auto` (the fastest this CPU has) or a name.
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(backend_names()))]
    pub backend: String,
    /// Threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// LM head: `exact` (bitnet.cpp's numerics) or a requantized one.
    #[arg(long, value_enum, default_value_t = LmHeadArg::Exact)]
    pub lm_head: LmHeadArg,
    /// Check every weight before running (llama.cpp's `--check-tensors`).
    #[arg(long)]
    pub check_tensors: bool,
}

/// Reads the text file: UTF-8, one trailing newline dropped (as llama.cpp's `-f` does).
fn read_text(path: &PathBuf) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => bail!("{}: not UTF-8 text (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to()),
    };
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// Progress on stderr: the first chunk's time and the ETA, then one updating line.
struct Progress {
    quiet: bool,
    tty: bool,
}

impl Progress {
    fn chunk(&self, done: usize, total: usize, elapsed: f64, tokens_per_chunk: usize) {
        if self.quiet {
            return;
        }
        let eta = elapsed / done as f64 * (total - done) as f64;
        let tok_s = (done * tokens_per_chunk) as f64 / elapsed.max(1e-9);
        if done == 1 {
            eprintln!("perplexity: {elapsed:.2} seconds per pass - ETA {:.2} minutes", elapsed * total as f64 / 60.0);
        }
        let line = format!("perplexity: chunk {done}/{total}, {tok_s:.1} tokens/s, ETA {eta:.1} s");
        if self.tty {
            eprint!("\r{line}\x1b[K");
            if done == total {
                eprintln!();
            }
        } else if done == total || done.is_power_of_two() {
            eprintln!("{line}");
        }
    }
}

/// Runs `perplexity`.
pub fn run(a: &PerplexityArgs) -> Result<ExitCode> {
    let base_opts = ModelOptions {
        backend: a.backend.clone(),
        threads: a.threads,
        lm_head: a.lm_head.into(),
        check_tensors: a.check_tensors,
        ..ModelOptions::default()
    };
    let progress = Progress { quiet: a.json, tty: std::io::stderr().is_terminal() };
    if a.kl_divergence {
        return kl(a, &base_opts, &progress);
    }
    let params = PerplexityParams { n_ctx: a.ctx_size, n_batch: a.batch, n_chunks: a.chunks };
    params.validate().map_err(|e| anyhow::anyhow!("{}", flags(&e.to_string())))?;
    let text = read_text(a.file.as_ref().context("-f FILE is required")?)?;
    let model = load::load(&a.model, &params.model_options(&base_opts), a.json)?;
    let tokens = ppl::tokenize_text(&model, &text);
    if !a.json {
        eprintln!("perplexity: {} tokens; chunks of {}, the second half of each scored", tokens.len(), a.ctx_size);
    }
    let mut stdout = out::stdout();
    let mut print_err = None;
    let mut on_chunk = |c: &ppl::ChunkProgress| {
        progress.chunk(c.done, c.total, c.elapsed_s, a.ctx_size);
        if !a.json && print_err.is_none() {
            print_err = stdout.put(&format!("[{}]{:.4},", c.done, c.running_ppl)).err();
        }
    };
    let res = match &a.kl_divergence_base {
        Some(path) => {
            let mut result = None;
            out::write_file(path, |w| {
                let r = ppl::perplexity(&model, &tokens, &params, Some(BaseWriter::new(w)), &mut on_chunk);
                result = Some(r);
                Ok(())
            })?;
            result.context("no result")?
        }
        None => ppl::perplexity(&model, &tokens, &params, None, &mut on_chunk),
    }
    .map_err(|e| anyhow::anyhow!("{}", flags(&e.to_string())))?;
    if let Some(e) = print_err {
        return Err(e);
    }
    if a.json {
        let v = serde_json::json!({
            "model": model.info().path,
            "lm_head": model.info().lm_head,
            "n_batch": a.batch,
            "result": res,
        });
        stdout.line(&serde_json::to_string_pretty(&v)?)?;
    } else {
        stdout.line("")?;
        match res.plusminus {
            Some(pm) => stdout.line(&format!("Final estimate: PPL = {:.4} +/- {pm:.5}", res.ppl))?,
            None => eprintln!("Unexpected negative standard deviation of log(prob)"),
        }
        eprintln!(
            "perplexity: {} chunks of {} tokens, {} scored, {:.2} s, {:.1} tokens/s",
            res.n_chunks, res.n_ctx, res.n_scored, res.seconds, res.tokens_per_second
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--kl-divergence`: scores the model against the base file.
fn kl(a: &PerplexityArgs, base_opts: &ModelOptions, progress: &Progress) -> Result<ExitCode> {
    let path = a.kl_divergence_base.as_ref().context("--kl-divergence needs --kl-divergence-base FILE")?;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = f.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut base = BaseReader::new(std::io::BufReader::new(f)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if len != base.expected_len() {
        bail!(
            "{}: a base of {} chunks of {} tokens with a vocabulary of {} is {} bytes, this file has {len} (truncated or not a base file)",
            path.display(),
            base.n_chunk,
            base.n_ctx,
            base.n_vocab,
            base.expected_len()
        );
    }
    let params = PerplexityParams { n_ctx: base.n_ctx, n_batch: a.batch, n_chunks: a.chunks };
    let model = load::load(&a.model, &params.model_options(base_opts), a.json)?;
    if let Some(file) = &a.file {
        let tokens = ppl::tokenize_text(&model, &read_text(file)?);
        let n = base.tokens.len();
        if tokens.len() < n || tokens[..n] != base.tokens[..] {
            let at = tokens.iter().zip(&base.tokens).position(|(x, y)| x != y).unwrap_or(tokens.len().min(n));
            bail!("{} was made from another text: its tokens differ from {}'s at token {at}", path.display(), file.display());
        }
    }
    let mut stdout = out::stdout();
    let mut print_err = None;
    let header = "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p";
    let n_chunk = a.chunks.map_or(base.n_chunk, |c| c.min(base.n_chunk));
    let stats = ppl::kl_divergence(&model, &mut base, a.batch, a.chunks, &mut |i, s, elapsed| {
        progress.chunk(i, n_chunk, elapsed, params.n_ctx);
        if !a.json && print_err.is_none() {
            print_err = stdout.put(&format!("\n{header}\n{}\n", s.chunk_line(i))).err();
        }
    })
    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), flags(&e.to_string())))?;
    if let Some(e) = print_err {
        return Err(e);
    }
    if a.json {
        let (kld, kld_unc) = stats.kld();
        let (top, top_unc) = stats.same_top();
        let v = serde_json::json!({
            "model": model.info().path,
            "lm_head": model.info().lm_head,
            "base": path.display().to_string(),
            "n_ctx": params.n_ctx,
            "n_chunks": n_chunk,
            "mean_kld": kld,
            "mean_kld_uncertainty": kld_unc,
            "same_top_p": top,
            "same_top_p_uncertainty": top_unc,
            "sums": stats,
            "report": stats.report(),
        });
        stdout.line(&serde_json::to_string_pretty(&v)?)?;
    } else {
        stdout.put(&format!("\n{}\n", stats.report()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The runtime's field names as this command spells its flags.
fn flags(msg: &str) -> String {
    msg.replace("ctx_size", "-c/--ctx-size").replace("batch_size", "-b/--batch").replace("chunks must", "--chunks must")
}
