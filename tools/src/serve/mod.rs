//! `bitnet-graph serve`: an OpenAI-compatible HTTP server (and a chat page) over the
//! runtime's continuous batching.
//!
//! ## Design
//! The server owns no inference logic: it translates requests into runtime calls
//! ([`api`]), and one scheduler thread owns the batch ([`scheduler`]). Async lives only at the
//! HTTP edge (tokio + axum); the engine stays synchronous. The listener opens before the
//! model loads, so `/health` answers `loading` until it is ready. SIGINT or SIGTERM stops
//! accepting, ends the running requests (streams get an error event, others a 503) and
//! exits 0.

pub mod api;
mod handlers;
pub mod metrics;
pub mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use runtime::{ChatFormat, Model};

use crate::cli::{ModelArg, RunArgs};
use crate::load;

/// Arguments of `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub run: RunArgs,
    /// Address to listen on (loopback by default; use 0.0.0.0 to accept other hosts).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated at once (continuous batching), each with its own KV cache of
    /// --ctx-size positions (`-np` works too).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a sequence; beyond that a request gets 503.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on the API (the chat page asks for it).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model's name in the API (default: the file name without `.gguf`).
    #[arg(long)]
    pub alias: Option<String>,
    /// Chat format by name instead of detection from the GGUF.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(runtime::chat::FORMATS.iter().map(|f| f.0)))]
    pub chat_template: Option<String>,
    /// Do not serve the chat page at `/`.
    #[arg(long)]
    pub no_webui: bool,
}

/// The largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 4 << 20;

/// A loaded model and its name in the API.
pub struct Ready {
    /// The model.
    pub model: Arc<Model>,
    /// Its id in `/v1/models` and the `model` field.
    pub name: String,
}

/// What every handler shares.
pub struct App {
    /// Set once the model is loaded.
    pub ready: OnceLock<Ready>,
    /// The job queue of the scheduler.
    pub queue: Arc<scheduler::Queue>,
    /// Counters.
    pub metrics: Arc<metrics::Metrics>,
    /// The API key, when one is required.
    pub api_key: Option<String>,
    /// The chat format to use instead of the detected one.
    pub chat_format: Option<ChatFormat>,
    /// Serve the chat page.
    pub webui: bool,
}

/// Runs `serve` until SIGINT or SIGTERM.
pub fn run(a: &ServeArgs) -> Result<ExitCode> {
    let opts = load::options(&a.run, a.parallel);
    opts.validate().map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("parallel", "--parallel")))?;
    if a.api_key.as_deref().is_some_and(str::is_empty) {
        bail!("--api-key: the key must not be empty");
    }
    if let Some(p) = &a.model.model {
        if !p.is_file() {
            bail!("{}: no such model file", p.display());
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(a, opts))
}

async fn serve(a: &ServeArgs, opts: runtime::ModelOptions) -> Result<ExitCode> {
    let addr = format!("{}:{}", a.host, a.port);
    let listener = std::net::TcpListener::bind(&addr).with_context(|| format!("listening on {addr}"))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local: SocketAddr = listener.local_addr()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let app = Arc::new(App {
        ready: OnceLock::new(),
        queue: Arc::new(scheduler::Queue::new(a.parallel, a.max_queue, metrics.clone())),
        metrics,
        api_key: a.api_key.clone(),
        chat_format: a.chat_template.as_deref().and_then(ChatFormat::by_name),
        webui: !a.no_webui,
    });
    eprintln!("serve: listening on http://{local} (model loading; /health says when it is ready)");

    // Load in the background; a failure ends the server with exit code 2.
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    {
        let (app, m, alias) = (app.clone(), a.model.clone(), a.alias.clone());
        std::thread::Builder::new()
            .name("load".into())
            .spawn(move || {
                if let Err(e) = load_model(&app, &m, &opts, alias) {
                    let _ = fatal_tx.send(format!("{e:#}"));
                }
            })
            .context("starting the loading thread")?;
    }

    let router = handlers::router(app.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });

    let code = tokio::select! {
        s = shutdown_signal() => {
            eprintln!("serve: {s}: shutting down");
            ExitCode::SUCCESS
        }
        Some(msg) = fatal_rx.recv() => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    };
    app.queue.shut_down();
    let _ = stop_tx.send(());
    // Running requests end at the scheduler's next check; connections then close. A client
    // that keeps a connection open past the grace period does not hold the process.
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("serve: {e}"),
        Ok(Err(e)) => eprintln!("serve: {e}"),
        Err(_) => eprintln!("serve: connections still open after 10 s; exiting"),
    }
    Ok(code)
}

/// Resolves and loads the model, starts the scheduler, and marks the server ready.
fn load_model(app: &App, m: &ModelArg, opts: &runtime::ModelOptions, alias: Option<String>) -> Result<()> {
    let path: PathBuf = load::model_path(m)?;
    let name = alias.unwrap_or_else(|| {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        file.strip_suffix(".gguf").map(str::to_string).unwrap_or(file)
    });
    let local = ModelArg { model: Some(path), hf: None, offline: false };
    let model = load::load(&local, opts, false)?;
    scheduler::spawn(model.clone(), app.queue.clone(), app.metrics.clone()).context("starting the scheduler")?;
    eprintln!(
        "serve: ready: model `{name}`, {} sequences of {} positions, queue of {}, chat format {}",
        opts.n_parallel,
        model.n_ctx(),
        app.queue.max_queue(),
        model.info().chat_format
    );
    let _ = app.ready.set(Ready { model, name });
    app.metrics.set_loaded();
    Ok(())
}

/// Waits for SIGINT or SIGTERM; names it.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    };
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! {
            s = ctrl_c => s,
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}
