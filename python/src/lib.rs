//! `bitnet_graph`: the Python door to bitnet-graph.
//!
//! Every method translates its Python arguments into [`runtime`] structs, runs the runtime
//! with the GIL released, and translates the result back; the bindings own no inference
//! logic (sequences, sampling, stop rules and detokenization are the runtime's).
//!
//! ## Design
//! - A `Model` holds one `Arc<runtime::Model>`: the weights, the tokenizer and the thread pool
//!   are loaded once and shared by every call, from any Python thread.
//! - Each call that runs the model makes its own [`Batch`] (its own activations and KV cache;
//!   the weights are not copied). So calls from two threads run at the same time on the
//!   model's thread pool instead of queueing behind a lock, and a call that fails or is
//!   interrupted cannot leave state behind for the next one.
//! - The GIL is released around every runtime call. Between two steps the call takes the GIL
//!   back to check for signals: Ctrl-C cancels the call's sequences and raises
//!   `KeyboardInterrupt`; the model stays usable.
//! - Errors keep the runtime's message and map its kind: `ErrorKind::Load` to `OSError`, bad
//!   arguments (`Invalid`, `PromptTooLong`) to `ValueError`, anything else to `RuntimeError`.
#![deny(missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use pyo3::IntoPyObjectExt;
use runtime::hub::{HubErrorKind, HubOptions};
use runtime::{
    Batch, ChatMessage, Completion, ErrorKind, Event, LmHead, LogitsMode, ModelOptions, Request, Role, SamplingParams, SeqId,
};

/// The Python exception for a runtime error, with the runtime's message.
fn py_err(e: runtime::Error) -> PyErr {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::Load(_) => PyOSError::new_err(msg),
        ErrorKind::Invalid(_) | ErrorKind::PromptTooLong { .. } => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// A Python int argument that must not be negative, as a count.
fn count(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{name} must be 0 or more, got {v}")))
}

/// Python ints as token ids; ids outside `0..n_vocab` are a `ValueError`.
fn token_ids(ids: &[i64], n_vocab: usize) -> PyResult<Vec<u32>> {
    ids.iter()
        .map(|&id| match u32::try_from(id) {
            Ok(t) if (t as usize) < n_vocab => Ok(t),
            _ => Err(PyValueError::new_err(format!("token id {id} is outside the vocabulary of {n_vocab}"))),
        })
        .collect()
}

/// `stop=`: a string, a list of strings, or None.
fn stop_strings(stop: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match stop {
        None => Ok(Vec::new()),
        Some(s) if s.is_none() => Ok(Vec::new()),
        Some(s) => match s.cast::<PyString>() {
            Ok(one) => Ok(vec![one.to_str()?.to_string()]),
            Err(_) => s.extract::<Vec<String>>(),
        },
    }
}

/// The sampling keywords of `generate`, `stream` and `generate_batch`, as the runtime's
/// [`SamplingParams`] (validated: a bad value is a `ValueError` naming it).
#[allow(clippy::too_many_arguments)]
fn sampling(
    max_tokens: Option<i64>,
    temperature: f64,
    top_k: i64,
    top_p: f64,
    min_p: f64,
    repeat_penalty: f64,
    seed: Option<i128>,
    stop: Option<&Bound<'_, PyAny>>,
) -> PyResult<SamplingParams> {
    let seed = seed
        .map(|s| u64::try_from(s).map_err(|_| PyValueError::new_err(format!("seed must be in 0..=2**64-1, got {s}"))))
        .transpose()?;
    let p = SamplingParams {
        max_tokens: max_tokens.map(|n| count("max_tokens", n)).transpose()?,
        temperature: temperature as f32,
        top_k: count("top_k", top_k)?,
        top_p: top_p as f32,
        min_p: min_p as f32,
        repeat_penalty: repeat_penalty as f32,
        seed,
        stop: stop_strings(stop)?,
        ..SamplingParams::default()
    };
    p.validate().map_err(py_err)?;
    Ok(p)
}

/// A `serde_json` value as the Python object `json.loads` would give.
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    match v {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_bound_py_any(py),
            (None, Some(i)) => i.into_bound_py_any(py),
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py),
        },
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(a) => {
            let items = a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any())
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            Ok(d.into_any())
        }
    }
}

/// The model file of `hf=`: the Hugging Face cache's copy, fetched first when it is not there.
fn hub_path(spec: &str) -> PyResult<std::path::PathBuf> {
    let hub_err = |e: runtime::hub::HubError| match e.kind() {
        HubErrorKind::BadSpec { .. } | HubErrorKind::BadConfig { .. } => PyValueError::new_err(e.to_string()),
        _ => PyOSError::new_err(e.to_string()),
    };
    let opts = HubOptions::from_env().map_err(hub_err)?;
    runtime::hub::resolve(spec, &opts).map_err(hub_err)
}

/// Steps `batch` until it is idle, taking the GIL back between steps to check for signals:
/// an interrupt cancels every sequence and is raised. Returns the completions in the order
/// the requests were added and each sequence's logits rows (in the same order).
fn run_batch(py: Python<'_>, batch: &mut Batch, ids: &[SeqId]) -> PyResult<(Vec<Completion>, Vec<Vec<f32>>)> {
    let mut done = Vec::with_capacity(ids.len());
    let mut logits: Vec<Vec<f32>> = vec![Vec::new(); ids.len()];
    let index = |seq: SeqId| ids.iter().position(|&i| i == seq);
    while !batch.is_idle() {
        let events = py.detach(|| batch.step()).map_err(py_err)?;
        for e in events {
            match e {
                Event::Logits { seq, rows, .. } => {
                    if let Some(i) = index(seq) {
                        if logits[i].is_empty() {
                            logits[i] = rows;
                        } else {
                            logits[i].extend_from_slice(&rows);
                        }
                    }
                }
                Event::Done(c) => done.push(c),
                _ => {}
            }
        }
        if let Err(interrupt) = py.check_signals() {
            for &id in ids {
                batch.cancel(id);
            }
            return Err(interrupt);
        }
    }
    done.sort_by_key(|c| index(c.id));
    Ok((done, logits))
}

/// A BitNet model loaded from a GGUF file.
///
/// `Model(path, *, threads=None, backend="auto", ctx_size=None, lm_head="exact", parallel=1)`
/// loads `path` (or `hf="owner/name[:FILE]"` from the Hugging Face cache, downloading it
/// first). `threads=None` uses one thread per core; `ctx_size=None` the model's training
/// context; `parallel` is how many sequences `generate_batch` runs at once. Bad arguments
/// raise `ValueError`, unreadable or unsupported files `OSError`.
#[pyclass(name = "Model", module = "bitnet_graph", frozen)]
struct Model {
    model: Arc<runtime::Model>,
}

impl Model {
    /// The prompt's token ids: the chat template (with `system` first) when `chat` or
    /// `system` asks for it, else the plain text with BOS, as `exec` builds them.
    fn prompt_ids(&self, prompt: &str, chat: bool, system: Option<&str>) -> Vec<u32> {
        if chat || system.is_some() {
            let mut msgs: Vec<ChatMessage> = system.map(|s| ChatMessage::new(Role::System, s)).into_iter().collect();
            msgs.push(ChatMessage::new(Role::User, prompt));
            self.model.apply_chat_template(&msgs, None, true)
        } else {
            self.model.tokenize(prompt, true, false)
        }
    }

    /// A batch of this model with `reqs` added (each checked: a bad one is a `ValueError`).
    fn batch(&self, py: Python<'_>, reqs: Vec<Request>) -> PyResult<(Batch, Vec<SeqId>)> {
        let model = self.model.clone();
        py.detach(move || {
            let mut batch = Batch::new(model)?;
            let ids = reqs.into_iter().map(|r| batch.add(r)).collect::<runtime::Result<Vec<_>>>()?;
            Ok((batch, ids))
        })
        .map_err(py_err)
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path=None, *, hf=None, threads=None, backend="auto", ctx_size=None, lm_head="exact", parallel=1))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<std::path::PathBuf>,
        hf: Option<String>,
        threads: Option<i64>,
        backend: &str,
        ctx_size: Option<i64>,
        lm_head: &str,
        parallel: i64,
    ) -> PyResult<Model> {
        let options = ModelOptions {
            backend: backend.to_string(),
            threads: threads.map(|t| count("threads", t)).transpose()?.unwrap_or(0),
            lm_head: LmHead::parse(lm_head).map_err(py_err)?,
            n_ctx: ctx_size.map(|c| count("ctx_size", c)).transpose()?,
            n_parallel: count("parallel", parallel)?,
            ..ModelOptions::default()
        };
        options.validate().map_err(py_err)?;
        let model = py.detach(move || {
            let path = match (path, hf) {
                (Some(p), None) => p,
                (None, Some(spec)) => hub_path(&spec)?,
                _ => return Err(PyValueError::new_err("give a model path or hf=\"owner/name[:FILE]\", not both")),
            };
            runtime::Model::load(&path, &options).map_err(py_err)
        })?;
        Ok(Model { model: Arc::new(model) })
    }

    /// Token ids of `text`: BOS first when `add_bos` (and the vocabulary uses one);
    /// `special` parses special-token text such as `<|eot_id|>`.
    #[pyo3(signature = (text, add_bos=true, special=false))]
    fn tokenize(&self, py: Python<'_>, text: &str, add_bos: bool, special: bool) -> Vec<u32> {
        py.detach(|| self.model.tokenize(text, add_bos, special))
    }

    /// The text of token ids; ids outside the vocabulary raise `ValueError`.
    fn detokenize(&self, py: Python<'_>, ids: Vec<i64>) -> PyResult<String> {
        let ids = token_ids(&ids, self.model.n_vocab())?;
        py.detach(|| self.model.detokenize(&ids, false)).map_err(py_err)
    }

    /// Generates a completion of `prompt` and returns its text.
    ///
    /// `temperature <= 0` is greedy. `max_tokens=None` runs until an end-of-generation token
    /// or a full context. `seed=None` takes a seed from the clock. `stop` (a string or a list)
    /// ends the text before the first occurrence. `chat=True` (or a `system` prompt) applies
    /// the model's chat template.
    #[pyo3(signature = (prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, seed=None, stop=None, chat=false, system=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: Option<i64>,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
        chat: bool,
        system: Option<&str>,
    ) -> PyResult<String> {
        let params = sampling(max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, stop)?;
        let ids = py.detach(|| self.prompt_ids(prompt, chat, system));
        let (mut batch, seqs) = self.batch(py, vec![Request::new(ids, params)])?;
        let (mut done, _) = run_batch(py, &mut batch, &seqs)?;
        Ok(done.pop().map(|c| c.text).unwrap_or_default())
    }

    /// Like `generate`, but returns an iterator over the text as it is generated: the pieces
    /// join to the text `generate` returns for the same arguments and seed.
    #[pyo3(signature = (prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, seed=None, stop=None, chat=false, system=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: Option<i64>,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
        chat: bool,
        system: Option<&str>,
    ) -> PyResult<Stream> {
        let params = sampling(max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, stop)?;
        let ids = py.detach(|| self.prompt_ids(prompt, chat, system));
        let (batch, seqs) = self.batch(py, vec![Request::new(ids, params)])?;
        Ok(Stream { state: Mutex::new(StreamState { batch: Some(batch), seq: seqs[0], pieces: VecDeque::new() }) })
    }

    /// Generates a completion of every prompt, running them together (continuous batching:
    /// `parallel` at once, the rest joining as slots free) and returns the texts in order.
    /// Each text is the one `generate` returns for that prompt alone with the same arguments.
    #[pyo3(signature = (prompts, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, seed=None, stop=None, chat=false, system=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate_batch(
        &self,
        py: Python<'_>,
        prompts: Vec<String>,
        max_tokens: Option<i64>,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
        chat: bool,
        system: Option<&str>,
    ) -> PyResult<Vec<String>> {
        let params = sampling(max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed, stop)?;
        let reqs = py.detach(|| {
            prompts.iter().map(|p| Request::new(self.prompt_ids(p, chat, system), params.clone())).collect::<Vec<_>>()
        });
        let (mut batch, seqs) = self.batch(py, reqs)?;
        let (done, _) = run_batch(py, &mut batch, &seqs)?;
        Ok(done.into_iter().map(|c| c.text).collect())
    }

    /// The logits of every position of `ids` (no BOS is added), as a float32 array of shape
    /// `[len(ids), n_vocab]`; row `i` scores the token after `ids[:i + 1]`.
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyAny>> {
        let n_vocab = self.model.n_vocab();
        let ids = token_ids(&ids, n_vocab)?;
        let n = ids.len();
        let req = Request { prompt: ids, params: SamplingParams::greedy(0), logits: LogitsMode::Prompt };
        let (mut batch, seqs) = self.batch(py, vec![req])?;
        let (_, mut logits) = run_batch(py, &mut batch, &seqs)?;
        let rows = logits.pop().unwrap_or_default();
        if rows.len() != n * n_vocab {
            return Err(PyRuntimeError::new_err(format!(
                "bitnet_graph: logits: {} values for {n} positions of {n_vocab}",
                rows.len()
            )));
        }
        // The Vec becomes the array's buffer (no copy); the reshape is a view.
        Ok(PyArray1::from_vec(py, rows).reshape([n, n_vocab])?.into_any())
    }

    /// What the model is and how it runs: architecture, sizes, tensor types, the backends,
    /// the kernels in use, threads, the chat format (the runtime's `ModelInfo`).
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info =
            serde_json::to_value(self.model.info()).map_err(|e| PyRuntimeError::new_err(format!("bitnet_graph: info: {e}")))?;
        json_to_py(py, &info)
    }

    fn __repr__(&self) -> String {
        let hp = self.model.hparams();
        format!(
            "<bitnet_graph.Model {} ({}, {} layers, ctx {})>",
            self.model.info().path,
            hp.arch,
            hp.n_layer,
            self.model.n_ctx()
        )
    }
}

/// What a stream holds between two `next()` calls.
struct StreamState {
    /// `None` once the sequence has ended (or failed, or was interrupted).
    batch: Option<Batch>,
    seq: SeqId,
    /// Text produced but not yet returned.
    pieces: VecDeque<String>,
}

/// The iterator `Model.stream` returns: each `next()` runs the model until a piece of text
/// is ready.
#[pyclass(module = "bitnet_graph", frozen)]
struct Stream {
    /// Locked only while the GIL is released, so a second thread iterating the same stream
    /// waits for the first without holding the GIL.
    state: Mutex<StreamState>,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // A panic inside a step is raised to Python; the state is still consistent enough to
        // end the stream.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one turn of `Stream::__next__` found.
enum Turn {
    Piece(String),
    Stepped,
    Ended,
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let turn = py.detach(|| -> runtime::Result<Turn> {
                let mut st = self.lock();
                if let Some(p) = st.pieces.pop_front() {
                    return Ok(Turn::Piece(p));
                }
                let Some(batch) = st.batch.as_mut() else { return Ok(Turn::Ended) };
                let events = match batch.step() {
                    Ok(events) => events,
                    Err(e) => {
                        st.batch = None;
                        return Err(e);
                    }
                };
                let seq = st.seq;
                for e in events {
                    match e {
                        Event::Token { seq: s, text, .. } | Event::Text { seq: s, text } if s == seq && !text.is_empty() => {
                            st.pieces.push_back(text)
                        }
                        Event::Done(c) if c.id == seq => st.batch = None,
                        _ => {}
                    }
                }
                Ok(Turn::Stepped)
            });
            match turn.map_err(py_err)? {
                Turn::Piece(p) => return Ok(Some(p)),
                Turn::Ended => return Ok(None),
                Turn::Stepped => {}
            }
            if let Err(interrupt) = py.check_signals() {
                self.close(py);
                return Err(interrupt);
            }
        }
    }

    /// Ends the stream now (cancelling the sequence); `next()` then stops.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let mut st = self.lock();
            let seq = st.seq;
            if let Some(mut batch) = st.batch.take() {
                batch.cancel(seq);
            }
            st.pieces.clear();
        })
    }
}

/// bitnet-graph: BitNet b1.58 ternary language models on CPUs, bit-identical to bitnet.cpp.
#[pymodule]
fn bitnet_graph(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Stream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The runtime's sampling defaults, so that a test holds the keyword defaults above to
    // them (floats as the shortest decimal of the f32, as Python spells the keyword).
    let d = SamplingParams::default();
    let float = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::NAN);
    let defaults = PyDict::new(m.py());
    defaults.set_item("max_tokens", d.max_tokens)?;
    defaults.set_item("temperature", float(d.temperature))?;
    defaults.set_item("top_k", d.top_k)?;
    defaults.set_item("top_p", float(d.top_p))?;
    defaults.set_item("min_p", float(d.min_p))?;
    defaults.set_item("repeat_penalty", float(d.repeat_penalty))?;
    defaults.set_item("seed", d.seed)?;
    m.add("_SAMPLING_DEFAULTS", defaults)?;
    Ok(())
}
