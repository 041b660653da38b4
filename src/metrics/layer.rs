//! A tower layer around the gRPC server that counts every request by method and status code and
//! times it to its response headers. Requests refused by authentication are counted too.
//!
//! The status is the response's `grpc-status`: in the headers for an error raised before any
//! message (a trailers-only response), else in the trailers, so a stream that fails after its
//! first pieces counts as the failure it is. A response whose body ends without a status, or is
//! dropped before its end (the client went away), counts as `CANCELLED`. The latency is the time
//! to the response headers in every case.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};

use super::{Metrics, method_index};

/// `CANCELLED`, for bodies that end without a status.
const CANCELLED: usize = 1;
/// `UNKNOWN`, for transport failures.
const UNKNOWN: usize = 2;

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok())
}

impl<S, B, R> tower_service::Service<http::Request<B>> for MetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_index(req.uri().path());
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    let mut count = Count {
                        metrics,
                        method,
                        to_headers: start.elapsed(),
                        done: false,
                    };
                    if let Some(code) = grpc_status(res.headers()) {
                        count.record(code);
                    }
                    Ok(res.map(|inner| CountedBody { inner, count }))
                }
                Err(e) => {
                    metrics.request(method, UNKNOWN, start.elapsed());
                    Err(e)
                }
            }
        })
    }
}

/// One request's entry, written once: at the status, or when the body goes without one.
struct Count {
    metrics: Arc<Metrics>,
    method: usize,
    to_headers: Duration,
    done: bool,
}

impl Count {
    fn record(&mut self, code: usize) {
        if !self.done {
            self.done = true;
            self.metrics.request(self.method, code, self.to_headers);
        }
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.record(CANCELLED);
    }
}

/// The response body, passed through; its trailers' status is counted.
pub struct CountedBody<R> {
    inner: R,
    count: Count,
}

impl<R> Body for CountedBody<R>
where
    R: Body + Unpin,
{
    type Data = R::Data;
    type Error = R::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.count.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.count.record(UNKNOWN),
            Poll::Ready(None) => this.count.record(CANCELLED),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use std::convert::Infallible;
    use tower_service::Service;

    type Trailed = http_body_util::combinators::WithTrailers<
        Full<Bytes>,
        futures::future::Ready<Option<Result<http::HeaderMap, Infallible>>>,
    >;

    /// Answers every request with `headers_status` in its headers (if any), one message, and
    /// `trailers_status` in its trailers (if any).
    struct Fixed {
        headers_status: Option<&'static str>,
        trailers_status: Option<&'static str>,
    }

    impl Service<http::Request<()>> for Fixed {
        type Response = http::Response<Trailed>;
        type Error = Infallible;
        type Future = futures::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let trailers = self.trailers_status.map(|s| {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", s.parse().unwrap());
                Ok(t)
            });
            let body = Full::new(Bytes::from_static(b"piece"))
                .with_trailers(futures::future::ready(trailers));
            let mut res = http::Response::new(body);
            if let Some(s) = self.headers_status {
                res.headers_mut().insert("grpc-status", s.parse().unwrap());
            }
            futures::future::ready(Ok(res))
        }
    }

    async fn served(inner: Fixed, read_body: bool) -> String {
        let metrics = Arc::new(Metrics::default());
        let mut svc = tower_layer::Layer::layer(&MetricsLayer::new(metrics.clone()), inner);
        let req = http::Request::builder()
            .uri("/docent.v1.Assistant/AskStream")
            .body(())
            .unwrap();
        let res = svc.call(req).await.unwrap();
        if read_body {
            res.into_body().collect().await.unwrap();
        } else {
            drop(res);
        }
        metrics
            .render(&[], (0, 0, 0))
            .lines()
            .filter(|l| {
                l.starts_with("docent_requests_total{method=\"AskStream\"") && !l.ends_with(" 0")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_stream_that_fails_after_its_first_piece_counts_as_its_failure() {
        let got = served(
            Fixed {
                headers_status: None,
                trailers_status: Some("13"),
            },
            true,
        )
        .await;
        assert_eq!(
            got,
            "docent_requests_total{method=\"AskStream\",code=\"INTERNAL\"} 1"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_well_counts_as_ok() {
        let got = served(
            Fixed {
                headers_status: None,
                trailers_status: Some("0"),
            },
            true,
        )
        .await;
        assert_eq!(
            got,
            "docent_requests_total{method=\"AskStream\",code=\"OK\"} 1"
        );
    }

    #[tokio::test]
    async fn a_stream_dropped_before_its_end_counts_as_cancelled() {
        let got = served(
            Fixed {
                headers_status: None,
                trailers_status: Some("0"),
            },
            false,
        )
        .await;
        assert_eq!(
            got,
            "docent_requests_total{method=\"AskStream\",code=\"CANCELLED\"} 1"
        );
    }

    #[tokio::test]
    async fn a_trailers_only_error_counts_once() {
        let got = served(
            Fixed {
                headers_status: Some("7"),
                trailers_status: None,
            },
            true,
        )
        .await;
        assert_eq!(
            got,
            "docent_requests_total{method=\"AskStream\",code=\"PERMISSION_DENIED\"} 1"
        );
    }
}
