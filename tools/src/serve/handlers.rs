//! The routes: each handler checks the key, parses and validates the request
//! ([`super::api`]), tokenizes, checks the prompt against the context, queues a job and turns
//! the scheduler's updates into an OpenAI response, whole or as server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, Sse as SseResponse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use runtime::{Completion, Event, FinishReason, Model, Request};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{self, ApiError, Endpoint, Parsed, Prompt};
use super::scheduler::{Job, Refused, Update};
use super::{App, Ready, MAX_BODY};

type Shared = State<Arc<App>>;

/// The chat page (issue 18): one self-contained file, no external resources.
const PAGE: &str = include_str!("page.html");

/// Every route, with the body limit.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/completions", post(completion))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::invalid(None, "no such endpoint (see /v1/models, /v1/chat/completions, /v1/completions)")
        .status(StatusCode::NOT_FOUND)
        .code("not_found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::invalid(None, "method not allowed on this endpoint").status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Checks `Authorization: Bearer KEY` when a key is set (compared in constant time).
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &app.api_key else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let ok =
        given.is_some_and(|g| g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
    if ok {
        Ok(())
    } else {
        let message = if given.is_none() {
            "this server needs an API key: send `Authorization: Bearer KEY`"
        } else {
            "incorrect API key provided"
        };
        Err(ApiError::invalid(None, message).status(StatusCode::UNAUTHORIZED).code("invalid_api_key"))
    }
}

/// The loaded model, or 503 while it loads.
fn ready(app: &App) -> Result<&Ready, ApiError> {
    app.ready.get().ok_or_else(|| ApiError::unavailable("loading", "the model is still loading; retry shortly (see /health)"))
}

/// The body, or 413 past the limit.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body exceeds the limit of {MAX_BODY} bytes")
        } else {
            format!("the request body could not be read: {r}")
        };
        ApiError::invalid(None, message).status(status).code(if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        })
    })
}

async fn page(State(app): Shared) -> Response {
    if !app.webui {
        return not_found().await.into_response();
    }
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

async fn health(State(app): Shared) -> Response {
    if app.metrics.engine_failed() {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"status": "error"}))).into_response();
    }
    match app.ready.get() {
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
        Some(_) => Json(json!({"status": "ok"})).into_response(),
    }
}

async fn metrics(State(app): Shared, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return e.into_response();
    }
    let text = app.metrics.render(app.queue.parallel(), app.queue.depth());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn models(State(app): Shared, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let r = ready(&app)?;
    let info = r.model.info();
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": r.name,
            "object": "model",
            "created": now_s(),
            "owned_by": "bitnet-graph",
            "meta": {
                "arch": info.arch, "n_ctx": info.n_ctx, "n_ctx_train": info.n_ctx_train, "n_vocab": info.n_vocab,
                "n_params": info.n_params, "n_parallel": app.queue.parallel(), "chat_format": info.chat_format,
                "backend": info.backends.first(), "threads": info.threads
            }
        }]
    })))
}

/// A JSON object body with the key checked and the model loaded.
fn json_body<'a>(app: &'a App, headers: &HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<(&'a Ready, Value), ApiError> {
    authorize(app, headers)?;
    let b = body(b)?;
    let r = ready(app)?;
    Ok((r, api::parse_json(&b)?))
}

async fn tokenize(State(app): Shared, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let (r, v) = json_body(&app, &headers, b)?;
    let o = api::object(&v)?;
    let content = o
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(Some("content"), "`content` must be a string"))?
        .to_string();
    let flag = |k: &str, default: bool| match o.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(Some(k), format!("`{k}` must be a boolean"))),
    };
    // llama.cpp's server: no BOS unless `add_special`; special-token text parsed.
    let (add_special, parse_special, with_pieces) =
        (flag("add_special", false)?, flag("parse_special", true)?, flag("with_pieces", false)?);
    let model = r.model.clone();
    let out = blocking(move || {
        let ids = model.tokenize(&content, add_special, parse_special);
        if with_pieces {
            let pieces: Vec<Value> = ids
                .iter()
                .map(|&id| {
                    let p = model.tokenizer().token_to_piece(id, true);
                    match String::from_utf8(p) {
                        Ok(s) => json!({"id": id, "piece": s}),
                        Err(e) => json!({"id": id, "piece": e.into_bytes()}),
                    }
                })
                .collect();
            json!({"tokens": pieces})
        } else {
            json!({"tokens": ids})
        }
    })
    .await?;
    Ok(Json(out))
}

async fn detokenize(State(app): Shared, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let (r, v) = json_body(&app, &headers, b)?;
    let o = api::object(&v)?;
    let bad = || ApiError::invalid(Some("tokens"), "`tokens` must be a list of token ids");
    let ids: Vec<u32> = o
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(bad)?
        .iter()
        .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    let model = r.model.clone();
    let text = blocking(move || model.detokenize(&ids, false)).await?.map_err(|e| api::from_runtime(&e, "tokens"))?;
    Ok(Json(json!({"content": text})))
}

/// Runs tokenizer work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))
}

async fn chat(State(app): Shared, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Response {
    generate(app, Endpoint::Chat, headers, b).await
}

async fn completion(State(app): Shared, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Response {
    generate(app, Endpoint::Completion, headers, b).await
}

/// Both completion endpoints: validate, tokenize, queue, answer.
async fn generate(app: Arc<App>, endpoint: Endpoint, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Response {
    app.metrics.received();
    match start(&app, endpoint, headers, b).await {
        Ok((answer, rx)) if answer.stream => stream(answer, rx).into_response(),
        Ok((answer, rx)) => whole(answer, rx).await,
        Err(e) => {
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                app.metrics.rejected();
            } else {
                app.metrics.invalid();
            }
            e.into_response()
        }
    }
}

/// How to answer one request.
struct Answer {
    endpoint: Endpoint,
    id: String,
    created: u64,
    name: String,
    model: Arc<Model>,
    stream: bool,
    include_usage: bool,
    logprobs: bool,
    return_tokens: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Checks and queues a request.
async fn start(
    app: &Arc<App>,
    endpoint: Endpoint,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<(Answer, UnboundedReceiver<Update>), ApiError> {
    let (r, v) = json_body(app, &headers, b)?;
    let p: Parsed = api::parse(endpoint, &v, &r.name)?;
    let model = r.model.clone();
    let format = app.chat_format;
    let (messages, prompt) = (p.messages.clone(), p.prompt.clone());
    let tokens = {
        let model = model.clone();
        blocking(move || match prompt {
            Prompt::None => model.apply_chat_template(&messages, format, true),
            Prompt::Text(t) => model.tokenize(&t, true, false),
            Prompt::Tokens(ids) => ids,
        })
        .await?
    };
    let prompt_param = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
    model.check_prompt(&tokens).map_err(|e| api::from_runtime(&e, prompt_param))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job { req: Request::new(tokens, p.params.clone()), tx, queued_at: Instant::now() };
    app.queue.submit(job).map_err(|e| match e {
        Refused::Full { waiting } => ApiError::unavailable(
            "queue_full",
            format!(
                "the server is busy: {} sequences running and {waiting} requests waiting (--max-queue {}); retry later",
                app.queue.parallel(),
                app.queue.max_queue()
            ),
        ),
        Refused::ShuttingDown => ApiError::unavailable("shutting_down", "the server is shutting down"),
    })?;
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let answer = Answer {
        endpoint,
        id: format!("{prefix}-{:x}{n:06x}", now_s()),
        created: now_s(),
        name: r.name.clone(),
        model,
        stream: p.stream,
        include_usage: p.include_usage,
        logprobs: p.logprobs,
        return_tokens: p.return_tokens,
    };
    Ok((answer, rx))
}

impl Answer {
    fn piece(&self) -> impl Fn(u32) -> Vec<u8> + '_ {
        move |id| self.model.tokenizer().token_to_piece(id, true)
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// A response or chunk around `choices`.
    fn doc(&self, chunk: bool, choices: Value) -> Value {
        let mut d =
            json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.name, "choices": choices});
        if chunk && self.include_usage {
            d["usage"] = Value::Null;
        }
        d
    }

    /// The whole response of a finished sequence.
    fn complete(&self, c: &Completion) -> Value {
        let piece = self.piece();
        let mut choice = match self.endpoint {
            Endpoint::Chat => json!({"index": 0, "message": {"role": "assistant", "content": c.text}}),
            Endpoint::Completion => json!({"index": 0, "text": c.text}),
        };
        choice["logprobs"] = if !self.logprobs {
            Value::Null
        } else if self.endpoint == Endpoint::Chat {
            json!({"content": c.tokens.iter().zip(&c.logprobs).map(|(&t, lp)| api::chat_logprob(&piece, t, lp)).collect::<Vec<_>>()})
        } else {
            let toks: Vec<_> = c.tokens.iter().copied().zip(c.logprobs.iter()).collect();
            api::completion_logprobs(&piece, &toks, 0)
        };
        choice["finish_reason"] = json!(c.finish.openai());
        if self.return_tokens {
            choice["tokens"] = json!(c.tokens);
        }
        let mut d = self.doc(false, json!([choice]));
        d["usage"] = api::usage(c.prompt.len(), c.tokens.len());
        d
    }
}

/// The error that a failed update becomes.
fn failure(message: String, shutdown: bool) -> ApiError {
    if shutdown {
        ApiError::unavailable("shutting_down", message)
    } else {
        ApiError::internal(message)
    }
}

fn engine_gone() -> ApiError {
    ApiError::internal("the engine stopped before the request finished")
}

/// A non-streaming answer: waits for the sequence's end.
async fn whole(a: Answer, mut rx: UnboundedReceiver<Update>) -> Response {
    loop {
        match rx.recv().await {
            Some(Update::Event(Event::Done(c))) => {
                if c.finish == FinishReason::Cancelled {
                    return ApiError::unavailable("cancelled", "the request was cancelled").into_response();
                }
                return Json(a.complete(&c)).into_response();
            }
            Some(Update::Event(_)) => {}
            Some(Update::Failed { message, shutdown }) => return failure(message, shutdown).into_response(),
            None => return engine_gone().into_response(),
        }
    }
}

/// The state of one SSE stream.
struct Streaming {
    a: Answer,
    rx: UnboundedReceiver<Update>,
    out: VecDeque<Sse>,
    text_len: usize,
    ended: bool,
}

impl Streaming {
    fn data(&mut self, v: &Value) {
        self.out.push_back(Sse::default().data(v.to_string()));
    }

    fn chunk(&mut self, text: &str, token: Option<(u32, Option<&runtime::sampler::TokenLogprob>)>, finish: Option<&str>) {
        let a = &self.a;
        let piece = a.piece();
        let mut choice = match a.endpoint {
            Endpoint::Chat if finish.is_some() => json!({"index": 0, "delta": {}}),
            Endpoint::Chat => json!({"index": 0, "delta": {"content": text}}),
            Endpoint::Completion => json!({"index": 0, "text": text}),
        };
        choice["logprobs"] = match token {
            Some((t, Some(lp))) if a.logprobs => match a.endpoint {
                Endpoint::Chat => json!({"content": [api::chat_logprob(&piece, t, lp)]}),
                Endpoint::Completion => api::completion_logprobs(&piece, &[(t, lp)], self.text_len),
            },
            _ => Value::Null,
        };
        choice["finish_reason"] = json!(finish);
        if a.return_tokens {
            choice["tokens"] = json!(token.map(|t| vec![t.0]).unwrap_or_default());
        }
        let d = a.doc(true, json!([choice]));
        drop(piece);
        self.text_len += text.len();
        self.data(&d);
    }

    fn error(&mut self, e: ApiError) {
        let body = e.body();
        self.data(&body);
        self.ended = true;
    }

    /// Turns the next update into events; false at the end.
    async fn next(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match self.rx.recv().await {
            Some(Update::Event(Event::Token { token, text, logprob, .. })) => {
                if !text.is_empty() || self.a.logprobs || self.a.return_tokens {
                    self.chunk(&text, Some((token, logprob.as_ref())), None);
                }
            }
            Some(Update::Event(Event::Text { text, .. })) => self.chunk(&text, None, None),
            Some(Update::Event(Event::Done(c))) => {
                if c.finish == FinishReason::Cancelled {
                    self.error(ApiError::unavailable("cancelled", "the request was cancelled"));
                    return true;
                }
                self.chunk("", None, Some(c.finish.openai()));
                if self.a.include_usage {
                    let mut d = self.a.doc(true, json!([]));
                    d["usage"] = api::usage(c.prompt.len(), c.tokens.len());
                    self.data(&d);
                }
                self.out.push_back(Sse::default().data("[DONE]"));
                self.ended = true;
            }
            Some(Update::Event(Event::Logits { .. })) => {}
            Some(Update::Failed { message, shutdown }) => self.error(failure(message, shutdown)),
            None => self.error(engine_gone()),
        }
        true
    }
}

/// A streaming answer. Dropping it (the client went away) drops the receiver, and the
/// scheduler cancels the sequence before its next step.
fn stream(a: Answer, rx: UnboundedReceiver<Update>) -> impl IntoResponse {
    let mut s = Streaming { a, rx, out: VecDeque::new(), text_len: 0, ended: false };
    if s.a.endpoint == Endpoint::Chat {
        let mut first = s.a.doc(
            true,
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
        );
        if s.a.return_tokens {
            first["choices"][0]["tokens"] = json!([]);
        }
        s.data(&first);
    }
    let events = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(e) = s.out.pop_front() {
                return Some((Ok::<_, Infallible>(e), s));
            }
            if !s.next().await {
                return None;
            }
        }
    });
    SseResponse::new(events)
}
