//! Scheduling: a step runs on one worker of the thread pool while the others are kept
//! awake, so each kernel's parallel loop is picked up at once.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `step` on a worker of the current rayon pool (unless already on one), with the
/// other workers kept awake until it returns.
///
/// Running the whole step on a worker lets each kernel's parallel loop split work with the
/// other workers directly instead of every loop being injected from (and waited on by) an
/// outside thread: one cross-thread hand-off per step instead of one per parallel kernel.
/// Keeping the other workers awake means a kernel's tasks are taken at once instead of after
/// a sleeping worker's wake-up: 2B shape, 2 threads, `bench -p 0 -n 32 --profile`, A/B
/// twice: I2_S matmuls 25.9/25.0 → 21.6/21.8 ms per token, tg 19.7/20.0 → 21.9/21.4 tok/s
/// (2026-11-26; see the README's performance notes).
pub(crate) fn on_pool<R: Send>(step: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return step();
    }
    let mut res = None;
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(|s| {
        let main = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            s.spawn(move |_| keep_awake(done, main));
        }
        // Set even if the step panics: the scope waits for the helpers before it passes the
        // panic on, so they must stop (else a panic becomes a hang).
        let _stop = StopOnDrop(done);
        res = Some(step());
    });
    res.expect("the step ran")
}

/// Keeps a pool worker busy (so never asleep) until `done`: it runs the pool's pending jobs
/// as they appear (the kernels' parallel loops) and spins in between. Does nothing on the
/// thread running the step itself (`main`), which may pick this job up while it waits.
/// After [`IDLE_SPINS`] looks without work it gives its core to the OS scheduler once
/// (`sched_yield`): with a core per thread that returns at once, but with more threads than
/// cores (`-t` above the core count, or a busy machine) a spinning helper must not keep
/// the thread that runs the step off a core.
fn keep_awake(done: &AtomicBool, main: Option<usize>) {
    if rayon::current_thread_index() == main {
        return;
    }
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
        } else {
            idle += 1;
            if idle.is_multiple_of(IDLE_SPINS) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Sets its flag when dropped, unwinding included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Empty looks for work after which a kept-awake worker yields its core once.
const IDLE_SPINS: u32 = 64;
