//! Load shedding and request budgets, so one caller cannot stall everyone.
//!
//! - [`LimitLayer`] sits inside the authentication interceptor of each service: a request takes
//!   a permit from the global pool and one from its caller's pool, or is refused at once with
//!   RESOURCE_EXHAUSTED (reason OVERLOADED) before any work starts. Permits are held until the
//!   response body ends, so a stream counts for as long as it runs.
//! - [`OpenStreamLayer`] bounds the services that take no credentials (health, reflection) by
//!   one pool over all peers, of which one peer address (an IPv6 /64) may hold a share.
//! - [`Budget`] carries the client's deadline (`grpc-timeout`) and a cancellation flag into the
//!   blocking work. The handler's future holds a [`BudgetGuard`]; when the future is dropped
//!   (deadline passed, client gone) the guard raises the flag, and the work checks it before each
//!   costly step (the question embedding waits for a shared model session: an abandoned request
//!   that reaches it runs nothing).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServiceError;
use crate::identity::Caller;

/// Concurrency limits shared by every service of the daemon.
pub struct Limiter {
    global: Arc<Semaphore>,
    per_caller: usize,
    /// For identities with `act_as` (bridges asking for many users).
    per_service: usize,
    /// Per (identity, whether the credential may act for others).
    callers: Mutex<HashMap<(String, bool), Arc<Semaphore>>>,
}

/// Both permits of an admitted request.
pub struct Permits {
    _global: OwnedSemaphorePermit,
    _caller: OwnedSemaphorePermit,
}

impl Limiter {
    pub fn new(global: usize, per_caller: usize, per_service: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_caller: per_caller.max(1),
            per_service: per_service.max(1),
            callers: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a request of `caller` (its authenticated identity; `service`: it may act for
    /// others) or says which limit it hit.
    pub fn try_admit(&self, caller: &str, service: bool) -> Result<Permits, &'static str> {
        let limit = if service {
            self.per_service
        } else {
            self.per_caller
        };
        let pool = {
            let mut m = self.callers.lock().unwrap_or_else(|e| e.into_inner());
            // Callers are authenticated identities (a bounded set), but drop idle pools anyway
            // (each against its own size: a busy pool is never dropped and made anew).
            if m.len() > 4096 {
                m.retain(|(_, service), s| {
                    let size = if *service {
                        self.per_service
                    } else {
                        self.per_caller
                    };
                    s.available_permits() < size
                });
            }
            // One pool per identity and kind of credential: an identity's `act_as` key gets the
            // service limit even when a query-only key of it was seen first, and the other way
            // round (a reload that changes a credential's permissions applies at once).
            m.entry((caller.to_string(), service))
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        };
        let caller = pool
            .try_acquire_owned()
            .map_err(|_| "too many concurrent requests from this caller; retry later")?;
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| "the server is at its concurrent request limit; retry later")?;
        Ok(Permits {
            _global: global,
            _caller: caller,
        })
    }
}

/// What an [`Admission`] layer asks of each request: what it holds while it runs (permits,
/// given back when its response body ends, so a stream counts for as long as it runs), or why
/// it is refused at once (RESOURCE_EXHAUSTED, reason OVERLOADED) before any work.
pub trait Admit: Clone + Send + Sync + 'static {
    type Held: Send + Sync + 'static;
    fn admit<B>(&self, req: &http::Request<B>) -> Result<Self::Held, &'static str>;
}

/// A tower layer that admits or sheds each request (see [`Admit`]).
#[derive(Clone)]
pub struct Admission<A> {
    admit: A,
}

impl<A> Admission<A> {
    pub fn new(admit: A) -> Self {
        Self { admit }
    }
}

impl<S, A: Clone> tower_layer::Layer<S> for Admission<A> {
    type Service = Admitted<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Admitted {
            inner,
            admit: self.admit.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admitted<S, A> {
    inner: S,
    admit: A,
}

impl<S, B, A> tower_service::Service<http::Request<B>> for Admitted<S, A>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    A: Admit,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let held = match self.admit.admit(&req) {
            Ok(h) => h,
            Err(why) => {
                let status: tonic::Status = ServiceError::Overloaded(why).into();
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let held = Release(Arc::new(Mutex::new(Some(Box::new(held)))));
        req.extensions_mut().insert(held.clone());
        req.extensions_mut().insert(Arrived(Instant::now()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|body| {
                tonic::body::Body::new(body.map_frame(move |f| {
                    // The place is given back as the trailers (the call's end) go out: a
                    // caller that saw its call end may start the next one at once. Dropping
                    // the body could come just after the caller read the trailers (a health
                    // watch opened right after a check was refused). A call without trailers
                    // gives it back when its body is dropped.
                    if f.is_trailers() {
                        held.now();
                    }
                    f
                }))
            }))
        })
    }
}

/// When a request's headers arrived (before its body, which may take long to upload), in its
/// extensions: its deadline counts from then, as the client's does.
#[derive(Clone, Copy)]
pub struct Arrived(pub Instant);

impl Arrived {
    /// When `req` arrived; now, for a request that did not pass the limit layer.
    pub fn of<T>(req: &tonic::Request<T>) -> Instant {
        req.extensions()
            .get::<Self>()
            .map_or_else(Instant::now, |a| a.0)
    }
}

/// What an admitted request holds (see [`Admit`]), in its extensions: a handler whose request
/// only waits from some point on (a push with `wait_for_commit`, waiting for the commit) gives
/// it back there with [`Release::now`], so that waiting takes no place from requests that work.
#[derive(Clone)]
pub struct Release(Arc<Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>>);

impl Release {
    pub fn of<T>(req: &tonic::Request<T>) -> Option<Self> {
        req.extensions().get::<Self>().cloned()
    }

    /// Gives what the request holds back now, instead of when its response ends.
    pub fn now(&self) {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(held);
    }
}

impl<S: tonic::server::NamedService, A> tonic::server::NamedService for Admitted<S, A> {
    const NAME: &'static str = S::NAME;
}

/// The per-caller and global limits, inside the authentication interceptor of each service.
pub type LimitLayer = Admission<Arc<Limiter>>;

impl Admit for Arc<Limiter> {
    type Held = Permits;

    fn admit<B>(&self, req: &http::Request<B>) -> Result<Permits, &'static str> {
        // Inside the interceptor: the caller is known (an unauthenticated request never gets
        // here). The authenticated identity is the unit; a service acting for many users (the
        // `act_as` permission) has the larger `max_concurrent_per_service` pool.
        let (who, service) = req
            .extensions()
            .get::<Caller>()
            .map(|c| {
                (
                    c.actor().unwrap_or(c.user_id()).to_string(),
                    c.permissions().act_as,
                )
            })
            .unwrap_or_default();
        self.try_admit(&who, service).inspect_err(|why| {
            tracing::debug!(caller = %crate::guardrail::pii::for_log(&who), why, "request shed");
        })
    }
}

/// One pool for the services that take no credentials (health, reflection): a health `Watch`
/// or a reflection stream holds its place for as long as its peer keeps it.
pub type OpenStreamLayer = Admission<OpenPool>;

/// The pool of [`OpenStreamLayer`]: `max` places over all peers, of which one peer may hold
/// `per_peer`.
#[derive(Clone)]
pub struct OpenPool {
    all: Arc<Semaphore>,
    per_peer: usize,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl OpenPool {
    pub fn new(max: usize, per_peer: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(max.max(1))),
            per_peer: per_peer.max(1),
            peers: Arc::default(),
        }
    }
}

/// A peer's place in an [`OpenPool`], given back when dropped.
pub struct PeerPlace {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// Who a peer is for its share: its IPv4 address (an IPv4-mapped IPv6 one too), or its IPv6
/// /64, which one host or customer commonly holds whole.
fn peer_unit(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

impl Admit for OpenPool {
    type Held = (Option<PeerPlace>, OwnedSemaphorePermit);

    fn admit<B>(&self, req: &http::Request<B>) -> Result<Self::Held, &'static str> {
        let place = match peer_addr(req) {
            Some(addr) => {
                let peer = peer_unit(addr.ip());
                let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                let held = peers.entry(peer).or_insert(0);
                if *held >= self.per_peer {
                    tracing::debug!(path = req.uri().path(), %peer, "unauthenticated request shed (peer's share)");
                    return Err(
                        "too many open health and reflection requests from this address; retry later",
                    );
                }
                *held += 1;
                Some(PeerPlace {
                    peers: self.peers.clone(),
                    peer,
                })
            }
            None => None,
        };
        // On refusal here, `place` is dropped and given back.
        let permit = self.all.clone().try_acquire_owned().map_err(|_| {
            tracing::debug!(path = req.uri().path(), "unauthenticated request shed");
            "too many open health and reflection requests; retry later"
        })?;
        Ok((place, permit))
    }
}

/// The address of the peer a request came from, over plain TCP or TLS.
pub fn peer_addr<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// A request's deadline and cancellation, for the blocking work it starts.
#[derive(Clone)]
pub struct Budget {
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    cancelled: Arc<AtomicBool>,
}

/// Raises the budget's cancellation flag when dropped (with the handler's future).
pub struct BudgetGuard(Arc<AtomicBool>);

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Budget {
    /// From the request's `grpc-timeout` header (none: no deadline), with the guard the
    /// handler keeps until it returns.
    pub fn of<T>(req: &tonic::Request<T>) -> (Self, BudgetGuard) {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let cancelled = Arc::new(AtomicBool::new(false));
        // From the headers' arrival when the limit layer saw them (a review: counted from the
        // handler's start, after a large body's upload, the daemon answered after the client
        // had given up).
        let arrived = Arrived::of(req);
        (
            Self {
                deadline: timeout.map(|t| arrived + t),
                timeout,
                cancelled: cancelled.clone(),
            },
            BudgetGuard(cancelled),
        )
    }

    /// A budget that never runs out (tools, tests).
    pub fn unlimited() -> Self {
        Self {
            deadline: None,
            timeout: None,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The client's deadline, if it sent one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time the client gave the call, if it sent one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the work should stop: the client gave up or its deadline passed.
    pub fn spent(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(peer: &str) -> http::Request<()> {
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer.parse().unwrap()),
            });
        req
    }

    /// Session 32 left it open: one peer could hold all the places of the services that take
    /// no credentials. It holds its share; others get the rest, up to the total.
    #[test]
    fn one_peer_holds_its_share_of_the_open_pool_and_others_the_rest() {
        let pool = OpenPool::new(5, 2);
        let a: Vec<_> = (0..2)
            .map(|_| pool.admit(&from("10.0.0.1:4000")).unwrap())
            .collect();
        let refused = pool.admit(&from("10.0.0.1:4001")).err().unwrap();
        assert!(refused.contains("from this address"), "{refused}");
        // The same peer over IPv4-mapped IPv6 is the same peer.
        assert!(pool.admit(&from("[::ffff:10.0.0.1]:4002")).is_err());
        let b: Vec<_> = (0..2)
            .map(|_| pool.admit(&from("10.0.0.2:4000")).unwrap())
            .collect();
        // One IPv6 /64 is one peer; another /64 is another.
        let c = pool.admit(&from("[2001:db8:0:1::1]:4000")).unwrap();
        // The total is reached: refused for everyone.
        let full = pool.admit(&from("[2001:db8:0:2::1]:4000")).err().unwrap();
        assert!(!full.contains("from this address"), "{full}");
        drop(c);
        let _c2 = pool.admit(&from("[2001:db8:0:1::2]:4000")).unwrap();
        let ip = |s: &str| peer_unit(s.parse().unwrap());
        assert_eq!(ip("2001:db8:0:1::2"), ip("2001:db8:0:1:ffff::9"));
        assert_ne!(ip("2001:db8:0:1::2"), ip("2001:db8:0:2::2"));
        // A place given back is the peer's again.
        drop(a);
        let _a = pool.admit(&from("10.0.0.1:4003")).unwrap();
        drop(b);
        assert!(
            pool.peers.lock().unwrap().len() == 2,
            "emptied peers are forgotten"
        );
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }

    #[test]
    fn per_caller_and_global_limits_shed_and_release() {
        let l = Limiter::new(3, 2, 3);
        let a1 = l.try_admit("a", false).unwrap();
        let _a2 = l.try_admit("a", false).unwrap();
        assert!(
            l.try_admit("a", false).is_err(),
            "a third request of one caller is shed"
        );
        let _b1 = l.try_admit("b", false).unwrap();
        assert!(
            l.try_admit("c", false).is_err(),
            "the global pool (3) is full with a, a, b"
        );
        drop(a1);
        assert!(
            l.try_admit("c", false).is_ok(),
            "a released permit admits again"
        );
        let l = Limiter::new(10, 1, 3);
        let _s: Vec<_> = (0..3)
            .map(|_| l.try_admit("bridge", true).unwrap())
            .collect();
        assert!(
            l.try_admit("bridge", true).is_err(),
            "a service has its own, larger limit"
        );
        // Seen first through a query-only key, an identity's act_as key still gets the service
        // limit (session 30's review: the first credential sized the pool for good).
        let l = Limiter::new(10, 1, 3);
        let _q = l.try_admit("bot", false).unwrap();
        let _s: Vec<_> = (0..3).map(|_| l.try_admit("bot", true).unwrap()).collect();
        assert!(l.try_admit("bot", false).is_err());
    }

    #[test]
    fn a_dropped_guard_spends_the_budget() {
        let req = tonic::Request::new(());
        let (b, guard) = Budget::of(&req);
        assert!(!b.spent());
        drop(guard);
        assert!(b.spent());
        let mut req = tonic::Request::new(());
        req.metadata_mut()
            .insert("grpc-timeout", "1n".parse().unwrap());
        let (b, _guard) = Budget::of(&req);
        std::thread::sleep(Duration::from_millis(1));
        assert!(b.spent(), "a passed deadline spends the budget");
    }

    /// A review: the deadline counted from the handler's start, after the body's upload, so
    /// the daemon could answer after the client had given up. It counts from the headers'
    /// arrival, which the limit layer records.
    #[test]
    fn the_deadline_counts_from_the_requests_arrival() {
        let mut req = tonic::Request::new(());
        req.metadata_mut()
            .insert("grpc-timeout", "1S".parse().unwrap());
        req.extensions_mut()
            .insert(Arrived(Instant::now() - Duration::from_secs(2)));
        let (b, _guard) = Budget::of(&req);
        assert!(b.spent(), "its second had passed during the upload");
        assert_eq!(b.timeout(), Some(Duration::from_secs(1)));
        req.extensions_mut().insert(Arrived(Instant::now()));
        let (b, _guard) = Budget::of(&req);
        assert!(!b.spent());
    }
}
