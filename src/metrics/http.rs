//! The `/metrics` HTTP endpoint (HTTP/1.1, hyper). Anything else is 404.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `render()` at `/metrics` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let render = render.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let res =
                        if req.uri().path() == "/metrics" && req.method() == hyper::Method::GET {
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                // Off the runtime: the counts may read a shared backend.
                                .body(Full::new(Bytes::from(
                                    tokio::task::spawn_blocking(move || render())
                                        .await
                                        .unwrap_or_default(),
                                )))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        };
                    Ok::<_, Infallible>(res.expect("static response parts are valid"))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
