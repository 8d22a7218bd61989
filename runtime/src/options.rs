//! Every knob a user can set, in one place with one validation each: the CLI, the server and
//! the Python package all build these structs, so they cannot disagree on what is valid.

use crate::error::{Error, Result};

/// Which LM head to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LmHead {
    /// bitnet.cpp's numerics: the head as stored.
    #[default]
    Exact,
    /// Opt-in: an F16 head requantized to Q8_0 at load (half the bytes per token; logits
    /// differ slightly from bitnet.cpp's).
    Q8,
    /// Opt-in: an F16 head requantized to Q6_K at load, as bitnet.cpp's `--quant-embd` does
    /// offline (the embedding rows stay F16 here; logits differ slightly).
    Q6k,
}

impl LmHead {
    /// By name (`exact`, `q8`, `q6k`).
    pub fn parse(s: &str) -> Result<LmHead> {
        match s {
            "exact" => Ok(LmHead::Exact),
            "q8" => Ok(LmHead::Q8),
            "q6k" => Ok(LmHead::Q6k),
            other => Err(Error::invalid(format!("lm_head `{other}`: expected exact, q8 or q6k"))),
        }
    }

    /// Its name (`exact`, `q8`, `q6k`).
    pub fn name(self) -> &'static str {
        match self {
            LmHead::Exact => "exact",
            LmHead::Q8 => "q8",
            LmHead::Q6k => "q6k",
        }
    }

    /// The type an F16 head is requantized to (`None`: the head as stored).
    pub fn requantize_to(self) -> Option<graph::DType> {
        match self {
            LmHead::Exact => None,
            LmHead::Q8 => Some(graph::DType::Q8_0),
            LmHead::Q6k => Some(graph::DType::Q6K),
        }
    }
}

/// How a model is loaded and run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// `auto` or a registered backend name ([`crate::backends::REGISTRY`]).
    pub backend: String,
    /// Worker threads of the model's pool (0: one per core).
    pub threads: usize,
    /// The LM head.
    pub lm_head: LmHead,
    /// Positions per sequence (default: the model's training context).
    pub n_ctx: Option<usize>,
    /// Sequences a batch runs at once, each with its own KV cache of `n_ctx` positions.
    pub n_parallel: usize,
    /// Prompt tokens per forward pass and sequence (llama.cpp's `--ubatch`); 1 evaluates a
    /// prompt one token at a time.
    pub ubatch: usize,
    /// Check every weight before running (llama.cpp's `--check-tensors`).
    pub check_tensors: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            backend: "auto".into(),
            threads: 0,
            lm_head: LmHead::Exact,
            n_ctx: None,
            n_parallel: 1,
            ubatch: 512,
            check_tensors: false,
        }
    }
}

/// The largest context a sequence may have (positions), far above any supported model's.
pub const MAX_CTX: usize = 1 << 20;
/// The most sequences a batch may hold.
pub const MAX_PARALLEL: usize = 256;
/// The most threads a pool may have.
pub const MAX_THREADS: usize = 1024;

impl ModelOptions {
    /// Checks every field (the model-dependent limits are checked at load).
    pub fn validate(&self) -> Result<()> {
        if self.threads > MAX_THREADS {
            return Err(Error::invalid(format!("threads {} is not plausible (at most {MAX_THREADS})", self.threads)));
        }
        if let Some(c) = self.n_ctx {
            if c == 0 || c > MAX_CTX {
                return Err(Error::invalid(format!("ctx_size {c} is out of range 1..={MAX_CTX}")));
            }
        }
        if self.n_parallel == 0 || self.n_parallel > MAX_PARALLEL {
            return Err(Error::invalid(format!("parallel {} is out of range 1..={MAX_PARALLEL}", self.n_parallel)));
        }
        if self.ubatch == 0 || self.ubatch > MAX_CTX {
            return Err(Error::invalid(format!("ubatch {} is out of range 1..={MAX_CTX}", self.ubatch)));
        }
        let known = crate::backends::choices();
        if !known.contains(&self.backend.as_str()) {
            return Err(Error::invalid(format!("backend `{}`: unknown (known: {})", self.backend, known.join(", "))));
        }
        Ok(())
    }
}

/// How one sequence is sampled and when it stops.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Tokens to generate at most (`None`: until an end-of-generation token or a full
    /// context).
    pub max_tokens: Option<usize>,
    /// Temperature; ≤ 0 is greedy (argmax, lowest id on ties), as in llama.cpp.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Nucleus threshold (1: off).
    pub top_p: f32,
    /// Minimum probability relative to the most likely token (0: off).
    pub min_p: f32,
    /// Repetition penalty over the last `repeat_last_n` tokens (1: off).
    pub repeat_penalty: f32,
    /// Window of the penalties (prompt and generated tokens).
    pub repeat_last_n: usize,
    /// OpenAI's frequency penalty: each logit minus `count × this` (0: off).
    pub frequency_penalty: f32,
    /// OpenAI's presence penalty: each seen token's logit minus this (0: off).
    pub presence_penalty: f32,
    /// RNG seed (`None`: from the clock).
    pub seed: Option<u64>,
    /// Stop strings: generation ends before the first occurrence of any, which is not part
    /// of the text.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Log-probabilities of this many most likely tokens per generated token (`None`: off).
    pub top_logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: Some(128),
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            stop: Vec::new(),
            ignore_eos: false,
            top_logprobs: None,
        }
    }
}

/// The most stop strings a request may carry.
pub const MAX_STOP: usize = 16;
/// The most alternatives `top_logprobs` may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> SamplingParams {
        SamplingParams { max_tokens: Some(max_tokens), temperature: 0.0, ..SamplingParams::default() }
    }

    /// Checks every field; the error names the field and the value.
    pub fn validate(&self) -> Result<()> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(Error::invalid(format!("{name} must be a finite number, got {v}")))
            }
        };
        finite("temperature", self.temperature)?;
        finite("top_p", self.top_p)?;
        finite("min_p", self.min_p)?;
        finite("repeat_penalty", self.repeat_penalty)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(Error::invalid(format!("top_p must be in [0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::invalid(format!("min_p must be in [0, 1], got {}", self.min_p)));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(Error::invalid(format!("repeat_penalty must be positive, got {}", self.repeat_penalty)));
        }
        for (name, v) in [("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(Error::invalid(format!("{name} must be in [-2, 2], got {v}")));
            }
        }
        if self.stop.len() > MAX_STOP {
            return Err(Error::invalid(format!("at most {MAX_STOP} stop strings, got {}", self.stop.len())));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::invalid("stop strings must not be empty"));
        }
        if let Some(n) = self.top_logprobs {
            if n > MAX_TOP_LOGPROBS {
                return Err(Error::invalid(format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {n}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        ModelOptions::default().validate().unwrap();
        SamplingParams::default().validate().unwrap();
        let bad = |f: fn(&mut SamplingParams), what: &str| {
            let mut p = SamplingParams::default();
            f(&mut p);
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        bad(|p| p.temperature = f32::NAN, "temperature");
        bad(|p| p.temperature = f32::INFINITY, "temperature");
        bad(|p| p.top_p = 1.5, "top_p");
        bad(|p| p.min_p = -0.1, "min_p");
        bad(|p| p.repeat_penalty = 0.0, "repeat_penalty");
        bad(|p| p.frequency_penalty = 3.0, "frequency_penalty");
        bad(|p| p.stop = vec![String::new()], "stop");
        bad(|p| p.top_logprobs = Some(50), "top_logprobs");
        // Negative temperature is greedy, as in llama.cpp.
        SamplingParams { temperature: -1.0, ..SamplingParams::default() }.validate().unwrap();
        let e = ModelOptions { n_parallel: 0, ..ModelOptions::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("parallel 0"), "{e}");
        let e = ModelOptions { backend: "gpu".into(), ..ModelOptions::default() }.validate().unwrap_err().to_string();
        assert!(e.contains("backend `gpu`"), "{e}");
    }
}
