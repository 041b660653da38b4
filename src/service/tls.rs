//! TLS on the gRPC port: the server's certificate, client certificates checked against the
//! configured CA, and the CA's certificate revocation lists.
//!
//! Revocation lists change while the daemon runs (a CA publishes a new one before the old one's
//! next-update time, and at once when it revokes a certificate), so their file is read again
//! whenever it changes. The client's whole chain is verified at every handshake (sessions are
//! never resumed, which would skip it) and again, with the same verifier, at every call a client
//! certificate authenticates (cached for [`RECHECK_AFTER`] per chain and list file), so a
//! connection opened before a revocation, or before a certificate expired, cannot go on using
//! it. Every failure is closed: a list that cannot be read or parsed, one past its next-update
//! time, or a chain with a CA the file holds no list for refuses the certificate.
//!
//! Must never: accept a client certificate whose revocation status it could not establish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime,
};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

/// A TLS handshake must finish in this time: an idle socket would otherwise hold a descriptor
/// for good.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once; connections beyond are closed unanswered.
pub const MAX_HANDSHAKES: usize = 1024;

/// How long a call's verdict on a client chain stands before the next call verifies it again
/// (a new list file is read at once; this bounds what only time changes: a certificate or a
/// list reaching its end).
pub const RECHECK_AFTER: Duration = Duration::from_secs(10);

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("tls: {0}")]
    Rustls(String),
}

/// The server side of TLS: what the listener's handshakes use, and (with a client CA) the
/// checks of client chains, with the revocation lists when configured, that the
/// authentication interceptor runs again on every call.
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    pub revocations: Option<Arc<Revocations>>,
}

/// Builds the server's TLS from its configuration: certificate chain and key, and with a client
/// CA, client certificates (required or optional) checked against it and its revocation lists.
pub fn server_tls(tls: &TlsConfig) -> Result<ServerTls, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    warn_if_shared(&tls.key);
    let own = Arc::new(ServerCert::load(
        tls.cert.clone(),
        tls.key.clone(),
        provider.clone(),
    )?);
    let mut revocations = None;
    let verifier = match &tls.client_ca {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| TlsSetupError::Invalid {
                    path: ca.clone(),
                    message: format!("not a CA certificate: {e}"),
                })?;
            }
            let client = ClientAuth {
                roots: Arc::new(roots),
                provider: provider.clone(),
                optional: !tls.client_auth_required,
            };
            // Checked again at every call a certificate authenticates, lists or not: a
            // certificate that expires while its connection stays open ends there too
            // (session 34's review: without lists it was checked at the handshake only).
            let r = Arc::new(match &tls.client_crl {
                None => Revocations::without_lists(client)?,
                Some(path) => Revocations::load(client, path.clone())?,
            });
            revocations = Some(r.clone());
            r
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    config.alpn_protocols = vec![b"h2".to_vec()];
    if tls.client_ca.is_some() {
        // A resumed session carries the certificate of the handshake it resumes, unverified:
        // no resumption, so every connection's chain is checked against the current lists.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        revocations,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// How often the server's certificate and key files are looked at for a new version.
const SERVER_CERT_CHECK: Duration = Duration::from_secs(1);

/// The server's certificate and key, read again when their files change (session 43's review:
/// a certificate renewed in place, as cert-manager or certbot do, was served only after a
/// restart, and the old one until it expired). A new pair that does not load (half written, a
/// key for another certificate) is logged and the current one kept; the files are looked at
/// again when they change.
struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// What handshakes are served: read without a lock.
    served: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
    /// The files' last look, taken by one handshake at a time (the others serve what is there,
    /// not waiting for a read of a slow mount).
    check: Mutex<CertCheck>,
}

type CertStamps = (Option<Stamp>, Option<Stamp>);

struct CertCheck {
    /// The files as the pair served (or last refused) was read from them.
    stamps: CertStamps,
    /// New stamps seen at the last look: read only once a second look finds the same, so a
    /// file still being written (a chain without its intermediates) is never served.
    seen: Option<CertStamps>,
    checked: Instant,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    fn load(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsSetupError> {
        let stamps = (Stamp::of(&cert).ok(), Stamp::of(&key).ok());
        let certified = Self::read(&cert, &key, &provider)?;
        Ok(Self {
            cert,
            key,
            provider,
            served: arc_swap::ArcSwap::from_pointee(certified),
            check: Mutex::new(CertCheck {
                stamps,
                seen: None,
                checked: Instant::now(),
            }),
        })
    }

    fn read(
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<rustls::sign::CertifiedKey, TlsSetupError> {
        let chain = read_certs(cert)?;
        let der =
            PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsSetupError::Invalid {
                path: key.to_path_buf(),
                message: format!("no private key: {e}"),
            })?;
        rustls::sign::CertifiedKey::from_der(chain, der, provider).map_err(|e| {
            TlsSetupError::Invalid {
                path: cert.to_path_buf(),
                message: format!("certificate and key do not make an identity: {e}"),
            }
        })
    }

    /// The pair to serve, read again first if its files changed since they were last looked at
    /// (at most every [`SERVER_CERT_CHECK`]).
    fn served(&self) -> Arc<rustls::sign::CertifiedKey> {
        if let Ok(mut cur) = self.check.try_lock()
            && cur.checked.elapsed() >= SERVER_CERT_CHECK
        {
            cur.checked = Instant::now();
            let stamps = (Stamp::of(&self.cert).ok(), Stamp::of(&self.key).ok());
            if stamps == cur.stamps {
                cur.seen = None;
            } else if cur.seen != Some(stamps) {
                cur.seen = Some(stamps);
            } else {
                cur.seen = None;
                cur.stamps = stamps;
                match Self::read(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "the server's certificate was read again");
                        self.served.store(Arc::new(k));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the server's new certificate or key cannot be used; the current one is served")
                    }
                }
            }
        }
        self.served.load_full()
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.served())
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Invalid {
            path: path.to_path_buf(),
            message: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Invalid {
            path: path.to_path_buf(),
            message: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// What a client verifier is built from; built again with each new set of revocation lists.
struct ClientAuth {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    optional: bool,
}

impl ClientAuth {
    fn verifier(
        &self,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
        let with_crls = !crls.is_empty();
        let mut b =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .with_crls(crls);
        if with_crls {
            // Closed: a list past its next update no longer says what is revoked.
            b = b.enforce_revocation_expiration();
        }
        if self.optional {
            b = b.allow_unauthenticated();
        }
        b.build().map_err(|e| TlsSetupError::Rustls(e.to_string()))
    }
}

/// The client CA's checks of a client chain: with its revocation lists when configured (read
/// again whenever their file changes), else the CA and validity dates alone.
pub struct Revocations {
    /// The lists' file; `None`: no lists.
    path: Option<PathBuf>,
    client: ClientAuth,
    /// Without revocation lists: answers what does not depend on them (root hints, handshake
    /// signatures).
    base: Arc<dyn ClientCertVerifier>,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Current {
    stamp: Option<Stamp>,
    lists: Result<Arc<Lists>, String>,
    /// After a failed read of an unchanged file: when to read it again (a fix of its owner or
    /// mode changes no stamp). Not at every call: any peer's handshake would cost a read, a
    /// parse and an error line under the lock (a second review).
    retry_at: Option<Instant>,
}

/// How long a revocation file whose read failed is left before it is read again unchanged.
const CRL_RETRY: Duration = Duration::from_secs(30);

/// What tells a file's new contents from its old: a replacement (new inode), a write (size,
/// modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
    /// The inode's change time: a fix of the file's owner or mode changes it (and nothing
    /// else here), so a file that could not be read is read again.
    changed: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            inode: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// One reading of the file.
struct Lists {
    verifier: Arc<dyn ClientCertVerifier>,
    count: usize,
    /// Verdicts of calls, by a hash of the client's chain: when given, and what.
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
}

/// When a call's verdict on a chain was given, and what it was.
type Verdict = (Instant, Result<(), Revoked>);

/// Why a certificate-authenticated call is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// A certificate of the chain is on its issuer's list.
    Listed,
    /// The chain cannot be accepted for another reason: a list unreadable, missing for a CA
    /// of the chain, or past its next update; a certificate expired. The reason is for the
    /// log, not the caller (it may name server paths).
    Unknown(String),
}

impl Revocations {
    fn load(client: ClientAuth, path: PathBuf) -> Result<Self, TlsSetupError> {
        let stamp = Stamp::of(&path).map_err(|source| TlsSetupError::Read {
            path: path.clone(),
            source,
        })?;
        let lists = read_lists(&client, &path)?;
        tracing::info!(
            path = %path.display(),
            lists = lists.count,
            "client certificate revocation lists loaded"
        );
        Ok(Self {
            base: client.verifier(Vec::new())?,
            client,
            path: Some(path),
            current: Mutex::new(Current {
                stamp: Some(stamp),
                lists: Ok(Arc::new(lists)),
                retry_at: None,
            }),
        })
    }

    /// The checks without revocation lists.
    fn without_lists(client: ClientAuth) -> Result<Self, TlsSetupError> {
        let verifier = client.verifier(Vec::new())?;
        Ok(Self {
            base: verifier.clone(),
            client,
            path: None,
            current: Mutex::new(Current {
                stamp: None,
                retry_at: None,
                lists: Ok(Arc::new(Lists {
                    verifier,
                    count: 0,
                    verdicts: Mutex::default(),
                })),
            }),
        })
    }

    /// The lists as the file holds them now (read again if it changed), or why there are none.
    fn lists(&self) -> Result<Arc<Lists>, String> {
        let Some(path) = &self.path else {
            let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            return current.lists.clone();
        };
        let stamp = Stamp::of(path);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = match stamp {
            Ok(s) => s,
            Err(e) => {
                let why = format!("cannot read {}: {e}", path.display());
                if current.stamp.take().is_some() {
                    tracing::error!(error = %why, "client certificate revocation lists \
                        unreadable: refusing client certificates until they can be read");
                }
                current.lists = Err(why.clone());
                return Err(why);
            }
        };
        let retry = current.retry_at.is_some_and(|t| Instant::now() >= t);
        if current.stamp != Some(stamp) || retry {
            current.stamp = Some(stamp);
            current.retry_at = None;
            current.lists = match read_lists(&self.client, path) {
                Ok(l) => {
                    tracing::info!(
                        path = %path.display(),
                        lists = l.count,
                        "client certificate revocation lists reloaded"
                    );
                    Ok(Arc::new(l))
                }
                Err(e) => {
                    tracing::error!(error = %e, "client certificate revocation lists \
                        unreadable: refusing client certificates until they can be read");
                    // Read again in a while even unchanged: a fix that changes only the file's
                    // owner or mode (a new ctime, the same stamp) must not wait for a restart
                    // (a review).
                    current.retry_at = Some(Instant::now() + CRL_RETRY);
                    Err(e.to_string())
                }
            };
        }
        current.lists.clone()
    }

    /// Whether a client chain (leaf first) that passed a handshake may still authenticate a
    /// call: verified again, with the current lists, as at a handshake.
    pub fn check(&self, chain: &[CertificateDer<'_>]) -> Result<(), Revoked> {
        let lists = self.lists().map_err(Revoked::Unknown)?;
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Revoked::Unknown("no client certificate".into()));
        };
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for c in chain {
            h.update((c.len() as u64).to_be_bytes());
            h.update(c);
        }
        let key: [u8; 32] = h.finalize().into();
        if let Some((at, verdict)) = lists
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < RECHECK_AFTER
        {
            return verdict.clone();
        }
        let verdict = lists
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => {
                    Revoked::Listed
                }
                other => Revoked::Unknown(other.to_string()),
            });
        let mut verdicts = lists.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: each connection's chain is one entry; a full table starts over.
        if verdicts.len() >= 4096 {
            verdicts.clear();
        }
        verdicts.insert(key, (Instant::now(), verdict.clone()));
        verdict
    }
}

fn read_lists(client: &ClientAuth, path: &Path) -> Result<Lists, TlsSetupError> {
    let invalid = |message: String| TlsSetupError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let ders = CertificateRevocationListDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM revocation lists: {e}")))?;
    if ders.is_empty() {
        return Err(invalid(
            "holds no revocation list (PEM \"X509 CRL\")".into(),
        ));
    }
    let count = ders.len();
    // rustls parses the lists here: one it cannot read is reported now, not at a handshake.
    let verifier = client.verifier(ders).map_err(|e| invalid(e.to_string()))?;
    Ok(Lists {
        verifier,
        count,
        verdicts: Mutex::default(),
    })
}

impl ClientCertVerifier for Revocations {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.client.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.base.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let lists = self.lists().map_err(rustls::Error::General)?;
        lists
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}

/// Warns when the private key file may be read by every local account (the index and the
/// audit log are made private; a key is the admin's file, so it is only warned about). A key
/// its group reads (`root:ssl-cert 0640`, a Kubernetes secret with an `fsGroup`) is usual.
fn warn_if_shared(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(key)
        && m.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            path = %key.display(),
            mode = format!("{:o}", m.permissions().mode() & 0o777),
            "the TLS private key is readable by every local account; chmod o-r it"
        );
    }
}

/// The listener's connections after their TLS handshake, each handshake on its own task under
/// [`HANDSHAKE_TIMEOUT`]; accepting stops when `shutdown` is cancelled. A failed handshake is
/// logged at `debug` and costs nothing else.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    // Handshakes in progress hold a descriptor each for up to the timeout: bounded, so that a
    // peer opening idle connections cannot take every descriptor the index and connectors need
    // (a review). Connections beyond it are closed at once.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        while let Some((tcp, peer)) = accept(&listener, &shutdown).await {
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            // Small request/response pairs must not wait for delayed ACKs (Nagle).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => log_refusal(peer, &e),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The listener's connections without TLS (a loopback listener in development), until
/// `shutdown` is cancelled; accept errors are waited out as in [`incoming`] (tonic retries an
/// error of its incoming stream at once: out of descriptors, the accept loop spun on a core; a
/// review).
pub fn plain_incoming(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((tcp, _)) = accept(&listener, &shutdown).await {
            // Small request/response pairs must not wait for delayed ACKs (Nagle): ~40 ms per
            // call.
            let _ = tcp.set_nodelay(true);
            if tx.send(Ok(tcp)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The next connection, or `None` once `shutdown` is cancelled. An accept error (out of
/// descriptors and the like) is logged and waited out instead of retried at once; the server
/// keeps serving the connections it has.
async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection the daemon can close from its side, at the end of a stop's drain (session 43's
/// review: tonic serves each connection on a task of its own, which a peer holding a stream
/// open kept alive after the server stopped, and with it the daemon's state and index). Once
/// `closed` fires, every read and write fails.
pub struct Closable<IO> {
    inner: IO,
    closed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    aborted: bool,
}

impl<IO> Closable<IO> {
    pub fn new(inner: IO, closed: &CancellationToken) -> Self {
        Self {
            inner,
            // A token of its own: every connection's reads would otherwise wait on one lock.
            closed: Box::pin(closed.child_token().cancelled_owned()),
            aborted: false,
        }
    }

    fn aborted(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if !self.aborted && self.closed.as_mut().poll(cx).is_ready() {
            self.aborted = true;
        }
        self.aborted
    }
}

fn closed_by_the_daemon() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed: the daemon is stopping",
    )
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Closable<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.aborted(cx) {
            return std::task::Poll::Ready(Err(closed_by_the_daemon()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Closable<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.aborted(cx) {
            return std::task::Poll::Ready(Err(closed_by_the_daemon()));
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.aborted(cx) {
            return std::task::Poll::Ready(Err(closed_by_the_daemon()));
        }
        std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.aborted(cx) {
            return std::task::Poll::Ready(Err(closed_by_the_daemon()));
        }
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Closed: nothing more is sent (a TLS close_notify to a peer that reads nothing could
        // wait for ever).
        if this.aborted(cx) {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Closable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

fn log_refusal(peer: SocketAddr, e: &std::io::Error) {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)
            )
        });
    // Debug, as any peer can make one (a self-signed certificate): not a way to fill the log.
    if certificate {
        tracing::debug!(%peer, error = %e, "client certificate refused at the TLS handshake");
    } else {
        tracing::debug!(%peer, error = %e, "TLS handshake failed");
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DnType, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    use super::*;

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    /// (certificate PEM, key PEM, the chain a client presents).
    fn leaf(
        ca: &CertifiedIssuer<'static, KeyPair>,
        serial: u64,
    ) -> (String, String, Vec<CertificateDer<'static>>) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem(), vec![cert.der().clone()])
    }

    fn crl(
        ca: &CertifiedIssuer<'static, KeyPair>,
        revoked: &[u64],
        next: OffsetDateTime,
    ) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: next.min(now) - Duration::hours(1),
            next_update: next,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(ca)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// A TLS configuration in `dir` for a server with a certificate of `server`, client
    /// certificates from `clients`, and this revocation list file text.
    fn config(
        dir: &Path,
        server: &CertifiedIssuer<'static, KeyPair>,
        clients: &CertifiedIssuer<'static, KeyPair>,
        crl_text: &str,
    ) -> TlsConfig {
        let (cert, key, _) = leaf(server, 1);
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        TlsConfig {
            cert: file("server.pem", &cert),
            key: file("server.key", &key),
            client_ca: Some(file("clients-ca.pem", &clients.pem())),
            client_auth_required: true,
            client_crl: Some(file("clients.crl", crl_text)),
        }
    }

    #[test]
    fn a_file_that_holds_no_revocation_list_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (server, clients) = (ca("server"), ca("clients"));
        for text in ["", "garbage\n", &clients.pem()] {
            let e = server_tls(&config(dir.path(), &server, &clients, text))
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(
                matches!(&e, TlsSetupError::Invalid { path, .. } if path.ends_with("clients.crl")),
                "{e}"
            );
        }
        let tls = config(dir.path(), &server, &clients, "");
        std::fs::remove_file(tls.client_crl.as_ref().unwrap()).unwrap();
        assert!(matches!(
            server_tls(&tls).err(),
            Some(TlsSetupError::Read { .. })
        ));
    }

    #[test]
    fn a_certificate_is_allowed_only_by_a_current_list_of_its_own_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let (server, clients, other) = (ca("server"), ca("clients"), ca("other"));
        let (_, _, listed) = leaf(&clients, 7);
        let (_, _, unlisted) = leaf(&clients, 8);
        let tomorrow = OffsetDateTime::now_utc() + Duration::days(1);
        let tls = config(
            dir.path(),
            &server,
            &clients,
            &crl(&clients, &[7], tomorrow),
        );
        let r = server_tls(&tls).unwrap().revocations.unwrap();
        assert_eq!(r.check(&listed), Err(Revoked::Listed));
        assert_eq!(r.check(&unlisted), Ok(()));

        let path = tls.client_crl.as_ref().unwrap();
        let replace = |text: &str| {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        };
        // Another CA's list says nothing about this CA's certificates.
        replace(&crl(&other, &[], tomorrow));
        assert!(matches!(r.check(&unlisted), Err(Revoked::Unknown(_))));
        // Nor does this CA's list once past its next update.
        let past = OffsetDateTime::now_utc() - Duration::hours(1);
        replace(&crl(&clients, &[], past));
        assert!(matches!(r.check(&unlisted), Err(Revoked::Unknown(_))));
        // Nor a file gone.
        std::fs::remove_file(path).unwrap();
        assert!(matches!(r.check(&unlisted), Err(Revoked::Unknown(_))));
        // Both lists in one file: each certificate is checked against its own issuer's.
        replace(&(crl(&other, &[], tomorrow) + &crl(&clients, &[7, 9], tomorrow)));
        assert_eq!(r.check(&listed), Err(Revoked::Listed));
        assert_eq!(r.check(&unlisted), Ok(()));
        // A chain from a CA the server does not trust is no client's, whatever the lists say.
        let (_, _, others) = leaf(&other, 8);
        assert!(matches!(r.check(&others), Err(Revoked::Unknown(_))));
        // A list another CA signed in this CA's name is not this CA's list.
        let forged = ca("clients");
        replace(&crl(&forged, &[], tomorrow));
        assert!(matches!(r.check(&unlisted), Err(Revoked::Unknown(_))));
    }

    /// Session 34's review: without revocation lists a chain was verified at the handshake
    /// only, so a certificate that expired while its connection stayed open (HTTP/2 keeps it
    /// open for as long as the client pings) went on authenticating calls.
    #[test]
    fn without_lists_every_call_still_checks_the_chain_and_its_dates() {
        let dir = tempfile::tempdir().unwrap();
        let (server, clients, other) = (ca("server"), ca("clients"), ca("other"));
        let mut tls = config(dir.path(), &server, &clients, "");
        tls.client_crl = None;
        let r = server_tls(&tls)
            .unwrap()
            .revocations
            .expect("checked at every call without lists too");
        let (_, _, valid) = leaf(&clients, 3);
        assert_eq!(r.check(&valid), Ok(()));
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        p.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        let expired = p
            .signed_by(&KeyPair::generate().unwrap(), &clients)
            .unwrap();
        assert!(matches!(
            r.check(&[expired.der().clone()]),
            Err(Revoked::Unknown(_))
        ));
        let (_, _, foreign) = leaf(&other, 3);
        assert!(matches!(r.check(&foreign), Err(Revoked::Unknown(_))));
    }

    /// A resumed TLS session is not verified again (rustls carries the first handshake's
    /// certificate over), so a revoked certificate could go on connecting by resuming: the
    /// server with a client CA never resumes (found by a review of the revocation lists).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_with_client_certificates_are_never_resumed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls::ClientConfig;
        use tokio_rustls::rustls::pki_types::ServerName;
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let (server, clients) = (ca("server"), ca("clients"));
        let tomorrow = OffsetDateTime::now_utc() + Duration::days(1);
        let tls = config(dir.path(), &server, &clients, &crl(&clients, &[], tomorrow));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let mut accepted = incoming(
            listener,
            server_tls(&tls).unwrap().acceptor,
            shutdown.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(mut s)) = accepted.next().await {
                // After any session tickets: the client reads this, and with it the tickets.
                let _ = s.write_all(b"x").await;
                let _ = s.flush().await;
                tokio::spawn(async move {
                    let mut sink = [0u8; 1];
                    let _ = s.read(&mut sink).await;
                });
            }
        });
        let mut roots = RootCertStore::empty();
        roots.add(server.der().clone()).unwrap();
        let (cert, key, _) = leaf(&clients, 5);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        // One client config, so its session cache would offer the first session again.
        let client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut s = connector.connect(name, tcp).await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            kinds.push(s.get_ref().1.handshake_kind());
        }
        use tokio_rustls::rustls::HandshakeKind;
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Full)]
        );
        shutdown.cancel();
    }
}
