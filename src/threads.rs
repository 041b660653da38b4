//! The query path's helper threads, one per core, alive as long as the process. A search hands
//! them its BM25 legs while its own thread embeds the query, and the dense leg half of a long
//! sign-code pass. A thread started per search began on its parent's core and waited there
//! until the parent blocked, and started threads cost throughput under load; a parked helper
//! wakes on an idle core in a few µs (benches/RESULTS.md, session 17). Only for work in this
//! process: nothing that waits on another host runs on them.

use std::sync::OnceLock;

/// The helpers; `None` when they could not start (callers then do the work themselves, or
/// start a thread of their own).
pub fn helpers() -> Option<&'static rayon::ThreadPool> {
    static HELPERS: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    HELPERS
        .get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .thread_name(|i| format!("docent-query-{i}"))
                // A job handed over with `spawn` that panics would otherwise abort the process;
                // its caller sees the job's channel close and does the work itself.
                .panic_handler(|_| tracing::error!("a query helper's job panicked"))
                .build()
                .map_err(|e| tracing::warn!(error = %e, "query helper threads did not start"))
                .ok()
        })
        .as_ref()
}

/// Runs `f`, which may wait on another host (a remote backend's lookup), without holding up
/// the async runtime's other tasks when called on one of its worker threads: the worker hands
/// its tasks to another thread meanwhile. Elsewhere (a blocking thread, a plain thread, a
/// single-threaded runtime, which cannot hand them over) `f` just runs.
pub fn waiting_off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Session 34's review: answer verification looked documents up on a remote backend from
    /// an async worker, stalling every task queued behind it. With one worker, a lookup that
    /// waits for another task of the same runtime finishes only if the worker is handed over.
    #[test]
    fn a_wait_on_a_worker_does_not_hold_up_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            tokio::spawn(async move { tx.send(7).unwrap() });
            // The sender waits in the only worker's queue, behind this task.
            let got = waiting_off_runtime(|| rx.recv().unwrap());
            done_tx.send(got).unwrap();
        });
        let got = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the other task never ran: the worker was held");
        assert_eq!(got, 7);
        // Elsewhere it just runs: a single-threaded runtime, a plain thread.
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(single.block_on(async { waiting_off_runtime(|| 1) }), 1);
        assert_eq!(waiting_off_runtime(|| 2), 2);
    }
    #[test]
    fn a_helper_job_that_panics_leaves_the_process_and_the_helpers_running() {
        let pool = super::helpers().expect("helpers");
        let (done, finished) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _done = done;
            panic!("a job that fails");
        });
        // The job's sender is dropped as it unwinds.
        assert!(finished.recv().is_err());
        assert_eq!(pool.install(|| 41 + 1), 42);
    }
}
