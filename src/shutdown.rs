//! Process signals: SIGINT/SIGTERM stop the daemon gracefully; SIGHUP reloads identities.

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// SIGHUP, taken over from its default action (which ends the process) when made: make it
/// first thing at start, so that a `systemctl reload` while the model loads is a reload once
/// the daemon is up, not the end of it (found by a review).
pub struct ReloadSignal {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl ReloadSignal {
    pub fn new() -> Self {
        Self {
            // Said, not swallowed: without it a SIGHUP ends the daemon (session 43's review).
            #[cfg(unix)]
            hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "SIGHUP cannot be taken over: use docent admin reload, since a SIGHUP would end the daemon");
                })
                .ok(),
        }
    }
}

impl Default for ReloadSignal {
    fn default() -> Self {
        Self::new()
    }
}

/// Calls `reload` (off the async runtime) on every SIGHUP since `signal` was made, for the life
/// of the process.
pub async fn on_reload(signal: ReloadSignal, reload: impl Fn() + Send + Sync + Clone + 'static) {
    #[cfg(unix)]
    {
        let Some(mut hup) = signal.hup else {
            return;
        };
        while hup.recv().await.is_some() {
            let r = reload.clone();
            let _ = tokio::task::spawn_blocking(r).await;
        }
    }
    #[cfg(not(unix))]
    let _ = (signal, reload);
}
