//! Continuous batching: many sequences advanced together, one forward pass per step.
//!
//! ## Design
//! A [`Batch`] owns an executor whose KV cache has one slot of `n_ctx` positions per
//! sequence it can run at once (`n_parallel`): the cache is divided, not pooled, so a
//! sequence can always reach its full context and freeing it is zeroing what it wrote. Its
//! memory is reserved lazily: a slot's pages become resident only as its positions fill.
//!
//! Each [`Batch::step`] runs **one** forward pass over every active sequence: the next
//! token of every generating sequence and the next prompt chunk of prompt-processing ones,
//! as many chunks as fit the step's token budget (one chunk of `ubatch` tokens plus a token
//! per other sequence always fits). A new request joins at the next step; a finished or
//! cancelled sequence leaves at once and frees its slot.
//!
//! **Batch invariance.** Every sequence gets the bits it would get alone: a prompt is cut
//! into chunks exactly as a solo run cuts it (`ubatch` tokens, the last chunk the rest), and
//! every kernel computes each row from its own sequence's data, taking bitnet.cpp's
//! one-column forms from the sequence's own row count (`graph::rows_per_seq`,
//! ../shared/docs/batching.md). So whatever shares a step, the logits, and hence the tokens
//! of a seeded sampler, are those of the sequence run alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use gguf::tokenizer::Detokenizer;
use graph::{ExecConfig, Executor, Step, StepHook};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::options::SamplingParams;
use crate::sampler::{logprobs, Sampler, SamplerConfig, TokenLogprob};

/// A sequence's id within its batch.
pub type SeqId = u64;

/// Which logits a request wants returned ([`Event::Logits`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsMode {
    /// None (only tokens).
    #[default]
    None,
    /// Every prompt position's.
    Prompt,
    /// Every prompt position's and every generated token's (the row it was sampled from).
    All,
    /// The prompt positions from this one on (and the last prompt position's, which is
    /// sampled from, whatever this is): what perplexity scores. The head runs for these
    /// rows only.
    PromptFrom(usize),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Request {
    /// Prompt token ids (BOS included where wanted).
    pub prompt: Vec<u32>,
    /// Sampling and stop rules.
    pub params: SamplingParams,
    /// Logits to return.
    pub logits: LogitsMode,
}

impl Request {
    /// A request for `prompt` with `params`, returning no logits.
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Request {
        Request { prompt, params, logits: LogitsMode::None }
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token was sampled.
    Eog,
    /// A stop string appeared (it is not part of the text).
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// Cancelled by the caller.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason`: `stop` or `length` (`cancelled` has no OpenAI value).
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Eog | FinishReason::StopString => "stop",
            FinishReason::MaxTokens | FinishReason::ContextFull => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// How long a sequence took.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// From joining the batch to its first sampled token (the prompt), ms.
    pub prompt_ms: f64,
    /// From the first sampled token to the end, ms.
    pub gen_ms: f64,
    /// Generated tokens that were evaluated (fed back), the tokens `gen_ms` covers.
    pub n_eval: usize,
}

/// A finished sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Its id.
    pub id: SeqId,
    /// The prompt.
    pub prompt: Vec<u32>,
    /// The generated tokens (an end-of-generation token that stopped it is not included).
    pub tokens: Vec<u32>,
    /// Their text (cut before a stop string).
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Log-probabilities per generated token, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Timings.
    pub timings: Timings,
}

/// What a step produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A generated token and the text it completes (may be empty: a character split across
    /// tokens, or text that might start a stop string, is held back until it is decided).
    Token {
        /// The sequence.
        seq: SeqId,
        /// The token.
        token: u32,
        /// Newly released text.
        text: String,
        /// Its log-probability, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// Text released without a new token: what was held back when the sequence ends (a
    /// partial stop string that never completed, an incomplete character). Comes right
    /// before its [`Event::Done`].
    Text {
        /// The sequence.
        seq: SeqId,
        /// The text.
        text: String,
    },
    /// Logits rows ([`LogitsMode`]): `rows.len() / n_vocab` consecutive positions from
    /// `first_pos`.
    Logits {
        /// The sequence.
        seq: SeqId,
        /// Position of the first row.
        first_pos: usize,
        /// Row-major `[n, n_vocab]`.
        rows: Vec<f32>,
    },
    /// The sequence ended; its slot is free.
    Done(Completion),
}

/// One sequence in the batch.
struct Seq {
    id: SeqId,
    slot: usize,
    req: Request,
    /// Prompt and generated tokens (the penalties' history).
    history: Vec<u32>,
    /// Positions whose keys and values are in the cache.
    n_past: usize,
    /// The sampled token that the next step evaluates.
    pending: Option<u32>,
    sampler: Sampler,
    detok: Detokenizer,
    /// Generated text so far, and how much of it was released.
    text: String,
    released: usize,
    generated: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    t_join: Instant,
    t_first: Option<Instant>,
}

/// Many sequences run together. See the module docs.
pub struct Batch {
    model: Arc<Model>,
    ex: Executor,
    slots: Vec<Option<Seq>>,
    queue: VecDeque<(SeqId, Request)>,
    next_id: SeqId,
    ubatch: usize,
    budget: usize,
    seed_base: u64,
}

impl Batch {
    /// A batch of up to `model.options().n_parallel` sequences.
    pub fn new(model: Arc<Model>) -> Result<Batch> {
        let o = model.options();
        let (n_parallel, ubatch) = (o.n_parallel, o.ubatch.min(model.n_ctx()));
        let budget = ubatch + n_parallel - 1;
        let config = ExecConfig { n_ctx: model.n_ctx(), n_slots: n_parallel, max_tokens: budget, max_outputs: budget };
        let ex = Executor::new(model.program().clone(), config)?;
        let seed_base =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Ok(Batch {
            model,
            ex,
            slots: (0..n_parallel).map(|_| None).collect(),
            queue: VecDeque::new(),
            next_id: 0,
            ubatch,
            budget,
            seed_base,
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The executor (for profiling).
    pub fn executor_mut(&mut self) -> &mut Executor {
        &mut self.ex
    }

    /// Queues a request; it joins at the next step with a free slot. The prompt and the
    /// parameters are checked now.
    pub fn add(&mut self, req: Request) -> Result<SeqId> {
        req.params.validate()?;
        self.model.check_prompt(&req.prompt)?;
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((id, req));
        Ok(id)
    }

    /// Sequences running.
    pub fn n_active(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Requests waiting for a slot.
    pub fn n_queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.n_active() == 0 && self.queue.is_empty()
    }

    /// Cancels a sequence (running or queued): it ends now and its slot is free. Returns its
    /// completion so far, or `None` if no such sequence is in the batch.
    pub fn cancel(&mut self, id: SeqId) -> Option<Completion> {
        if let Some(i) = self.queue.iter().position(|(q, _)| *q == id) {
            let (id, req) = self.queue.remove(i)?;
            return Some(Completion {
                id,
                prompt: req.prompt,
                tokens: Vec::new(),
                text: String::new(),
                finish: FinishReason::Cancelled,
                logprobs: Vec::new(),
                timings: Timings::default(),
            });
        }
        let slot = self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.id == id))?;
        Some(self.finish(slot, FinishReason::Cancelled).0)
    }

    /// Moves queued requests into free slots.
    fn admit(&mut self) {
        while let Some(slot) = self.slots.iter().position(Option::is_none) {
            let Some((id, req)) = self.queue.pop_front() else { break };
            let seed = self.seed_base ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let sampler = Sampler::new(SamplerConfig::from_params(&req.params, seed));
            self.slots[slot] = Some(Seq {
                id,
                slot,
                history: req.prompt.clone(),
                req,
                n_past: 0,
                pending: None,
                sampler,
                detok: Detokenizer::new(),
                text: String::new(),
                released: 0,
                generated: Vec::new(),
                logprobs: Vec::new(),
                t_join: Instant::now(),
                t_first: None,
            });
        }
    }

    /// Runs one forward pass over every active sequence (see the module docs) and returns
    /// what it produced. Does nothing when idle.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        self.step_hooked(None)
    }

    /// [`Batch::step`] with a hook around every node of the forward pass (the
    /// cross-check).
    pub fn step_hooked(&mut self, hook: Option<&mut dyn StepHook>) -> Result<Vec<Event>> {
        self.admit();
        // What each active sequence contributes: (slot, rows, whether its last row is
        // sampled, whether its rows' logits are returned).
        // `returned`: from which row of the part its logits are returned (`None`: none).
        struct Part {
            slot: usize,
            first_pos: usize,
            n: usize,
            sample: bool,
            returned: Option<usize>,
        }
        let mut parts: Vec<Part> = Vec::new();
        let (mut tokens, mut positions, mut seqs, mut outputs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut push = |s: &Seq, toks: &[u32], sample: bool, returned: Option<usize>, parts: &mut Vec<Part>| {
            let row0 = tokens.len();
            for (k, &t) in toks.iter().enumerate() {
                tokens.push(t);
                positions.push((s.n_past + k) as u32);
                seqs.push(s.slot as u32);
            }
            // The sampled last row is always an output.
            let returned = returned.map(|r| if sample { r.min(toks.len() - 1) } else { r });
            match returned {
                Some(r) => outputs.extend((row0 + r..tokens.len()).map(|r| r as u32)),
                None if sample => outputs.push((tokens.len() - 1) as u32),
                None => {}
            }
            parts.push(Part { slot: s.slot, first_pos: s.n_past, n: toks.len(), sample, returned });
        };
        // Generating sequences first (one token each: low latency), in slot order.
        for s in self.slots.iter().flatten() {
            if let Some(t) = s.pending {
                push(s, &[t], true, (s.req.logits == LogitsMode::All).then_some(0), &mut parts);
            }
        }
        // Then prompt chunks, cut as a solo run cuts them, while they fit the budget.
        let mut used = parts.iter().map(|p| p.n).sum::<usize>();
        for s in self.slots.iter().flatten() {
            let n_prompt = s.req.prompt.len();
            if s.pending.is_some() || s.n_past >= n_prompt {
                continue;
            }
            let chunk = (n_prompt - s.n_past).min(self.ubatch);
            if used + chunk > self.budget {
                continue;
            }
            used += chunk;
            let last = s.n_past + chunk == n_prompt;
            let toks = &s.req.prompt[s.n_past..s.n_past + chunk];
            let returned = match s.req.logits {
                LogitsMode::None => None,
                LogitsMode::Prompt | LogitsMode::All => Some(0),
                LogitsMode::PromptFrom(p) => Some(p.saturating_sub(s.n_past).min(chunk)),
            };
            push(s, toks, last, returned, &mut parts);
        }
        let mut events = Vec::new();
        if tokens.is_empty() {
            return Ok(events);
        }
        let step = Step { tokens: &tokens, positions: &positions, seqs: &seqs, outputs: &outputs };
        let n_vocab = self.model.n_vocab();
        // Copy out of the executor's buffer only what leaves it: the returned rows (once, into
        // their events) and each sampled row; then sample, in part order.
        let mut out: Vec<(Option<Event>, Option<Vec<f32>>)> = Vec::with_capacity(parts.len());
        {
            let ex = &mut self.ex;
            let logits: &[f32] = self.model.install(move || ex.step_hooked(&step, hook))?;
            let mut row = 0usize;
            for p in &parts {
                let n_out = p.returned.map_or(usize::from(p.sample), |r| p.n - r);
                let rows = &logits[row * n_vocab..(row + n_out) * n_vocab];
                row += n_out;
                let s = self.slots[p.slot].as_mut().ok_or_else(|| Error::engine("a sequence left during its step"))?;
                s.n_past += p.n;
                let ev = p.returned.filter(|_| n_out > 0).map(|r| Event::Logits {
                    seq: s.id,
                    first_pos: p.first_pos + r,
                    rows: rows.to_vec(),
                });
                out.push((ev, p.sample.then(|| rows[rows.len() - n_vocab..].to_vec())));
            }
        }
        for (p, (ev, last)) in parts.iter().zip(out) {
            events.extend(ev);
            if let Some(last) = last {
                if let Some(s) = self.slots[p.slot].as_mut() {
                    s.pending = None;
                }
                self.after_logits(p.slot, &last, &mut events);
            }
        }
        Ok(events)
    }

    /// Samples a sequence's next token from its logits row and applies the stop rules.
    fn after_logits(&mut self, slot: usize, logits: &[f32], events: &mut Vec<Event>) {
        let tok = self.model.tokenizer();
        let n_ctx = self.model.n_ctx();
        let Some(s) = self.slots[slot].as_mut() else { return };
        s.t_first.get_or_insert_with(Instant::now);
        let max = s.req.params.max_tokens;
        if max == Some(0) {
            self.finish_into(slot, FinishReason::MaxTokens, events);
            return;
        }
        let id = s.sampler.sample(logits, &s.history);
        if tok.is_eog(id) && !s.req.params.ignore_eos {
            self.finish_into(slot, FinishReason::Eog, events);
            return;
        }
        let lp = s.req.params.top_logprobs.map(|n| logprobs(logits, id, n));
        if let Some(lp) = &lp {
            s.logprobs.push(lp.clone());
        }
        s.generated.push(id);
        s.history.push(id);
        s.text.push_str(&s.detok.push(&tok.token_to_piece(id, false)));
        let stop_at = find_stop(&s.text, &s.req.params.stop, s.released);
        if let Some(at) = stop_at {
            s.text.truncate(at);
        }
        let hold = if stop_at.is_some() { 0 } else { held_back(&s.text, &s.req.params.stop, s.released) };
        let text = s.text[s.released..s.text.len() - hold].to_string();
        s.released = s.text.len() - hold;
        events.push(Event::Token { seq: s.id, token: id, text, logprob: lp });
        let reason = if stop_at.is_some() {
            Some(FinishReason::StopString)
        } else if max.is_some_and(|m| s.generated.len() >= m) {
            Some(FinishReason::MaxTokens)
        } else if s.n_past >= n_ctx {
            Some(FinishReason::ContextFull)
        } else {
            s.pending = Some(id);
            None
        };
        if let Some(r) = reason {
            self.finish_into(slot, r, events);
        }
    }

    /// [`Batch::finish`], pushing the held-back text and the completion as events.
    fn finish_into(&mut self, slot: usize, reason: FinishReason, events: &mut Vec<Event>) {
        let (done, rest) = self.finish(slot, reason);
        if !rest.is_empty() {
            events.push(Event::Text { seq: done.id, text: rest });
        }
        events.push(Event::Done(done));
    }

    /// Ends the sequence in `slot` and frees the slot. Returns its completion and the text
    /// still held back (released now, unless a stop string cut it).
    fn finish(&mut self, slot: usize, reason: FinishReason) -> (Completion, String) {
        let mut s = self.slots[slot].take().expect("finishing an active slot");
        self.ex.clear_slot(slot);
        let mut rest = String::new();
        if reason != FinishReason::StopString {
            s.text.push_str(&s.detok.finish());
            rest = s.text[s.released..].to_string();
        }
        let now = Instant::now();
        let t_first = s.t_first.unwrap_or(now);
        let timings = Timings {
            prompt_ms: t_first.duration_since(s.t_join).as_secs_f64() * 1e3,
            gen_ms: now.duration_since(t_first).as_secs_f64() * 1e3,
            n_eval: s.generated.len().saturating_sub(1).min(s.n_past.saturating_sub(s.req.prompt.len())),
        };
        let done = Completion {
            id: s.id,
            prompt: s.req.prompt,
            tokens: s.generated,
            text: s.text,
            finish: reason,
            logprobs: s.logprobs,
            timings,
        };
        (done, rest)
    }

    /// Runs until every added request is done; returns the completions in the order the
    /// requests were added, and the logits events per sequence when asked for.
    pub fn run_to_end(&mut self) -> Result<Vec<Completion>> {
        let mut done = Vec::new();
        while !self.is_idle() {
            for e in self.step()? {
                if let Event::Done(c) = e {
                    done.push(c);
                }
            }
        }
        done.sort_by_key(|c| c.id);
        Ok(done)
    }
}

/// The byte offset of the earliest stop string in `text` that ends after `from` (a match
/// may start in already released text only if it also ends in the new text).
fn find_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    stops
        .iter()
        .filter_map(|s| {
            let start = from.saturating_sub(s.len() - 1);
            let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text[start..].find(s.as_str()).map(|i| start + i)
        })
        .min()
}

/// How many bytes at the end of `text` (after `released`) could be the start of a stop
/// string, so must not be released yet.
fn held_back(text: &str, stops: &[String], released: usize) -> usize {
    let tail = &text[released..];
    let mut hold = 0;
    for s in stops {
        for k in (1..s.len().min(tail.len() + 1)).rev() {
            if tail.is_char_boundary(tail.len() - k) && s.as_bytes().starts_with(&tail.as_bytes()[tail.len() - k..]) {
                hold = hold.max(k);
                break;
            }
        }
    }
    hold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop("abc END", &stops, 0), Some(4));
        assert_eq!(find_stop("abcEN", &stops, 0), None);
        assert_eq!(held_back("abcEN", &stops, 0), 2);
        assert_eq!(held_back("abc\n", &stops, 0), 1);
        assert_eq!(held_back("abc", &stops, 0), 0);
        // A match that straddles released text and new text is found.
        assert_eq!(find_stop("abcEND", &stops, 5), Some(3));
        assert_eq!(held_back("é", &["éa".to_string()], 0), 2);
    }
}
