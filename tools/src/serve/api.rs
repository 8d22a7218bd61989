//! The OpenAI API's shapes: request fields read into the runtime's structs (one validation:
//! [`runtime::SamplingParams::validate`]), errors in OpenAI's `{"error": {…}}` shape, and the
//! response and chunk documents. Pure functions of JSON values, so the translation is tested
//! without a model or a socket.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runtime::sampler::TokenLogprob;
use runtime::{ChatMessage, Role, SamplingParams};
use serde_json::{json, Map, Value};

/// An error as OpenAI sends it: a status and `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable code for programs.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// The same error with a `code`.
    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// The same error with another status.
    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// A 503 `server_error` (loading, overloaded, shutting down).
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some(code),
        }
    }

    /// A 500 `server_error`: the engine failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("engine_error"),
        }
    }

    /// The error document.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A runtime error as an API error: a prompt over the context is 400
/// `context_length_exceeded` naming both numbers; a bad argument 400 naming its field; an
/// engine failure 500.
pub fn from_runtime(e: &runtime::Error, prompt_param: &str) -> ApiError {
    match e.kind() {
        runtime::ErrorKind::PromptTooLong { tokens, n_ctx } => ApiError::invalid(
            Some(prompt_param),
            format!("the prompt has {tokens} tokens but the context holds {n_ctx} (per sequence; the server's --ctx-size)"),
        )
        .code("context_length_exceeded"),
        runtime::ErrorKind::Invalid(m) => {
            let param = if m.contains("prompt") || m.contains("token id") { Some(prompt_param) } else { param_of(m) };
            ApiError::invalid(param, m.clone())
        }
        _ => ApiError::internal(e.to_string()),
    }
}

/// The request field a runtime validation message is about (its messages name the field
/// first, in the runtime's spelling, which is OpenAI's).
fn param_of(msg: &str) -> Option<&'static str> {
    const FIELDS: &[&str] = &[
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "frequency_penalty",
        "presence_penalty",
        "top_logprobs",
        "max_tokens",
        "seed",
        "stop",
    ];
    FIELDS.iter().filter_map(|f| msg.find(f).map(|at| (at, *f))).min().map(|(_, f)| f)
}

/// Which endpoint a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// What a request asks for, translated: the conversation or prompt, the runtime's sampling
/// parameters, and how to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Chat: the messages.
    pub messages: Vec<ChatMessage>,
    /// Completion: the prompt text or token ids.
    pub prompt: Prompt,
    /// Sampling and stop rules (validated).
    pub params: SamplingParams,
    /// Stream server-sent events.
    pub stream: bool,
    /// With `stream`: a last chunk with `usage`.
    pub include_usage: bool,
    /// Return log-probabilities (chat: `logprobs: true`; completion: `logprobs: N`).
    pub logprobs: bool,
    /// llama.cpp's `return_tokens`: each choice also carries the generated token ids.
    pub return_tokens: bool,
}

/// A completion prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// None (a chat request).
    None,
    /// Text, tokenized with BOS and without special-token parsing, as `exec -p` does.
    Text(String),
    /// Token ids, run as given.
    Tokens(Vec<u32>),
}

/// Reads a typed field of a JSON object, naming it when its type is wrong.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn wrong(k: &str, what: &str, v: &Value) -> ApiError {
        let got = match v {
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
            Value::Null => "null",
        };
        ApiError::invalid(Some(k), format!("`{k}` must be {what}, got {got}"))
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.get(k).map(|v| v.as_bool().ok_or_else(|| Self::wrong(k, "a boolean", v))).transpose()
    }

    fn f32(&self, k: &str) -> Result<Option<f32>, ApiError> {
        self.get(k).map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| Self::wrong(k, "a number", v))).transpose()
    }

    /// An integer (a float with no fraction, such as `5.0`, counts).
    fn i64(&self, k: &str) -> Result<Option<i64>, ApiError> {
        self.get(k)
            .map(|v| {
                v.as_i64()
                    .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15).map(|x| x as i64))
                    .ok_or_else(|| Self::wrong(k, "an integer", v))
            })
            .transpose()
    }

    /// A count ≥ 0.
    fn count(&self, k: &str) -> Result<Option<usize>, ApiError> {
        match self.i64(k)? {
            Some(n) if n < 0 => Err(ApiError::invalid(Some(k), format!("`{k}` must be ≥ 0, got {n}"))),
            n => Ok(n.map(|n| n as usize)),
        }
    }

    fn str(&self, k: &str) -> Result<Option<&str>, ApiError> {
        self.get(k).map(|v| v.as_str().ok_or_else(|| Self::wrong(k, "a string", v))).transpose()
    }
}

/// The object a request body must be.
pub fn object(v: &Value) -> Result<&Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| ApiError::invalid(None, "the request body must be a JSON object"))
}

/// Parses a JSON body, naming where it is malformed.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(None, format!("the request body is not valid JSON: {e}")))
}

/// Checks the `model` field against the served model's name (absent is accepted, as
/// llama.cpp's server does; a different name is OpenAI's 404 `model_not_found`).
pub fn check_model(o: &Map<String, Value>, served: &str) -> Result<(), ApiError> {
    match Fields(o).str("model")? {
        Some(m) if m != served => Err(ApiError::invalid(
            Some("model"),
            format!("the model `{m}` does not exist; this server serves `{served}` (see /v1/models)"),
        )
        .status(StatusCode::NOT_FOUND)
        .code("model_not_found")),
        _ => Ok(()),
    }
}

/// Translates a chat or completion request body into [`Parsed`]; every error names the
/// field.
pub fn parse(endpoint: Endpoint, v: &Value, served_model: &str) -> Result<Parsed, ApiError> {
    let o = object(v)?;
    check_model(o, served_model)?;
    let f = Fields(o);
    // Features that would change the answer and that we do not have: refused, not ignored.
    if let Some(n) = f.i64("n")? {
        if n != 1 {
            return Err(ApiError::invalid(Some("n"), format!("`n` must be 1 (one choice per request), got {n}")));
        }
    }
    if let Some(n) = f.i64("best_of")? {
        if n != 1 {
            return Err(ApiError::invalid(Some("best_of"), format!("`best_of` must be 1, got {n}")));
        }
    }
    for k in ["tools", "functions", "logit_bias"] {
        let non_empty = match f.get(k) {
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(m)) => !m.is_empty(),
            Some(_) => true,
            None => false,
        };
        if non_empty {
            return Err(ApiError::invalid(Some(k), format!("`{k}` is not supported by this server")));
        }
    }
    if let Some(rf) = f.get("response_format") {
        let t = rf.get("type").and_then(Value::as_str);
        if t != Some("text") {
            return Err(ApiError::invalid(Some("response_format"), "only `response_format` {\"type\": \"text\"} is supported"));
        }
    }
    if f.bool("echo")? == Some(true) {
        return Err(ApiError::invalid(Some("echo"), "`echo` is not supported by this server"));
    }
    if f.str("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(Some("suffix"), "`suffix` is not supported by this server"));
    }

    let (messages, prompt) = match endpoint {
        Endpoint::Chat => (messages(o)?, Prompt::None),
        Endpoint::Completion => (Vec::new(), prompt(o)?),
    };

    let mut p = SamplingParams { max_tokens: None, ..SamplingParams::default() };
    let max_key = if f.get("max_completion_tokens").is_some() { "max_completion_tokens" } else { "max_tokens" };
    match f.i64(max_key)? {
        // llama.cpp's "-1: no limit".
        None | Some(-1) => p.max_tokens = None,
        Some(n) if n < 0 => {
            return Err(ApiError::invalid(Some(max_key), format!("`{max_key}` must be ≥ 0 (or -1: no limit), got {n}")))
        }
        Some(n) => p.max_tokens = Some(n as usize),
    }
    if let Some(t) = f.f32("temperature")? {
        // OpenAI's range starts at 0; the runtime reads a negative temperature as greedy
        // (llama.cpp's CLI), which an API client would not expect to be accepted.
        if t < 0.0 {
            return Err(ApiError::invalid(Some("temperature"), format!("`temperature` must be ≥ 0, got {t}")));
        }
        p.temperature = t;
    }
    p.top_p = f.f32("top_p")?.unwrap_or(p.top_p);
    p.min_p = f.f32("min_p")?.unwrap_or(p.min_p);
    p.top_k = f.count("top_k")?.unwrap_or(p.top_k);
    p.repeat_penalty = f.f32("repeat_penalty")?.unwrap_or(p.repeat_penalty);
    p.repeat_last_n = f.count("repeat_last_n")?.unwrap_or(p.repeat_last_n);
    p.frequency_penalty = f.f32("frequency_penalty")?.unwrap_or(p.frequency_penalty);
    p.presence_penalty = f.f32("presence_penalty")?.unwrap_or(p.presence_penalty);
    if let Some(s) = f.get("seed") {
        // Any 64-bit integer is a fixed seed (negative ones by their bits).
        p.seed = Some(s.as_u64().or_else(|| s.as_i64().map(|x| x as u64)).ok_or_else(|| Fields::wrong("seed", "an integer", s))?);
    }
    p.ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    p.stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| Fields::wrong("stop", "a string or a list of strings", x)))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(Fields::wrong("stop", "a string or a list of strings", other)),
    };
    let logprobs = match endpoint {
        Endpoint::Chat => {
            let on = f.bool("logprobs")?.unwrap_or(false);
            let top = f.count("top_logprobs")?;
            if top.is_some() && !on {
                return Err(ApiError::invalid(Some("top_logprobs"), "`top_logprobs` needs `logprobs: true`"));
            }
            on.then(|| top.unwrap_or(0))
        }
        Endpoint::Completion => f.count("logprobs")?,
    };
    p.top_logprobs = logprobs;
    p.validate().map_err(|e| {
        let mut err = from_runtime(&e, "prompt");
        if endpoint == Endpoint::Completion && err.param.as_deref() == Some("top_logprobs") {
            err.param = Some("logprobs".into());
        }
        err
    })?;

    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(so) => {
            let so = so.as_object().ok_or_else(|| Fields::wrong("stream_options", "an object", so))?;
            if !stream {
                return Err(ApiError::invalid(Some("stream_options"), "`stream_options` needs `stream: true`"));
            }
            Fields(so).bool("include_usage")?.unwrap_or(false)
        }
    };
    Ok(Parsed {
        endpoint,
        messages,
        prompt,
        params: p,
        stream,
        include_usage,
        logprobs: logprobs.is_some(),
        return_tokens: f.bool("return_tokens")?.unwrap_or(false),
    })
}

/// The `messages` of a chat request: role and content (a string, or OpenAI's list of text
/// parts).
fn messages(o: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match o.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::invalid(Some("messages"), "`messages` is required")),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(Fields::wrong("messages", "an array of messages", v)),
    };
    if list.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "`messages` must not be empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let m = m.as_object().ok_or_else(|| ApiError::invalid(Some(&at), format!("`{at}` must be an object")))?;
        let role_name = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(Some(&format!("{at}.role")), format!("`{at}.role` must be a string")))?;
        let role = Role::parse(role_name).ok_or_else(|| {
            ApiError::invalid(
                Some(&format!("{at}.role")),
                format!("`{at}.role` `{role_name}` is not supported (system, developer, user or assistant)"),
            )
        })?;
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None if role == Role::Assistant => String::new(),
            Some(Value::Array(parts)) => {
                let mut s = String::new();
                for (j, part) in parts.iter().enumerate() {
                    let pat = format!("{at}.content[{j}]");
                    match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => s.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                Some(&pat),
                                format!(
                                    "`{pat}` must be a text part {{\"type\": \"text\", \"text\": …}} (only text is supported)"
                                ),
                            ))
                        }
                    }
                }
                s
            }
            _ => {
                return Err(ApiError::invalid(
                    Some(&format!("{at}.content")),
                    format!("`{at}.content` must be a string or a list of text parts"),
                ))
            }
        };
        out.push(ChatMessage::new(role, content));
    }
    Ok(out)
}

/// The `prompt` of a completion request: a string (or a list of one string), or token ids.
fn prompt(o: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let bad = || ApiError::invalid(Some("prompt"), "`prompt` must be a string or a list of token ids (one prompt per request)");
    match o.get("prompt") {
        None | Some(Value::Null) => Err(ApiError::invalid(Some("prompt"), "`prompt` is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => Ok(Prompt::Text(a[0].as_str().unwrap_or_default().into())),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => a
            .iter()
            .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad))
            .collect::<Result<_, _>>()
            .map(Prompt::Tokens),
        Some(_) => Err(bad()),
    }
}

/// OpenAI's `usage`.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// One token's entry of chat `logprobs.content`: the token's text and bytes, its
/// log-probability and the alternatives'.
pub fn chat_logprob(piece: &dyn Fn(u32) -> Vec<u8>, token: u32, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, logprob: f64| {
        let bytes = piece(id);
        json!({"token": String::from_utf8_lossy(&bytes), "logprob": finite(logprob), "bytes": bytes})
    };
    let mut e = entry(token, lp.logprob);
    e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
    e
}

/// The legacy completion `logprobs` object of some tokens (`text_offset` from `offset0`).
pub fn completion_logprobs(piece: &dyn Fn(u32) -> Vec<u8>, tokens: &[(u32, &TokenLogprob)], offset0: usize) -> Value {
    let (mut toks, mut lps, mut tops, mut offs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut off = offset0;
    for &(id, lp) in tokens {
        let text = String::from_utf8_lossy(&piece(id)).into_owned();
        offs.push(off);
        off += text.len();
        toks.push(text);
        lps.push(finite(lp.logprob));
        let top: Map<String, Value> =
            lp.top.iter().map(|&(t, l)| (String::from_utf8_lossy(&piece(t)).into_owned(), finite(l))).collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
}

/// A log-probability as JSON (−∞ as OpenAI's floor of −9999, since JSON has no infinity).
fn finite(x: f64) -> Value {
    json!(if x.is_finite() { x } else { -9999.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Parsed, ApiError> {
        parse(Endpoint::Chat, &body, "tiny")
    }

    fn comp(body: Value) -> Result<Parsed, ApiError> {
        parse(Endpoint::Completion, &body, "tiny")
    }

    fn err(r: Result<Parsed, ApiError>) -> ApiError {
        r.expect_err("expected an error")
    }

    #[test]
    fn fields_become_sampling_params() {
        let p = chat(json!({
            "model": "tiny", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 3, "min_p": 0.1, "repeat_penalty": 1.1,
            "frequency_penalty": 0.5, "presence_penalty": -0.5, "seed": 42, "stop": "END", "stream": true,
            "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2, "n": 1
        }))
        .unwrap();
        assert_eq!(p.messages, [ChatMessage::new(Role::System, "s"), ChatMessage::new(Role::User, "hi")]);
        let q = &p.params;
        assert_eq!((q.max_tokens, q.temperature, q.top_p, q.top_k, q.min_p), (Some(7), 0.0, 0.5, 3, 0.1));
        assert_eq!((q.repeat_penalty, q.frequency_penalty, q.presence_penalty), (1.1, 0.5, -0.5));
        assert_eq!((q.seed, q.stop.clone(), q.top_logprobs), (Some(42), vec!["END".to_string()], Some(2)));
        assert!(p.stream && p.include_usage && p.logprobs);
        // max_completion_tokens is the newer name; without either there is no limit.
        assert_eq!(
            chat(json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 3})).unwrap().params.max_tokens,
            Some(3)
        );
        assert_eq!(chat(json!({"messages": [{"role": "user", "content": "x"}]})).unwrap().params.max_tokens, None);
        let c = comp(json!({"prompt": ["hello"], "logprobs": 3, "stop": ["a", "b"]})).unwrap();
        assert_eq!((c.prompt, c.params.top_logprobs, c.params.stop.len()), (Prompt::Text("hello".into()), Some(3), 2));
        assert_eq!(comp(json!({"prompt": [1, 2, 3]})).unwrap().prompt, Prompt::Tokens(vec![1, 2, 3]));
    }

    #[test]
    fn bad_fields_are_named() {
        let m = json!([{"role": "user", "content": "x"}]);
        let cases: Vec<(Value, &str, u16)> = vec![
            (json!({"messages": m, "max_tokens": -5}), "max_tokens", 400),
            (json!({"messages": m, "temperature": -0.5}), "temperature", 400),
            (json!({"messages": m, "temperature": "hot"}), "temperature", 400),
            (json!({"messages": m, "top_p": 1.5}), "top_p", 400),
            (json!({"messages": m, "n": 2}), "n", 400),
            (json!({"messages": m, "model": "gpt-4"}), "model", 404),
            (json!({"messages": m, "stop": [1]}), "stop", 400),
            (json!({"messages": m, "stop": ""}), "stop", 400),
            (json!({"messages": m, "frequency_penalty": 9}), "frequency_penalty", 400),
            (json!({"messages": m, "top_logprobs": 3}), "top_logprobs", 400),
            (json!({"messages": m, "logprobs": true, "top_logprobs": 99}), "top_logprobs", 400),
            (json!({"messages": m, "stream_options": {"include_usage": true}}), "stream_options", 400),
            (json!({"messages": m, "tools": [{"type": "function"}]}), "tools", 400),
            (json!({"messages": "hi"}), "messages", 400),
            (json!({"messages": []}), "messages", 400),
            (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].role", 400),
            (json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), "messages[0].content[0]", 400),
            (json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content", 400),
            (json!({}), "messages", 400),
        ];
        for (body, param, status) in cases {
            let e = err(chat(body.clone()));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
            assert_eq!(e.status.as_u16(), status, "{body}: {e:?}");
            let doc = e.body();
            assert!(doc["error"]["message"].as_str().is_some_and(|s| !s.is_empty()) && doc["error"]["type"].is_string(), "{doc}");
        }
        assert_eq!(err(comp(json!({"prompt": "x", "logprobs": 50}))).param.as_deref(), Some("logprobs"));
        assert_eq!(err(comp(json!({"prompt": {"a": 1}}))).param.as_deref(), Some("prompt"));
        assert_eq!(err(comp(json!({"prompt": [1, -2]}))).param.as_deref(), Some("prompt"));
        assert_eq!(err(comp(json!({"prompt": [1, 5_000_000_000u64]}))).param.as_deref(), Some("prompt"));
        assert_eq!(err(parse(Endpoint::Chat, &json!([1]), "tiny")).param, None);
        assert_eq!(parse_json(b"{\"messages\": ").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn runtime_errors_map_to_statuses() {
        let long: runtime::Error = runtime::ErrorKind::PromptTooLong { tokens: 9000, n_ctx: 4096 }.into();
        let e = from_runtime(&long, "messages");
        assert_eq!((e.status.as_u16(), e.param.as_deref(), e.code), (400, Some("messages"), Some("context_length_exceeded")));
        assert!(e.message.contains("9000") && e.message.contains("4096"), "{}", e.message);
        let engine: runtime::Error = runtime::ErrorKind::Engine("boom".into()).into();
        assert_eq!(from_runtime(&engine, "prompt").status.as_u16(), 500);
        assert_eq!(param_of("at most 16 stop strings, got 17"), Some("stop"));
        assert_eq!(param_of("min_p must be in [0, 1], got 2"), Some("min_p"));
    }
}
