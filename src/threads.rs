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

#[cfg(test)]
mod tests {
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
