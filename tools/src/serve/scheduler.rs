//! The one thread that owns the model's batch: it admits queued jobs into free sequences,
//! runs [`runtime::Batch::step`], and routes each event to its request's channel. HTTP
//! handlers only submit jobs and read their channel; a request never touches the model, so a
//! slow or vanished client cannot stall a step (Hugging Face TGI's router splits its queue
//! and batching loop the same way).
//!
//! Backpressure: [`Queue::submit`] refuses a job when `parallel + max_queue` jobs are already
//! running or waiting (503 at the edge), so memory never grows with the request rate.
//! Cancellation: a request whose receiver is gone (the client disconnected, the stream was
//! dropped) is cancelled before the next step, freeing its sequence.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use runtime::{Batch, Event, Model, Request, SeqId};
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;

/// What a request's channel receives.
#[derive(Debug)]
pub enum Update {
    /// A runtime event of this request's sequence (`Token`, `Text`, then `Done`).
    Event(Event),
    /// The request ended without completing: the message and whether the server is
    /// shutting down (503) rather than the engine failing (500).
    Failed {
        /// What happened.
        message: String,
        /// Shutting down (503), else an engine failure (500).
        shutdown: bool,
    },
}

/// A request waiting for a sequence.
pub struct Job {
    /// What to run (validated and checked against the context by the handler).
    pub req: Request,
    /// Where its events go.
    pub tx: UnboundedSender<Update>,
    /// When it was queued.
    pub queued_at: Instant,
}

/// Why a job was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `parallel + max_queue` jobs are already running or waiting.
    Full {
        /// Jobs waiting.
        waiting: usize,
    },
    /// The server is shutting down.
    ShuttingDown,
}

struct State {
    waiting: VecDeque<Job>,
    /// Jobs handed to the batch and not finished.
    running: usize,
    shutdown: bool,
}

/// The bounded queue between the handlers and the scheduler thread.
pub struct Queue {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    wake: Condvar,
    parallel: usize,
    max_queue: usize,
}

impl Queue {
    /// A queue for `parallel` sequences and `max_queue` waiting jobs.
    pub fn new(parallel: usize, max_queue: usize, metrics: Arc<Metrics>) -> Queue {
        Queue {
            state: Mutex::new(State { waiting: VecDeque::new(), running: 0, shutdown: false }),
            metrics,
            wake: Condvar::new(),
            parallel,
            max_queue,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent (plain counters
        // and a queue), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job, or refuses it when full or shutting down.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let mut s = self.lock();
        if s.shutdown {
            return Err(Refused::ShuttingDown);
        }
        let before = s.waiting.len();
        s.waiting.retain(|j| !j.tx.is_closed());
        self.metrics.cancelled_n(before - s.waiting.len());
        if s.running + s.waiting.len() >= self.parallel + self.max_queue {
            return Err(Refused::Full { waiting: s.waiting.len() });
        }
        s.waiting.push_back(job);
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Jobs waiting for a sequence.
    pub fn depth(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Stops accepting jobs; the scheduler refuses the waiting ones, cancels the running ones
    /// and exits.
    pub fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wake.notify_all();
    }

    /// The sequences a queue serves.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// The jobs that may wait.
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }
}

/// Starts the scheduler thread for `model`.
pub fn spawn(model: Arc<Model>, queue: Arc<Queue>, metrics: Arc<Metrics>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("scheduler".into()).spawn(move || run(model, &queue, &metrics))
}

fn shutdown_failure() -> Update {
    Update::Failed { message: "the server is shutting down".into(), shutdown: true }
}

/// The loop: admit, cancel the abandoned, step, route.
fn run(model: Arc<Model>, queue: &Queue, metrics: &Metrics) {
    let mut batch = match Batch::new(model.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("serve: scheduler: {e}");
            metrics.set_failed();
            return;
        }
    };
    let mut active: HashMap<SeqId, UnboundedSender<Update>> = HashMap::new();
    loop {
        // Admit waiting jobs into free sequences; sleep while there is nothing to do.
        {
            let mut s = queue.lock();
            loop {
                if s.shutdown {
                    for j in s.waiting.drain(..) {
                        let _ = j.tx.send(shutdown_failure());
                    }
                    for (id, tx) in active.drain() {
                        batch.cancel(id);
                        let _ = tx.send(shutdown_failure());
                        metrics.cancelled();
                    }
                    s.running = 0;
                    metrics.set_busy(0, 0);
                    return;
                }
                while s.running < queue.parallel {
                    let Some(job) = s.waiting.pop_front() else { break };
                    if job.tx.is_closed() {
                        metrics.cancelled();
                        continue;
                    }
                    metrics.queued_for(job.queued_at.elapsed());
                    match batch.add(job.req) {
                        Ok(id) => {
                            active.insert(id, job.tx);
                            s.running += 1;
                        }
                        Err(e) => {
                            // The handler checked the request; reaching here is a bug.
                            let _ = job.tx.send(Update::Failed { message: e.to_string(), shutdown: false });
                        }
                    }
                }
                metrics.set_busy(s.running, s.waiting.len());
                if !active.is_empty() {
                    break;
                }
                // Woken by a submit or a shutdown; the timeout only bounds a missed wake-up.
                s = queue.wake.wait_timeout(s, Duration::from_secs(1)).map(|r| r.0).unwrap_or_else(|p| p.into_inner().0);
            }
        }

        // Cancel the requests nobody listens to any more.
        let gone: Vec<SeqId> = active.iter().filter(|(_, tx)| tx.is_closed()).map(|(id, _)| *id).collect();
        let mut finished = 0usize;
        for id in gone {
            active.remove(&id);
            batch.cancel(id);
            metrics.cancelled();
            finished += 1;
        }

        if !active.is_empty() {
            let t0 = Instant::now();
            let outcome = match catch_unwind(AssertUnwindSafe(|| batch.step())) {
                Ok(Ok(events)) => Ok(events),
                Ok(Err(e)) => Err(e.to_string()),
                Err(p) => Err(format!(
                    "the engine panicked: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            };
            match outcome {
                Ok(events) => {
                    let mut n_tokens = 0usize;
                    for e in events {
                        let seq = match &e {
                            Event::Token { seq, .. } => {
                                n_tokens += 1;
                                *seq
                            }
                            Event::Text { seq, .. } | Event::Logits { seq, .. } => *seq,
                            Event::Done(c) => c.id,
                        };
                        let done = matches!(e, Event::Done(_));
                        if let Event::Done(c) = &e {
                            metrics.completed(c.prompt.len());
                        }
                        let Some(tx) = active.get(&seq) else { continue };
                        let delivered = tx.send(Update::Event(e)).is_ok();
                        if done {
                            active.remove(&seq);
                            finished += 1;
                        } else if !delivered {
                            active.remove(&seq);
                            batch.cancel(seq);
                            metrics.cancelled();
                            finished += 1;
                        }
                    }
                    metrics.stepped(n_tokens, t0.elapsed());
                }
                Err(message) => {
                    // An engine error (or a bug that panicked): fail every running request
                    // and start over with a fresh batch, so the server keeps serving.
                    eprintln!("serve: step failed: {message}");
                    for (_, tx) in active.drain() {
                        let _ = tx.send(Update::Failed { message: message.clone(), shutdown: false });
                        metrics.failed();
                        finished += 1;
                    }
                    match Batch::new(model.clone()) {
                        Ok(b) => batch = b,
                        Err(e) => {
                            eprintln!("serve: scheduler: cannot start a new batch: {e}");
                            metrics.set_failed();
                            queue.shut_down();
                            return;
                        }
                    }
                }
            }
        }
        if finished > 0 {
            let mut s = queue.lock();
            s.running = s.running.saturating_sub(finished);
            metrics.set_busy(s.running, s.waiting.len());
        }
    }
}
