//! Perplexity and KL-divergence, as bitnet.cpp's `llama-perplexity` computes them, on the
//! runtime's [`Batch`] (the one evaluation path).
//!
//! ## Method (llama-perplexity's `perplexity` and `kl_divergence`)
//! The whole text is tokenized once, with BOS where the vocabulary adds one, and cut into
//! `n_chunk = tokens / n_ctx` chunks (at most `--chunks`). Each chunk is evaluated from an
//! empty cache in forward passes of `min(n_batch, n_ctx, 512)` tokens (llama.cpp's ubatch),
//! with its first token replaced by BOS where the vocabulary adds one. Only the second half
//! is scored: the logits of positions `first = n_ctx/2 .. n_ctx−1` predict the tokens after
//! them (`n_ctx − first − 1` per chunk). Per scored row, in f32 unless noted:
//!
//! ```text
//! max     = the largest logit                         # running std::max from logits[0]
//! sum_exp = Σ_i f64(expf(logit_i − max))              # f32 expf terms summed in f64, in order
//! nll     = −(f64(logit_tok − max) − ln(sum_exp))     # f64
//! ```
//!
//! `nll` and `nll²` are summed in f64; the running estimate after each chunk is
//! `exp(Σnll / count)` and the final `PPL = exp(mean)` with `± PPL·sqrt((mean(nll²) −
//! mean²)/(count − 1))`.
//!
//! **Base file** (`--kl-divergence-base`, llama-perplexity's format): `"_logits_"`, i32
//! `n_ctx`, i32 `n_vocab`, i32 `n_chunk`, the `n_chunk·n_ctx` i32 tokens of the text (BOS
//! first, no per-chunk replacement), then per chunk and scored row `nv = 2·⌈n_vocab/2⌉ + 4`
//! u16: the f32 `scale` and f32 `min_log_prob` (four u16), then one u16 per vocabulary entry
//! (`round((logit − min)/scale)`, see [`compress_row`]). While writing it, llama-perplexity
//! takes each row's `nll` in f32 (`max + f32(ln(sum_exp)) − logit_tok`), which this module
//! does too, so the printed estimates match that run's.
//!
//! **KL-divergence** (`--kl-divergence`): the base's tokens are evaluated again and each
//! scored row is compared with the base's log-probabilities ([`KlStats`]).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use gguf::quantize::nearest_int;

use crate::batch::{Batch, Event, LogitsMode, Request};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::options::{ModelOptions, SamplingParams};

/// llama.cpp's default micro-batch: a chunk's forward passes are at most this long.
pub const LLAMA_UBATCH: usize = 512;

/// What to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerplexityParams {
    /// Tokens per chunk (llama-perplexity's `-c`): even, at least 4.
    pub n_ctx: usize,
    /// Tokens per forward pass before the 512-token micro-batch limit (`-b`).
    pub n_batch: usize,
    /// Chunks to evaluate at most (`--chunks`; `None`: all).
    pub n_chunks: Option<usize>,
}

impl PerplexityParams {
    /// Checks the numbers that do not depend on a model.
    pub fn validate(&self) -> Result<()> {
        if self.n_ctx < 4 || !self.n_ctx.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "ctx_size {} must be even and at least 4 (the second half is scored)",
                self.n_ctx
            )));
        }
        if self.n_batch == 0 {
            return Err(Error::invalid("batch_size must be at least 1"));
        }
        if self.n_chunks == Some(0) {
            return Err(Error::invalid("chunks must be at least 1"));
        }
        Ok(())
    }

    /// `base` with what a perplexity run needs: one sequence of `n_ctx` positions, forward
    /// passes of `min(n_batch, n_ctx, 512)` tokens (llama-perplexity's micro-batches, which
    /// the logits' bits depend on).
    pub fn model_options(&self, base: &ModelOptions) -> ModelOptions {
        ModelOptions {
            n_ctx: Some(self.n_ctx),
            n_parallel: 1,
            ubatch: self.n_batch.min(self.n_ctx).min(LLAMA_UBATCH),
            ..base.clone()
        }
    }

    /// The first scored position of a chunk.
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Scored tokens per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - self.first() - 1
    }
}

/// The text's tokens as llama-perplexity takes them: BOS first where the vocabulary adds
/// one, no special-token parsing.
pub fn tokenize_text(model: &Model, text: &str) -> Vec<u32> {
    model.tokenize(text, true, false)
}

/// Progress after each chunk.
#[derive(Clone, Copy, Debug)]
pub struct ChunkProgress {
    /// Chunks done (1-based index of the one just finished).
    pub done: usize,
    /// Chunks in the run.
    pub total: usize,
    /// The running perplexity estimate (`[done]` in llama-perplexity's output).
    pub running_ppl: f64,
    /// Seconds since the first chunk started.
    pub elapsed_s: f64,
}

/// A finished perplexity run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PerplexityResult {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Tokens of the whole text (BOS included).
    pub n_tokens: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// Tokens evaluated (`n_chunks·n_ctx`).
    pub n_evaluated: usize,
    /// Tokens scored.
    pub n_scored: usize,
    /// The running estimate after each chunk.
    pub per_chunk: Vec<f64>,
    /// The final estimate.
    pub ppl: f64,
    /// Its uncertainty (`None` when the variance estimate is not positive, where
    /// llama-perplexity prints an error instead).
    pub plusminus: Option<f64>,
    /// Seconds spent evaluating and scoring.
    pub seconds: f64,
    /// Evaluated tokens per second.
    pub tokens_per_second: f64,
}

/// Checks that `tokens` can be cut into chunks of `params.n_ctx` for `model`, returning the
/// number of chunks.
fn plan_chunks(model: &Model, n_tokens: usize, params: &PerplexityParams) -> Result<usize> {
    check_ctx(model, params)?;
    if n_tokens < 2 * params.n_ctx {
        return Err(Error::invalid(format!(
            "the text tokenizes to {n_tokens} tokens; perplexity with a context of {} needs at least {}",
            params.n_ctx,
            2 * params.n_ctx
        )));
    }
    let n_max = n_tokens / params.n_ctx;
    Ok(params.n_chunks.map_or(n_max, |c| c.min(n_max)))
}

/// Checks `params` and that a chunk fits the model's context.
fn check_ctx(model: &Model, params: &PerplexityParams) -> Result<()> {
    params.validate()?;
    if params.n_ctx > model.n_ctx() {
        return Err(Error::invalid(format!(
            "ctx_size {} exceeds the model's context of {} (load it with at least that many positions)",
            params.n_ctx,
            model.n_ctx()
        )));
    }
    let train = model.hparams().n_ctx_train;
    if params.n_ctx > train {
        return Err(Error::invalid(format!(
            "ctx_size {} exceeds the {train} positions the model was trained with",
            params.n_ctx
        )));
    }
    Ok(())
}

/// Evaluates one chunk from an empty cache and returns the logits of its scored rows
/// (positions `first .. n_ctx`, `n_ctx − first` rows of `n_vocab`).
fn chunk_logits(batch: &mut Batch, chunk: &[u32], first: usize, bos: Option<u32>) -> Result<Vec<f32>> {
    let mut prompt = chunk.to_vec();
    if let Some(b) = bos {
        prompt[0] = b;
    }
    let mut req = Request::new(prompt, SamplingParams::greedy(0));
    req.logits = LogitsMode::PromptFrom(first);
    let id = batch.add(req)?;
    let n_vocab = batch.model().n_vocab();
    let mut rows = Vec::new();
    let mut done = false;
    while !done {
        for e in batch.step()? {
            match e {
                Event::Logits { seq, first_pos, rows: r } if seq == id => {
                    if first_pos != first + rows.len() / n_vocab {
                        return Err(Error::engine(format!("logits from position {first_pos} arrived out of order")));
                    }
                    if rows.is_empty() {
                        rows = r;
                    } else {
                        rows.extend_from_slice(&r);
                    }
                }
                Event::Done(c) if c.id == id => done = true,
                _ => {}
            }
        }
    }
    if rows.len() != (chunk.len() - first) * n_vocab {
        return Err(Error::engine(format!("{} logit rows for a chunk, expected {}", rows.len() / n_vocab, chunk.len() - first)));
    }
    Ok(rows)
}

/// `(max, f64 Σ expf(logit − max))` of a row, llama-perplexity's way.
fn max_and_sum_exp(row: &[f32]) -> (f32, f64) {
    let mut max = row[0];
    for &v in &row[1..] {
        // std::max(max, v): keeps `max` unless it is less than `v`.
        if max < v {
            max = v;
        }
    }
    (max, sum_exp(row, max))
}

/// `Σ_i f64(expf(logit_i − max))`, in order.
fn sum_exp(row: &[f32], max: f32) -> f64 {
    row.iter().map(|&v| f64::from((v - max).exp())).sum()
}

/// One row's negative log-likelihood of `tok` (llama-perplexity's `log_softmax`, negated).
pub fn row_nll(row: &[f32], tok: usize) -> f64 {
    let (max, sum) = max_and_sum_exp(row);
    -(f64::from(row[tok] - max) - sum.ln())
}

/// u16 values per compressed row of a base file: two f32 then one u16 per vocabulary
/// entry, padded to an even count.
pub fn base_row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Compresses a logit row into a base-file record `out` ([`base_row_len`] u16) as
/// llama-perplexity does, and returns its f32 negative log-likelihood of `tok`:
///
/// ```text
/// max, min = the row's extremes;  min = max(min, max − 16)
/// lse      = f32(ln(Σ f64(expf(logit − max))))
/// scale    = (max − min)/65535;   min_log_prob = (min − max) − lse
/// q_i      = logit_i > min ? nearest_int((1/scale)·(logit_i − min)) : 0   (all 0 if scale is 0)
/// nll      = (max + lse) − logit_tok
/// ```
pub fn compress_row(row: &[f32], tok: usize, out: &mut [u16]) -> f32 {
    let (mut max, mut min) = (row[0], row[0]);
    for &v in &row[1..] {
        if max < v {
            max = v;
        }
        if v < min {
            min = v;
        }
    }
    if min < max - 16.0 {
        min = max - 16.0;
    }
    let lse = sum_exp(row, max).ln() as f32;
    let min_log_prob = min - max - lse;
    let scale = (max - min) / 65535.0;
    let (head, q) = out.split_at_mut(4);
    for (pair, v) in head.chunks_exact_mut(2).zip([scale, min_log_prob]) {
        let b = v.to_le_bytes();
        pair[0] = u16::from_le_bytes([b[0], b[1]]);
        pair[1] = u16::from_le_bytes([b[2], b[3]]);
    }
    q.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &v) in q.iter_mut().zip(row) {
            if v > min {
                *o = nearest_int(inv * (v - min)) as u16;
            }
        }
    }
    max + lse - row[tok]
}

/// Where a perplexity run's base-file records go (`--kl-divergence-base`).
pub struct BaseWriter<'a> {
    out: &'a mut dyn Write,
}

impl<'a> BaseWriter<'a> {
    /// Writes into `out` (the header is written when the run knows its chunks).
    pub fn new(out: &'a mut dyn Write) -> BaseWriter<'a> {
        BaseWriter { out }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::engine(format!("writing the KL-divergence base: {e}")))
    }
}

fn i32_of(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::invalid(format!("{what} {n} does not fit the base file's i32")))
}

/// Runs llama-perplexity's perplexity over `tokens` (from [`tokenize_text`]) with `model`,
/// loaded with [`PerplexityParams::model_options`]. With `base`, also writes the
/// KL-divergence base file (and scores in f32 as llama-perplexity does then). `progress` is
/// called after each chunk.
pub fn perplexity(
    model: &Arc<Model>,
    tokens: &[u32],
    params: &PerplexityParams,
    mut base: Option<BaseWriter<'_>>,
    progress: &mut dyn FnMut(&ChunkProgress),
) -> Result<PerplexityResult> {
    let n_chunk = plan_chunks(model, tokens.len(), params)?;
    let (n_ctx, first, n_vocab) = (params.n_ctx, params.first(), model.n_vocab());
    let tok = model.tokenizer();
    let bos = tok.add_bos().then(|| tok.bos());
    let nv = base_row_len(n_vocab);
    if let Some(w) = base.as_mut() {
        let mut head = b"_logits_".to_vec();
        for (n, what) in [(n_ctx, "n_ctx"), (n_vocab, "n_vocab"), (n_chunk, "n_chunk")] {
            head.extend(i32_of(n, what)?.to_le_bytes());
        }
        for &t in &tokens[..n_chunk * n_ctx] {
            head.extend(t.to_le_bytes());
        }
        w.put(&head)?;
    }
    let mut batch = Batch::new(model.clone())?;
    let t0 = Instant::now();
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut per_chunk = Vec::with_capacity(n_chunk);
    let mut record = vec![0u16; if base.is_some() { params.scored_per_chunk() * nv } else { 0 }];
    for i in 0..n_chunk {
        let start = i * n_ctx;
        let logits = chunk_logits(&mut batch, &tokens[start..start + n_ctx], first, bos)?;
        let targets = &tokens[start + first + 1..start + n_ctx];
        let rows = logits.par_chunks(n_vocab);
        let v: Vec<f64> = if base.is_some() {
            model.install(|| {
                rows.zip(record.par_chunks_mut(nv))
                    .zip(targets.par_iter())
                    .map(|((row, rec), &t)| f64::from(compress_row(row, t as usize, rec)))
                    .collect()
            })
        } else {
            model.install(|| rows.zip(targets.par_iter()).map(|(row, &t)| row_nll(row, t as usize)).collect())
        };
        for x in &v {
            nll += x;
            nll2 += x * x;
        }
        count += v.len();
        if let Some(w) = base.as_mut() {
            let bytes: Vec<u8> = record.iter().flat_map(|q| q.to_le_bytes()).collect();
            w.put(&bytes)?;
        }
        let running = (nll / count as f64).exp();
        per_chunk.push(running);
        progress(&ChunkProgress { done: i + 1, total: n_chunk, running_ppl: running, elapsed_s: t0.elapsed().as_secs_f64() });
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let plusminus = (var > 0.0).then(|| (var / (count - 1) as f64).sqrt() * ppl);
    Ok(PerplexityResult {
        n_ctx,
        n_tokens: tokens.len(),
        n_chunks: n_chunk,
        n_evaluated: n_chunk * n_ctx,
        n_scored: count,
        per_chunk,
        ppl,
        plusminus,
        seconds,
        tokens_per_second: (n_chunk * n_ctx) as f64 / seconds.max(1e-9),
    })
}

/// A KL-divergence base file being read: its header, then one chunk's records at a time.
pub struct BaseReader<R: Read> {
    input: R,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Vocabulary size of the model that wrote it.
    pub n_vocab: usize,
    /// Chunks it holds.
    pub n_chunk: usize,
    /// The tokens of those chunks (`n_chunk·n_ctx`).
    pub tokens: Vec<u32>,
}

impl<R: Read> BaseReader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<BaseReader<R>> {
        let bad = |what: String| Error::invalid(format!("KL-divergence base: {what}"));
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|e| bad(format!("cannot read the header: {e}")))?;
        if &magic != b"_logits_" {
            return Err(bad("not a llama-perplexity base file (no `_logits_` magic)".into()));
        }
        let mut ints = [0u8; 12];
        input.read_exact(&mut ints).map_err(|e| bad(format!("truncated header: {e}")))?;
        let int = |k: usize| i32::from_le_bytes([ints[4 * k], ints[4 * k + 1], ints[4 * k + 2], ints[4 * k + 3]]);
        let (n_ctx, n_vocab, n_chunk) = (int(0), int(1), int(2));
        if n_ctx < 4 || n_ctx % 2 != 0 || n_ctx > 1 << 20 {
            return Err(bad(format!("n_ctx {n_ctx} is not an even size in 4..=1048576")));
        }
        if !(1..=1 << 24).contains(&n_vocab) {
            return Err(bad(format!("n_vocab {n_vocab} is not plausible")));
        }
        if n_chunk < 1 || i64::from(n_chunk) * i64::from(n_ctx) > 1 << 30 {
            return Err(bad(format!("n_chunk {n_chunk} is not plausible")));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let mut raw = vec![0u8; 4 * n_ctx * n_chunk];
        input.read_exact(&mut raw).map_err(|e| bad(format!("truncated token list: {e}")))?;
        let tokens = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(BaseReader { input, n_ctx, n_vocab, n_chunk, tokens })
    }

    /// The whole file's size in bytes: the header, the tokens and every chunk's records.
    pub fn expected_len(&self) -> u64 {
        let rows = (self.n_ctx - 1 - self.n_ctx / 2) as u64 * base_row_len(self.n_vocab) as u64;
        20 + 4 * self.tokens.len() as u64 + 2 * rows * self.n_chunk as u64
    }

    /// The next chunk's records (`(n_ctx − 1 − n_ctx/2)·nv` u16) into `out`.
    fn read_chunk(&mut self, chunk: usize, out: &mut [u16]) -> Result<()> {
        let mut raw = vec![0u8; 2 * out.len()];
        self.input.read_exact(&mut raw).map_err(|e| {
            Error::invalid(format!("KL-divergence base: truncated at chunk {} of {}: {e}", chunk + 1, self.n_chunk))
        })?;
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
            *o = u16::from_le_bytes([c[0], c[1]]);
        }
        Ok(())
    }
}

/// llama-perplexity's KL-divergence sums (its `kl_divergence_result`) and the per-token
/// values its percentiles come from.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KlStats {
    /// Σ nll of the current model (f32 values summed in f64).
    pub sum_nll: f64,
    /// Σ nll².
    pub sum_nll2: f64,
    /// Σ nll of the base.
    pub sum_nll_base: f64,
    /// Σ nll_base².
    pub sum_nll_base2: f64,
    /// Σ nll·nll_base.
    pub sum_nll_nll_base: f64,
    /// Σ KLD.
    pub sum_kld: f64,
    /// Σ KLD².
    pub sum_kld2: f64,
    /// Σ Δp.
    pub sum_p_diff: f64,
    /// Σ Δp².
    pub sum_p_diff2: f64,
    /// Σ Δp⁴.
    pub sum_p_diff4: f64,
    /// max |Δp|.
    pub max_p_diff: f32,
    /// Rows whose top token is the base's.
    pub n_same_top: usize,
    /// Rows scored.
    pub count: usize,
    /// Per row: its KLD (f32).
    #[serde(skip)]
    pub kld_values: Vec<f32>,
    /// Per row: its Δp = p − p_base of the right token (f32).
    #[serde(skip)]
    pub p_diff_values: Vec<f32>,
}

/// One row's contribution (llama-perplexity's `log_softmax` against a base record).
struct KlRow {
    nll: f32,
    nll_base: f32,
    kld: f64,
    same_top: bool,
    p_diff: f32,
}

fn kl_row(row: &[f32], base: &[u16], tok: usize) -> KlRow {
    let mut max = row[0];
    let mut imax = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v > max {
            max = v;
            imax = i;
        }
    }
    let lse = sum_exp(row, max).ln() as f32;
    let f = |k: usize| {
        f32::from_le_bytes({
            let (a, b) = (base[2 * k].to_le_bytes(), base[2 * k + 1].to_le_bytes());
            [a[0], a[1], b[0], b[1]]
        })
    };
    let (scale, min_log_prob) = (f(0), f(1));
    let q = &base[4..];
    let nll = max + lse - row[tok];
    // A separate multiply and add (no fma), as bitnet.cpp's build computes it.
    let log_base = |i: usize| scale * f32::from(q[i]) + min_log_prob;
    let nll_base = -log_base(tok);
    let max_l = max + lse;
    let (mut kld, mut imax_base, mut best) = (0.0f64, 0usize, 0.0f32);
    for (i, &v) in row.iter().enumerate() {
        let lb = log_base(i);
        if i == 0 || lb > best {
            best = lb;
            imax_base = i;
        }
        if lb > -16.0 {
            let p_base = lb.exp();
            kld += f64::from(p_base * (lb - v + max_l));
        }
    }
    let p_diff = (-nll).exp() - (-nll_base).exp();
    KlRow { nll, nll_base, kld, same_top: imax == imax_base, p_diff }
}

impl KlStats {
    fn add(&mut self, r: &KlRow) {
        let (nll, nb) = (r.nll, r.nll_base);
        self.sum_nll += f64::from(nll);
        self.sum_nll2 += f64::from(nll * nll);
        self.sum_nll_base += f64::from(nb);
        self.sum_nll_base2 += f64::from(nb * nb);
        self.sum_nll_nll_base += f64::from(nll * nb);
        self.sum_kld += r.kld;
        self.sum_kld2 += r.kld * r.kld;
        self.sum_p_diff += f64::from(r.p_diff);
        let d2 = f64::from(r.p_diff * r.p_diff);
        self.sum_p_diff2 += d2;
        self.sum_p_diff4 += d2 * d2;
        self.max_p_diff = self.max_p_diff.max(r.p_diff.abs());
        self.n_same_top += usize::from(r.same_top);
        self.count += 1;
        self.kld_values.push(r.kld as f32);
        self.p_diff_values.push(r.p_diff);
    }

    /// llama-perplexity's `mean_and_uncertainty`.
    fn mean_unc(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
        if count < 1 {
            return (0.0, 0.0);
        }
        let f = sum / count as f64;
        let df = sum2 / count as f64 - f * f;
        (f, if df > 0.0 && count > 10 { (df / (count - 1) as f64).sqrt() } else { 0.0 })
    }

    fn covariance(&self) -> f64 {
        let n = self.count as f64;
        if self.count < 10 {
            return 0.0;
        }
        (self.sum_nll_nll_base / n - (self.sum_nll / n) * (self.sum_nll_base / n)) / (n - 1.0)
    }

    /// Mean KLD and its uncertainty.
    pub fn kld(&self) -> (f64, f64) {
        Self::mean_unc(self.sum_kld, self.sum_kld2, self.count)
    }

    /// The share of rows whose top token is the base's, and its uncertainty.
    pub fn same_top(&self) -> (f64, f64) {
        let p = self.n_same_top as f64 / self.count as f64;
        (p, (p * (1.0 - p) / (self.count - 1) as f64).sqrt())
    }

    /// The line llama-perplexity prints after chunk `i` (1-based), without the newline.
    pub fn chunk_line(&self, i: usize) -> String {
        let lp = Self::mean_unc(self.sum_nll, self.sum_nll2, self.count);
        let (ppl, ppl_unc) = (lp.0.exp(), lp.0.exp() * lp.1);
        let lb = Self::mean_unc(self.sum_nll_base, self.sum_nll_base2, self.count);
        let cov = self.covariance();
        let ratio = (lp.0 - lb.0, (lp.1 * lp.1 + lb.1 * lb.1 - 2.0 * cov).sqrt());
        let k = self.kld();
        let mse = Self::mean_unc(self.sum_p_diff2, self.sum_p_diff4, self.count);
        let rms = (mse.0.sqrt(), 0.5 / mse.0.sqrt() * mse.1);
        let top = self.same_top();
        format!(
            "{i:4}    {ppl:9.4} ± {ppl_unc:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
            ratio.0,
            ratio.1,
            k.0,
            k.1,
            100.0 * rms.0,
            100.0 * rms.1,
            100.0 * top.0,
            100.0 * top.1
        )
    }

    /// llama-perplexity's closing statistics (empty when fewer than 100 rows were scored,
    /// where it prints none).
    pub fn report(&self) -> String {
        use std::fmt::Write as _;
        if self.count < 100 {
            return String::new();
        }
        let mut kv = self.kld_values.clone();
        let mut pv = self.p_diff_values.clone();
        kv.sort_by(f32::total_cmp);
        pv.sort_by(f32::total_cmp);
        let mut o = String::new();
        let lp = Self::mean_unc(self.sum_nll, self.sum_nll2, self.count);
        let (ppl, ppl_unc) = (lp.0.exp(), lp.0.exp() * lp.1);
        let lb = Self::mean_unc(self.sum_nll_base, self.sum_nll_base2, self.count);
        let (pb, pb_unc) = (lb.0.exp(), lb.0.exp() * lb.1);
        let cov = self.covariance();
        let _ = writeln!(o, "====== Perplexity statistics ======");
        let _ = writeln!(o, "Mean PPL(Q)                   : {ppl:10.6} ± {ppl_unc:10.6}");
        let _ = writeln!(o, "Mean PPL(base)                : {pb:10.6} ± {pb_unc:10.6}");
        let _ = writeln!(o, "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * cov / (lp.1 * lb.1));
        let ratio = (lp.0 - lb.0, (lp.1 * lp.1 + lb.1 * lb.1 - 2.0 * cov).sqrt());
        let _ = writeln!(o, "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}", ratio.0, ratio.1);
        let r = ratio.0.exp();
        let _ = writeln!(o, "Mean PPL(Q)/PPL(base)         : {r:10.6} ± {:10.6}", r * ratio.1);
        let ppl_cov = ppl * pb * cov;
        let diff_unc = (ppl_unc * ppl_unc + pb_unc * pb_unc - 2.0 * ppl_cov).sqrt();
        let _ = writeln!(o, "Mean PPL(Q)-PPL(base)         : {:10.6} ± {diff_unc:10.6}", ppl - pb);
        let _ = writeln!(o);
        let _ = writeln!(o, "====== KL divergence statistics ======");
        let k = self.kld();
        let _ = writeln!(o, "Mean    KLD: {:10.6} ± {:10.6}", k.0, k.1);
        let pct = |v: &[f32], f: f32| f64::from(percentile(v, f));
        let _ = writeln!(o, "Maximum KLD: {:10.6}", kv[kv.len() - 1]);
        let _ = writeln!(o, "99.9%   KLD: {:10.6}", pct(&kv, 0.999));
        // llama-perplexity prints its 99% line twice (and no 95% line).
        let _ = writeln!(o, "99.0%   KLD: {:10.6}", pct(&kv, 0.990));
        let _ = writeln!(o, "99.0%   KLD: {:10.6}", pct(&kv, 0.990));
        let _ = writeln!(o, "Median  KLD: {:10.6}", median(&kv));
        let _ = writeln!(o, "10.0%   KLD: {:10.6}", pct(&kv, 0.100));
        let _ = writeln!(o, " 5.0%   KLD: {:10.6}", pct(&kv, 0.050));
        let _ = writeln!(o, " 1.0%   KLD: {:10.6}", pct(&kv, 0.010));
        let _ = writeln!(o, "Minimum KLD: {:10.6}", kv[0]);
        let _ = writeln!(o);
        let _ = writeln!(o, "====== Token probability statistics ======");
        let pd = Self::mean_unc(self.sum_p_diff, self.sum_p_diff2, self.count);
        let _ = writeln!(o, "Mean    Δp: {:6.3} ± {:5.3} %", 100.0 * pd.0, 100.0 * pd.1);
        let _ = writeln!(o, "Maximum Δp: {:6.3}%", 100.0 * f64::from(pv[pv.len() - 1]));
        for (label, f) in [("99.9%  ", 0.999f32), ("99.0%  ", 0.990), ("95.0%  ", 0.950), ("90.0%  ", 0.900), ("75.0%  ", 0.750)]
        {
            let _ = writeln!(o, "{label} Δp: {:6.3}%", 100.0 * pct(&pv, f));
        }
        let _ = writeln!(o, "Median  Δp: {:6.3}%", 100.0 * median(&pv));
        for (label, f) in [("25.0%  ", 0.250f32), ("10.0%  ", 0.100), (" 5.0%  ", 0.050), (" 1.0%  ", 0.010), (" 0.1%  ", 0.001)]
        {
            let _ = writeln!(o, "{label} Δp: {:6.3}%", 100.0 * pct(&pv, f));
        }
        let _ = writeln!(o, "Minimum Δp: {:6.3}%", 100.0 * f64::from(pv[0]));
        let mse = Self::mean_unc(self.sum_p_diff2, self.sum_p_diff4, self.count);
        let rms = (mse.0.sqrt(), 0.5 / mse.0.sqrt() * mse.1);
        let _ = writeln!(o, "RMS Δp    : {:6.3} ± {:5.3} %", 100.0 * rms.0, 100.0 * rms.1);
        let top = self.same_top();
        let _ = writeln!(o, "Same top p: {:6.3} ± {:5.3} %", 100.0 * top.0, 100.0 * top.1);
        o
    }
}

/// llama-perplexity's `percentile` of sorted values: linear interpolation in f32.
fn percentile(v: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return v[0];
    }
    if fraction >= 1.0 {
        return v[v.len() - 1];
    }
    let p = fraction * (v.len() - 1) as f32;
    let ip = p as usize;
    let p = p - ip as f32;
    // clang contracts `(1 − p)·a + p·b` into fma(1 − p, a, p·b).
    (1.0 - p).mul_add(v[ip], p * v[(ip + 1).min(v.len() - 1)])
}

/// The median of sorted values (the mean of the middle two, in f32, for an even count).
fn median(v: &[f32]) -> f64 {
    let n = v.len();
    f64::from(if n.is_multiple_of(2) { 0.5 * (v[n / 2] + v[n / 2 - 1]) } else { v[n / 2] })
}

/// Scores `model` against a base file (llama-perplexity's `--kl-divergence`): its tokens are
/// evaluated chunk by chunk; `chunk_done(i, stats)` is called after each chunk (1-based).
/// `model` must be loaded with [`PerplexityParams::model_options`] for the base's `n_ctx`.
pub fn kl_divergence<R: Read>(
    model: &Arc<Model>,
    base: &mut BaseReader<R>,
    n_batch: usize,
    n_chunks: Option<usize>,
    chunk_done: &mut dyn FnMut(usize, &KlStats, f64),
) -> Result<KlStats> {
    let n_vocab = model.n_vocab();
    if base.n_vocab != n_vocab {
        return Err(Error::invalid(format!(
            "KL-divergence base: written for a vocabulary of {} tokens, this model has {n_vocab}",
            base.n_vocab
        )));
    }
    if let Some(&bad) = base.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(Error::invalid(format!("KL-divergence base: token {bad} is outside the vocabulary of {n_vocab}")));
    }
    let params = PerplexityParams { n_ctx: base.n_ctx, n_batch, n_chunks };
    check_ctx(model, &params)?;
    let n_chunk = n_chunks.map_or(base.n_chunk, |c| c.min(base.n_chunk));
    let (n_ctx, first, nv) = (base.n_ctx, params.first(), base_row_len(n_vocab));
    let tok = model.tokenizer();
    let bos = tok.add_bos().then(|| tok.bos());
    let mut batch = Batch::new(model.clone())?;
    let mut records = vec![0u16; params.scored_per_chunk() * nv];
    let mut stats = KlStats::default();
    let t0 = Instant::now();
    for i in 0..n_chunk {
        base.read_chunk(i, &mut records)?;
        let start = i * n_ctx;
        let logits = chunk_logits(&mut batch, &base.tokens[start..start + n_ctx], first, bos)?;
        let targets = &base.tokens[start + first + 1..start + n_ctx];
        let rows: Vec<KlRow> = model.install(|| {
            logits
                .par_chunks(n_vocab)
                .zip(records.par_chunks(nv))
                .zip(targets.par_iter())
                .map(|((row, rec), &t)| kl_row(row, rec, t as usize))
                .collect()
        });
        for r in &rows {
            stats.add(r);
        }
        chunk_done(i + 1, &stats, t0.elapsed().as_secs_f64());
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!([0.5f32, 1.5, 2.5, -0.5, 65534.6].map(nearest_int), [0, 2, 2, 0, 65535]);
    }

    #[test]
    fn compressed_row_decodes_to_log_probs() {
        let row: Vec<f32> = (0..101).map(|i| ((i * 37) % 23) as f32 * 0.7 - 5.0).collect();
        let mut rec = vec![0u16; base_row_len(row.len())];
        assert_eq!(rec.len(), 106);
        let nll = compress_row(&row, 3, &mut rec);
        assert!((f64::from(nll) - row_nll(&row, 3)).abs() < 1e-5);
        let r = kl_row(&row, &rec, 3);
        // The same logits against their own compression: KLD ≈ 0, same top token.
        assert!(r.kld.abs() < 1e-3, "{}", r.kld);
        assert!(r.same_top);
        assert!((r.nll - r.nll_base).abs() < 1e-3);
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.125), 1.5);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    }
}
