//! The one epoch ticker of the process.
//!
//! Every store's time limit is an epoch deadline, and epochs advance only here: one thread,
//! one `increment_epoch` every [`TICK`]. A ticker per request is the bug that cost
//! `wasmtime serve` two orders of magnitude; a plain thread (not a tokio task) keeps ticking
//! even when every tokio worker is busy running guest code, which is exactly when it matters.
//!
//! It is the one periodic duty outside [`crate::scheduler`], on purpose, and not for speed:
//! guests yield to tokio only when the epoch moves, so as a scheduler entry it could be
//! starved by the very guests it must interrupt. Two spinning guests on a 2-worker runtime
//! would never yield, the scheduler task would never run, and neither would any timeout: a
//! livelock. `tests/all/fixtures.rs` runs as many spinning guests as workers and checks that
//! others are served and the loops end at their timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the epoch advances; also the granularity of fair yielding between guests.
pub const TICK: Duration = Duration::from_millis(10);

/// Owns the ticker thread; dropping it stops and joins the thread.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: wasmtime::Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("llmchat-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
