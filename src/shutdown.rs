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

/// Calls `reload` (off the async runtime) on every SIGHUP, for the life of the process.
pub async fn on_reload(reload: impl Fn() + Send + Sync + Clone + 'static) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let r = reload.clone();
            let _ = tokio::task::spawn_blocking(r).await;
        }
    }
    #[cfg(not(unix))]
    let _ = reload;
}
