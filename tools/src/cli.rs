//! Argument parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::runtime::{BackendChoice, LmHead};

/// bitnet-graph: runs BitNet b1.58 ternary models from GGUF files on CPUs, with every graph
/// shape verified before any math runs.
#[derive(Parser, Debug)]
#[command(name = "bitnet-graph", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Output formats of `dump`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DumpFormat {
    /// A fixed-width table.
    Table,
    /// Graphviz DOT (render with `dot -Tsvg`).
    Dot,
    /// One JSON document.
    Json,
}

/// Arguments of `exec`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The prompt text.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "max-new-tokens", default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy (argmax, lowest id on ties).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95, value_parser = parse_unit)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05, value_parser = parse_unit)]
    pub min_p: f32,
    /// Repetition penalty over the last 64 tokens (1 = off).
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive)]
    pub repeat_penalty: f32,
    /// RNG seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Prompt tokens per forward pass; 1 evaluates the prompt one token at a time.
    #[arg(long, default_value_t = 512)]
    pub ubatch: usize,
    /// Parse special-token text (e.g. `<|eot_id|>`) in the prompt.
    #[arg(long)]
    pub special: bool,
    /// Do not add the BOS token.
    #[arg(long)]
    pub no_bos: bool,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Context size in tokens (default: the model's training context).
    #[arg(short = 'c', long)]
    pub ctx_size: Option<usize>,
    /// Format the prompt as a chat turn with the model's chat format.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Chat format by name instead of detection from the GGUF (implies --chat).
    #[arg(long, value_parser = ["bitnet", "llama3", "llama2", "chatml", "falcon3"])]
    pub chat_template: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Write the logits of every prompt position to this .npy file ([n_prompt, n_vocab] f32).
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// Check every node of every step against the scalar reference (isolated mode); exit 1
    /// naming the first failing node.
    #[arg(long)]
    pub crosscheck: bool,
    /// LM head: `exact` (bitnet.cpp's numerics) or `q8` (requantized at load; faster, logits
    /// differ slightly).
    #[arg(long, value_enum, default_value_t = LmHead::Exact)]
    pub lm_head: LmHead,
}

fn parse_unit(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1]"))
    }
}

fn parse_positive(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not a positive number"))
    }
}

/// Arguments of `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Prompt whose forward passes are checked.
    #[arg(short = 'p', long, default_value = "The capital of France is")]
    pub prompt: String,
    /// The backend under test.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub candidate: BackendChoice,
    /// The backend that defines the expected outputs.
    #[arg(long, value_enum, default_value_t = BackendChoice::Scalar)]
    pub reference: BackendChoice,
    /// isolated: each node gets the reference's inputs; cumulative: errors propagate.
    #[arg(long, value_enum, default_value_t = Mode::Isolated)]
    pub mode: Mode,
    /// Same as `--mode cumulative`.
    #[arg(long)]
    pub cumulative: bool,
    /// Single-token decode passes after the prompt pass.
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// Output format (dot colours nodes by result).
    #[arg(long, value_enum, default_value_t = DumpFormat::Table)]
    pub format: DumpFormat,
    /// Threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
}

/// `--mode` of `check`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// Each node gets the reference's inputs.
    Isolated,
    /// The candidate runs on its own outputs.
    Cumulative,
}

impl From<Mode> for graph::check::Mode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Isolated => graph::check::Mode::Isolated,
            Mode::Cumulative => graph::check::Mode::Cumulative,
        }
    }
}

/// `synth --preset`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SynthPreset {
    /// The shared tiny model's shape (256 hidden, 2 layers).
    Tiny,
    /// microsoft/bitnet-b1.58-2B-4T's shape (2560 hidden, 6912 FFN, 30 layers, 20/5 heads).
    #[value(name = "2b4t")]
    TwoB4T,
}

/// `synth --arch`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SynthArch {
    /// BitNet b1.58 2B-4T (relu², sub-norms).
    #[value(name = "bitnet-b1.58")]
    BitnetB158,
    /// 1bitLLM bitnet_b1_58 (SiLU, sub-norms).
    Bitnet,
    /// LLaMA with ternary weights (SiLU, no sub-norms, NORM RoPE).
    Llama,
}

impl SynthArch {
    /// The `general.architecture` value.
    pub fn gguf_name(self) -> &'static str {
        match self {
            SynthArch::BitnetB158 => "bitnet-b1.58",
            SynthArch::Bitnet => "bitnet",
            SynthArch::Llama => "llama",
        }
    }
}

/// `synth --type`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SynthType {
    /// bitnet.cpp's I2_S (2 bits, one f32 scale per tensor).
    #[value(name = "i2_s")]
    I2S,
    /// ggml TQ2_0.
    #[value(name = "tq2_0")]
    Tq2_0,
    /// ggml TQ1_0.
    #[value(name = "tq1_0")]
    Tq1_0,
}

/// `synth --embd-type`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SynthEmbd {
    /// F16.
    F16,
    /// Q8_0.
    #[value(name = "q8_0")]
    Q8_0,
    /// Q4_0.
    #[value(name = "q4_0")]
    Q4_0,
}

/// Arguments of `synth`.
#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Shape preset.
    #[arg(long, value_enum, default_value_t = SynthPreset::Tiny)]
    pub preset: SynthPreset,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Architecture.
    #[arg(long, value_enum, default_value_t = SynthArch::BitnetB158)]
    pub arch: SynthArch,
    /// Ternary weight type of the linear layers.
    #[arg(long = "type", value_enum, default_value_t = SynthType::I2S)]
    pub weight_type: SynthType,
    /// Token-embedding type (default: F16, or Q8_0 when n_embd is not a multiple of 256).
    #[arg(long, value_enum)]
    pub embd_type: Option<SynthEmbd>,
    /// Write a separate `output.weight` head (arch llama only).
    #[arg(long)]
    pub output_weight: bool,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// GGUF whose tokenizer metadata is copied (e.g. ../shared/models/tiny-i2_s.gguf).
    #[arg(long)]
    pub vocab_from: PathBuf,
    /// Override: embedding width.
    #[arg(long)]
    pub embd: Option<usize>,
    /// Override: feed-forward width.
    #[arg(long)]
    pub ff: Option<usize>,
    /// Override: layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Override: attention heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Override: KV heads.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Override: vocabulary size (must equal the tokenizer's).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Override: training context length.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Overwrite `--out` if it exists (never the `--vocab-from` input).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Prompt tokens for the prefill measurement (pp).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens for the decode measurement (tg).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    /// Threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Repetitions (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// Prompt tokens per forward pass.
    #[arg(long, default_value_t = 512)]
    pub ubatch: usize,
    /// Backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print where decode time goes, per op kind (last repetition).
    #[arg(long)]
    pub profile: bool,
    /// LM head: exact (F16 as stored) or q8 (requantized at load).
    #[arg(long, value_enum, default_value_t = LmHead::Exact)]
    pub lm_head: LmHead,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Measure prefill and decode speed, and decode against the bandwidth roofline.
    Bench(BenchArgs),
    /// Write a synthetic bitnet-b1.58 GGUF with random ternary weights (for benchmarks).
    Synth(SynthArgs),
    /// Cross-check a backend against the reference, node by node, on the model's graph.
    Check(CheckArgs),
    /// Generate text from a prompt.
    Exec(ExecArgs),
    /// Print the model's metadata and its graph, every node with its shape.
    Dump {
        /// The GGUF model file.
        model: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DumpFormat::Table)]
        format: DumpFormat,
        /// List the file's tensors (name, type, shape, offset, bytes) instead of the graph.
        #[arg(long)]
        tensors: bool,
        /// Print every metadata key (arrays summarised).
        #[arg(long)]
        metadata: bool,
        /// Show which backend and kernel each node runs on with this backend choice.
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
    },
}

/// Parses arguments and runs the subcommand.
pub fn run() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    match cli.cmd {
        Cmd::Exec(a) => crate::exec::run(&a),
        Cmd::Check(a) => crate::check::run(&a),
        Cmd::Synth(a) => crate::synth::run(&a),
        Cmd::Bench(a) => crate::bench::run(&a),
        Cmd::Dump { model, format, tensors, metadata, backend } => crate::dump::run(&model, format, tensors, metadata, backend),
    }
}
