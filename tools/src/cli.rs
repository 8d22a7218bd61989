//! Argument parsing and dispatch. Flags mean the same in every subcommand, and take
//! llama.cpp's spellings as aliases (`--temp`, `--n-predict`, `-s`, `-f`, `-c`, `-t`, `-np`,
//! `-hf`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

/// bitnet-graph: runs BitNet b1.58 ternary models from GGUF files on CPUs, with every graph
/// shape verified before any math runs.
#[derive(Parser, Debug)]
#[command(name = "bitnet-graph", version, about, allow_negative_numbers = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Output formats of `dump` and `check`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DumpFormat {
    /// A fixed-width table.
    Table,
    /// Graphviz DOT (render with `dot -Tsvg`).
    Dot,
    /// One JSON document.
    Json,
}

/// `--lm-head`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum LmHeadArg {
    /// bitnet.cpp's numerics: the head as stored.
    #[default]
    Exact,
    /// Opt-in: an F16 head requantized to Q8_0 at load (faster; logits differ slightly).
    Q8,
    /// Opt-in: an F16 head requantized to Q6_K at load, as bitnet.cpp's `--quant-embd`
    /// (smaller still; logits differ slightly).
    Q6k,
}

impl From<LmHeadArg> for runtime::LmHead {
    fn from(a: LmHeadArg) -> Self {
        match a {
            LmHeadArg::Exact => runtime::LmHead::Exact,
            LmHeadArg::Q8 => runtime::LmHead::Q8,
            LmHeadArg::Q6k => runtime::LmHead::Q6k,
        }
    }
}

fn backend_names() -> Vec<&'static str> {
    runtime::backends::choices()
}

/// Where the model comes from: a path, or a Hugging Face repository.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArg {
    /// The GGUF model file.
    #[arg(required_unless_present = "hf")]
    pub model: Option<PathBuf>,
    /// A model by name: `owner/repo[:FILE]` on Hugging Face (downloaded into its cache once;
    /// `-hf` works too).
    #[arg(long = "hf", visible_alias = "hf-repo", value_name = "REPO[:FILE]", conflicts_with = "model")]
    pub hf: Option<String>,
    /// With --hf: use the local cache only (also `HF_HUB_OFFLINE=1`).
    #[arg(long, requires = "hf")]
    pub offline: bool,
}

/// How the model runs: backend, threads, context, head.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Backend: `auto` (the fastest this CPU has) or a name.
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(backend_names()))]
    pub backend: String,
    /// Threads (default: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Context size per sequence, in tokens (default: the model's training context).
    #[arg(short = 'c', long)]
    pub ctx_size: Option<usize>,
    /// Prompt tokens per forward pass; 1 evaluates the prompt one token at a time.
    #[arg(long, visible_alias = "ubatch-size", default_value_t = 512)]
    pub ubatch: usize,
    /// LM head: `exact` (bitnet.cpp's numerics), `q8` or `q6k` (requantized at load; faster,
    /// logits differ slightly).
    #[arg(long, value_enum, default_value_t = LmHeadArg::Exact)]
    pub lm_head: LmHeadArg,
    /// Check every weight before running (finite floats and scales, valid ternary codes), as
    /// llama.cpp's `--check-tensors`.
    #[arg(long)]
    pub check_tensors: bool,
}

/// Sampling flags (llama.cpp's names and defaults).
#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// Tokens to generate at most; -1: until an end-of-generation token or a full context.
    #[arg(
        short = 'n',
        long = "n-predict",
        visible_alias = "max-new-tokens",
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    pub n_predict: i64,
    /// Sampling temperature; 0 or less is greedy (argmax, lowest id on ties).
    #[arg(long = "temperature", visible_alias = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of the penalties.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Frequency penalty (0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Presence penalty (0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// RNG seed; -1 (the default) takes one from the clock.
    #[arg(short = 's', long, allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SampleArgs {
    /// The runtime's sampling parameters, validated.
    pub fn params(&self) -> Result<runtime::SamplingParams> {
        let max_tokens = match self.n_predict {
            -1 => None,
            n if n >= 0 => Some(n as usize),
            n => bail!("--n-predict {n}: expected -1 (until the end) or a count ≥ 0"),
        };
        let seed = match self.seed {
            None | Some(-1) => None,
            Some(s) if s >= 0 => Some(s as u64),
            Some(s) => bail!("--seed {s}: expected -1 (random) or a value ≥ 0"),
        };
        let p = runtime::SamplingParams {
            max_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed,
            stop: Vec::new(),
            ignore_eos: self.ignore_eos,
            top_logprobs: None,
        };
        p.validate().map_err(|e| anyhow::anyhow!("{}", flag_names(&e.to_string())))?;
        Ok(p)
    }
}

/// Rewrites the runtime's field names in a message to this CLI's flag names.
fn flag_names(msg: &str) -> String {
    [
        ("top_p", "--top-p"),
        ("min_p", "--min-p"),
        ("repeat_penalty", "--repeat-penalty"),
        ("frequency_penalty", "--frequency-penalty"),
        ("presence_penalty", "--presence-penalty"),
        ("temperature", "--temperature"),
    ]
    .iter()
    .fold(msg.to_string(), |m, (field, flag)| m.replace(field, flag))
}

/// Arguments of `exec`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The prompt text.
    #[arg(short = 'p', long, allow_hyphen_values = true, required_unless_present_any = ["file", "prompts_file"], conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file (`-` = standard input).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Run many prompts: one per line, or JSONL objects `{"prompt", "max_tokens",
    /// "temperature", "seed", …}`; writes one JSON result per line, in input order.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "file", "logits_out", "crosscheck"])]
    pub prompts_file: Option<PathBuf>,
    /// Sequences run together with --prompts-file (each with its own KV cache).
    #[arg(long, visible_alias = "np", default_value_t = 1)]
    pub parallel: usize,
    #[command(flatten)]
    pub sample: SampleArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Parse special-token text (e.g. `<|eot_id|>`) in the prompt.
    #[arg(long)]
    pub special: bool,
    /// Do not add the BOS token.
    #[arg(long)]
    pub no_bos: bool,
    /// Format the prompt as a chat turn with the model's chat format.
    #[arg(long)]
    pub chat: bool,
    /// System message (implies --chat).
    #[arg(long, visible_alias = "sys")]
    pub system: Option<String>,
    /// Chat format by name instead of detection from the GGUF (implies --chat).
    #[arg(long, value_parser = ["bitnet", "llama3", "llama2", "chatml", "falcon3"])]
    pub chat_template: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Print the prompt's tokens (id and text) before generating.
    #[arg(long)]
    pub verbose_prompt: bool,
    /// Write the logits of every prompt position to this .npy file ([n_prompt, n_vocab] f32).
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// Check every node of every step against the scalar reference (isolated mode); exit 1
    /// naming the first failing node.
    #[arg(long)]
    pub crosscheck: bool,
}

/// Arguments of `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompt whose forward passes are checked.
    #[arg(short = 'p', long, default_value = "The capital of France is", allow_hyphen_values = true)]
    pub prompt: String,
    /// The backend under test (`auto`: the first backend this CPU runs).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(backend_names()))]
    pub candidate: String,
    /// The backend that defines the expected outputs (what it does not implement runs on
    /// the backends after it).
    #[arg(long, default_value = "scalar", value_parser = clap::builder::PossibleValuesParser::new(backend_names()))]
    pub reference: String,
    /// isolated: each node gets the reference's inputs; cumulative: errors propagate.
    #[arg(long, value_enum, default_value_t = Mode::Isolated)]
    pub mode: Mode,
    /// Same as `--mode cumulative`.
    #[arg(long, conflicts_with = "mode")]
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
    /// Check every weight first (llama.cpp's `--check-tensors`).
    #[arg(long)]
    pub check_tensors: bool,
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
    /// Q6_K (bitnet.cpp's `--quant-embd`; n_embd must be a multiple of 256).
    #[value(name = "q6_k")]
    Q6K,
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
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompt tokens for the prefill measurement (pp).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens for the decode measurement (tg).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    /// Repetitions (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// Tokens already in the KV cache when prefill and decode are measured (llama-bench's
    /// `-d`): a prompt of DEPTH tokens is processed once, untimed, and every measurement
    /// runs at positions DEPTH onwards.
    #[arg(short = 'd', long = "n-depth", default_value_t = 0, value_name = "DEPTH")]
    pub n_depth: usize,
    /// Prompt then generation in one measurement (llama-bench's `-pg PP,TG`): PP prompt
    /// tokens, then TG decoded tokens, reported as (PP + TG) / total time.
    #[arg(long = "pg", value_delimiter = ',', value_name = "PP,TG")]
    pub pg: Vec<usize>,
    /// Sequences run together, like llama-batched-bench: a comma-separated list of levels
    /// (`1,2,4,8`); each level prefills -p tokens per sequence and decodes -n per sequence.
    #[arg(long = "parallel", visible_alias = "npl", value_delimiter = ',', value_name = "N,…")]
    pub parallel: Vec<usize>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print where prefill and decode time goes, per op kind (last repetition).
    #[arg(long)]
    pub profile: bool,
}

/// Arguments of `dump`.
#[derive(clap::Args, Debug, Clone)]
pub struct DumpArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Output format (`--tensors` takes table or json; `--metadata` adds to the table).
    #[arg(long, value_enum, default_value_t = DumpFormat::Table)]
    pub format: DumpFormat,
    /// List the file's tensors (name, type, shape, offset, bytes) instead of the graph.
    #[arg(long)]
    pub tensors: bool,
    /// Print every metadata key (arrays summarised) in the table.
    #[arg(long)]
    pub metadata: bool,
    /// Show which backend and kernel each node runs on with this backend choice.
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(backend_names()))]
    pub backend: String,
    /// LM head the graph is built for.
    #[arg(long, value_enum, default_value_t = LmHeadArg::Exact)]
    pub lm_head: LmHeadArg,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Measure prefill and decode speed (one or many sequences), and decode against the
    /// bandwidth roofline.
    #[command(allow_negative_numbers = true)]
    Bench(BenchArgs),
    /// Write a synthetic bitnet-b1.58 GGUF with random ternary weights (for benchmarks).
    #[command(allow_negative_numbers = true)]
    Synth(SynthArgs),
    /// Cross-check a backend against the reference, node by node, on the model's graph.
    #[command(allow_negative_numbers = true)]
    Check(CheckArgs),
    /// Generate text from a prompt (or many prompts, batched).
    #[command(allow_negative_numbers = true)]
    Exec(ExecArgs),
    /// Download a model from the Hugging Face hub into its cache (or find it there); print its path.
    Pull(crate::pull::PullArgs),
    /// Print the model's metadata and its graph, every node with its shape.
    #[command(allow_negative_numbers = true)]
    Dump(DumpArgs),
    /// Serve the model over an OpenAI-compatible HTTP API, with a chat page at `/`.
    Serve(crate::serve::ServeArgs),
    /// Perplexity of a text (llama-perplexity's method and numbers), and KL-divergence
    /// against a saved base run.
    #[command(allow_negative_numbers = true)]
    Perplexity(crate::perplexity::PerplexityArgs),
}

/// llama.cpp's multi-letter single-dash flags, rewritten to their long forms before clap
/// sees them (clap's short flags are one letter).
fn llama_cpp_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut after_dashes = false;
    for a in args {
        if !after_dashes {
            match a.to_str() {
                Some("--") => after_dashes = true,
                Some("-hf") | Some("-hfr") => {
                    out.push("--hf".into());
                    continue;
                }
                Some("-np") => {
                    out.push("--parallel".into());
                    continue;
                }
                Some("-pg") => {
                    out.push("--pg".into());
                    continue;
                }
                Some("-ub") => {
                    out.push("--ubatch".into());
                    continue;
                }
                Some("-sys") => {
                    out.push("--system".into());
                    continue;
                }
                _ => {}
            }
        }
        out.push(a);
    }
    out
}

/// Parses arguments and runs the subcommand.
pub fn run() -> Result<ExitCode> {
    let cli = match Cli::try_parse_from(llama_cpp_spellings(std::env::args_os())) {
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
        Cmd::Pull(a) => crate::pull::run(&a),
        Cmd::Dump(a) => crate::dump::run(&a),
        Cmd::Serve(a) => crate::serve::run(&a),
        Cmd::Perplexity(a) => crate::perplexity::run(&a),
    }
}
