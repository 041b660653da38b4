//! A thin NFSv3 session over `nfs3_client`: mount through the portmapper, list directories with
//! READDIRPLUS, read files. Every call has a deadline (a server that stops answering must not hang
//! a sync forever).
//!
//! Errors come in two layers: the outer `Result` is the transport (the server is unreachable,
//! the connection broke, a call timed out: an outage, never a reason to delete), the inner one an
//! NFS status for one object (permission denied, stale handle: that object's problem).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::nfs3::{self, Nfs3Option, Nfs3Result, fattr3, nfs_fh3, nfsstat3};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::rpc::RpcClient;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{ConnectError, Nfs3Client, Nfs3ConnectionBuilder, RpcError};

use crate::NfsConfig;
use crate::nfsacl::{self, AccessList};

type Io = TokioIo<tokio::net::TcpStream>;

/// A transport failure: the server cannot be used right now.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    #[error("cannot resolve server {server:?}: {message}")]
    Resolve { server: String, message: String },
    #[error("cannot mount {export} on {server}: {message}")]
    Mount {
        server: String,
        export: String,
        message: String,
    },
    #[error("{op} {path:?} failed: {message}")]
    Rpc {
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("{op} {path:?} timed out after {secs} s")]
    Timeout {
        op: &'static str,
        path: String,
        secs: u64,
    },
}

/// One directory entry with the attributes READDIRPLUS brought along (or a LOOKUP filled in).
pub struct Entry {
    pub name: Vec<u8>,
    pub fh: nfs_fh3,
    pub attr: fattr3,
}

/// A directory's entries, and those the server listed without a handle or attributes and
/// then would not look up (their names, and why): failed (kept as they were indexed), or
/// refused to the crawler in a directory it may search (a mount point of a nested export that
/// refuses it: withdrawn).
#[derive(Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub failed: Vec<(Vec<u8>, nfsstat3)>,
    pub refused: Vec<(Vec<u8>, nfsstat3)>,
}

/// What a READ of a whole file gave: its bytes (at most `max + 1`) and the attributes the server
/// sent with the last reply.
pub struct ReadOutcome {
    pub data: Vec<u8>,
    /// The attributes of the last reply that carried them.
    pub attr: Option<fattr3>,
    /// Every reply's attributes agreed (size, mode, owner, group, modification and change
    /// time), the file ended where its size says, and no reply came back empty before the
    /// end: the bytes are one version of the file. Else it changed while it was read, and the
    /// text may be part old, part new, under the last reply's permissions.
    pub settled: bool,
}

/// Whether two attribute sets describe the same version of a file's content and access.
fn same_state(a: &fattr3, b: &fattr3) -> bool {
    (a.size, a.mode, a.uid, a.gid) == (b.size, b.mode, b.uid, b.gid)
        && (a.mtime.seconds, a.mtime.nseconds) == (b.mtime.seconds, b.mtime.nseconds)
        && (a.ctime.seconds, a.ctime.nseconds) == (b.ctime.seconds, b.ctime.nseconds)
}

pub struct Session {
    client: Nfs3Client<Io>,
    pub root: nfs_fh3,
    timeout: Duration,
    acl: AclChannel,
}

/// Connections for the NFSACL side protocol, opened as needed (up to [`ACL_CONNECTIONS`]).
struct AclChannel {
    addr: SocketAddr,
    privileged: bool,
    cred: opaque_auth<'static>,
    open: Vec<RpcClient<Io>>,
    /// The server does not offer it (why).
    unsupported: Option<String>,
}

/// At most this many NFSACL calls in flight, each on its own connection (the protocol's
/// client here waits for each reply before the next call).
const ACL_CONNECTIONS: usize = 8;

/// What the server says of an object's POSIX access list.
pub enum AclAnswer {
    List(AccessList),
    /// This object's own error (stale handle, refused).
    Refused(nfsstat3),
    /// The server does not offer the NFSACL protocol (why).
    Unsupported(String),
}

/// Up to this many bytes per READ (servers cap it at their own maximum).
const READ_CHUNK: u32 = 1024 * 1024;
/// READDIRPLUS reply size.
const DIR_CHUNK: u32 = 64 * 1024;

impl Session {
    pub async fn connect(cfg: &NfsConfig) -> Result<Self, NfsError> {
        let ip = resolve(&cfg.server).await?;
        let mount_err = |message: String| NfsError::Mount {
            server: cfg.server.clone(),
            export: cfg.export.clone(),
            message,
        };
        let mut privileged = cfg.privileged_port.unwrap_or(true);
        let conn = match mount(cfg, ip, privileged).await {
            // Not root: binding a port below 1024 is refused. In auto mode fall back to an
            // ordinary port (servers with `insecure` / `PrivilegedPort = false` accept it).
            Err(Some(ConnectError::Io(e)))
                if cfg.privileged_port.is_none()
                    && e.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                privileged = false;
                mount(cfg, ip, false).await
            }
            other => other,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(None) => {
                return Err(NfsError::Timeout {
                    op: "mount",
                    path: cfg.export.clone(),
                    secs: cfg.rpc_timeout.as_secs(),
                });
            }
            Err(Some(e)) => return Err(mount_err(e.to_string())),
        };
        let root = conn.root_nfs_fh3();
        // NFSACL is served on the NFS port (Linux, nfs-ganesha).
        let acl = AclChannel {
            addr: SocketAddr::new(ip, conn.nfs3_port),
            privileged,
            cred: credential(cfg),
            open: Vec::new(),
            unsupported: None,
        };
        Ok(Self {
            client: conn.into_nfs3_client(),
            root,
            timeout: cfg.rpc_timeout,
            acl,
        })
    }

    /// The objects' POSIX access lists, by the NFSACL protocol (`GETACL`), in the order
    /// given; `paths` name them in errors. Several calls are in flight at once.
    pub async fn access_lists(
        &mut self,
        fhs: &[&nfs_fh3],
        paths: &[&str],
    ) -> Result<Vec<AclAnswer>, NfsError> {
        let unsupported = |why: &str| {
            (0..fhs.len())
                .map(|_| AclAnswer::Unsupported(why.to_string()))
                .collect()
        };
        if let Some(why) = &self.acl.unsupported {
            return Ok(unsupported(why));
        }
        let secs = self.timeout.as_secs();
        let timeout = |i: usize| NfsError::Timeout {
            op: "getacl",
            path: paths[i].to_string(),
            secs,
        };
        let rpc_err = |i: usize, message: String| NfsError::Rpc {
            op: "getacl",
            path: paths[i].to_string(),
            message,
        };
        // One connection until the server has shown that it answers, then as many as the
        // batch can keep busy.
        let want = if self.acl.open.is_empty() {
            1
        } else {
            fhs.len().div_ceil(4).clamp(1, ACL_CONNECTIONS)
        };
        while self.acl.open.len() < want {
            let io =
                tokio::time::timeout(self.timeout, connect(self.acl.addr, self.acl.privileged))
                    .await
                    .map_err(|_| timeout(0))?
                    .map_err(|e| rpc_err(0, format!("cannot connect for NFSACL: {e}")))?;
            self.acl.open.push(RpcClient::new_with_auth(
                io,
                self.acl.cred.clone(),
                opaque_auth::default(),
            ));
        }
        let lanes = self.acl.open.len().min(fhs.len());
        let deadline = self.timeout;
        let (addr, privileged, cred) = (self.acl.addr, self.acl.privileged, &self.acl.cred);
        let calls = self.acl.open[..lanes]
            .iter_mut()
            .enumerate()
            .map(|(lane, rpc)| async move {
                let mut out = Vec::new();
                for i in (lane..fhs.len()).step_by(lanes) {
                    let args = nfsacl::GetAclArgs { fh: fhs[i] };
                    let mut r = getacl(rpc, &args, deadline).await;
                    // A connection the server closed while it sat idle (Linux drops idle ones
                    // after minutes): once more, on a new one.
                    if matches!(r, Ok(Err(RpcError::Io(_))))
                        && let Ok(Ok(io)) =
                            tokio::time::timeout(deadline, connect(addr, privileged)).await
                    {
                        *rpc = RpcClient::new_with_auth(io, cred.clone(), opaque_auth::default());
                        r = getacl(rpc, &args, deadline).await;
                    }
                    let failed = !matches!(r, Ok(Ok(_)));
                    out.push((i, r));
                    // A connection's state is unknown after a failure.
                    if failed {
                        break;
                    }
                }
                out
            });
        let mut replies: Vec<Option<nfsacl::RawReply>> = (0..fhs.len()).map(|_| None).collect();
        for (i, r) in futures::future::join_all(calls).await.into_iter().flatten() {
            match r {
                Ok(Ok(reply)) => replies[i] = Some(reply),
                Ok(Err(e)) if not_offered(&e) => {
                    let why = format!("the server does not offer NFSACL version 3 ({e})");
                    self.acl.open.clear();
                    let all = unsupported(&why);
                    self.acl.unsupported = Some(why);
                    return Ok(all);
                }
                // The sync ends as an outage; the next one opens new connections.
                Ok(Err(e)) => {
                    self.acl.open.clear();
                    return Err(rpc_err(i, e.to_string()));
                }
                Err(_) => {
                    self.acl.open.clear();
                    return Err(timeout(i));
                }
            }
        }
        replies
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let r = r.expect("every call answered or ended the batch");
                match nfsacl::parse_getacl(&r.0) {
                    Ok(Ok(list)) => Ok(AclAnswer::List(list)),
                    Ok(Err(stat)) => Ok(AclAnswer::Refused(stat)),
                    Err(e) => Err(rpc_err(i, format!("malformed NFSACL reply: {e}"))),
                }
            })
            .collect()
    }

    pub async fn lookup(
        &mut self,
        dir: &nfs_fh3,
        name: &[u8],
        path: &str,
    ) -> Result<Result<(nfs_fh3, Option<fattr3>), nfsstat3>, NfsError> {
        let timeout = self.timeout;
        let args = nfs3::LOOKUP3args {
            what: nfs3::diropargs3 {
                dir: dir.clone(),
                name: nfs3::filename3(Opaque::borrowed(name)),
            },
        };
        let res = with_deadline(timeout, "lookup", path, self.client.lookup(&args)).await?;
        Ok(match res {
            Nfs3Result::Ok(ok) => Ok((ok.object, option(ok.obj_attributes))),
            Nfs3Result::Err((stat, _)) => Err(stat),
        })
    }

    /// Whether the server lets the crawler search `dir` (ACCESS3 with LOOKUP). An answer that
    /// does not say counts as no (the refusal is then the directory's, as before).
    async fn may_search(&mut self, dir: &nfs_fh3, path: &str) -> Result<bool, NfsError> {
        let args = nfs3::ACCESS3args {
            object: dir.clone(),
            access: nfs3::ACCESS3_LOOKUP,
        };
        let res = with_deadline(self.timeout, "access", path, self.client.access(&args)).await?;
        Ok(match res {
            Nfs3Result::Ok(ok) => ok.access & nfs3::ACCESS3_LOOKUP != 0,
            Nfs3Result::Err(_) => false,
        })
    }

    /// Whether the server answers for the export's root now (GETATTR): after one object's
    /// error, it tells that object's trouble from an outage.
    pub async fn answers(&mut self) -> bool {
        let root = self.root.clone();
        matches!(self.getattr(&root, "").await, Ok(Ok(_)))
    }

    pub async fn getattr(
        &mut self,
        fh: &nfs_fh3,
        path: &str,
    ) -> Result<Result<fattr3, nfsstat3>, NfsError> {
        let args = nfs3::GETATTR3args { object: fh.clone() };
        let res = with_deadline(self.timeout, "getattr", path, self.client.getattr(&args)).await?;
        Ok(match res {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
            Nfs3Result::Err((stat, _)) => Err(stat),
        })
    }

    /// Every entry of a directory but `.` and `..`, following READDIRPLUS cookies to the end.
    /// An entry the server left without its handle or attributes, and then would not look up
    /// (an I/O error on its inode), is that entry's failure, not the directory's (a review: one
    /// such entry left its whole directory unlisted at every sync, and at the top of the export
    /// failed every sync). One refused to the crawler is the directory's refusal when the
    /// crawler may not search the directory (ACCESS), else that entry's (`Listing::refused`).
    pub async fn list(
        &mut self,
        dir: &nfs_fh3,
        path: &str,
    ) -> Result<Result<Listing, nfsstat3>, NfsError> {
        let mut out = Listing::default();
        // Whether the crawler may search `dir` (ACCESS3 LOOKUP), asked at the first refused
        // lookup: a refusal in a directory it may not search is the directory's (`r--`
        // without `x`: every lookup is refused), else the entry's alone (a third review).
        let mut searchable: Option<bool> = None;
        let mut cookie = 0;
        let mut cookieverf = nfs3::cookieverf3::default();
        let mut pages = Pages::default();
        loop {
            let args = nfs3::READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf,
                dircount: DIR_CHUNK,
                maxcount: DIR_CHUNK * 4,
            };
            let res = with_deadline(
                self.timeout,
                "readdirplus",
                path,
                self.client.readdirplus(&args),
            )
            .await?;
            let ok = match res {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((stat, _)) => return Ok(Err(stat)),
            };
            cookieverf = ok.cookieverf;
            let eof = ok.reply.eof;
            let entries = ok.reply.entries.into_inner();
            let next = pages.after(entries.last().map(|e| e.cookie), eof, entries.len());
            for e in entries {
                let name = e.name.0.as_ref().to_vec();
                if name == b"." || name == b".." {
                    continue;
                }
                let (fh, attr) = match (e.name_handle, e.name_attributes) {
                    (Nfs3Option::Some(fh), Nfs3Option::Some(attr)) => (fh, attr),
                    // The server left something out: ask for it.
                    _ => {
                        let child = join(path, &String::from_utf8_lossy(&name));
                        match self.lookup(dir, &name, &child).await? {
                            Ok((fh, Some(attr))) => (fh, attr),
                            Ok((fh, None)) => match self.getattr(&fh, &child).await? {
                                Ok(attr) => (fh, attr),
                                Err(nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_STALE) => continue,
                                // Looked up, so the directory is searchable: the entry's own.
                                Err(stat) if refused(stat) => {
                                    out.refused.push((name, stat));
                                    continue;
                                }
                                Err(stat) => {
                                    out.failed.push((name, stat));
                                    continue;
                                }
                            },
                            // Gone between the listing and the lookup.
                            Err(nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_STALE) => continue,
                            // A directory the crawler may list but not search (`r--` without
                            // `x`): the directory's refusal, withdrawn as before (a second
                            // review: kept as one entry's trouble, its documents stayed under
                            // their old ACL).
                            Err(stat) if refused(stat) => {
                                let may_search = match searchable {
                                    Some(s) => s,
                                    None => {
                                        let s = self.may_search(dir, path).await?;
                                        searchable = Some(s);
                                        s
                                    }
                                };
                                if !may_search {
                                    return Ok(Err(stat));
                                }
                                out.refused.push((name, stat));
                                continue;
                            }
                            Err(stat) => {
                                out.failed.push((name, stat));
                                continue;
                            }
                        }
                    }
                };
                out.entries.push(Entry { name, fh, attr });
            }
            match next {
                Next::From(c) => cookie = c,
                Next::Done => break,
                // Taking the listing as complete would read as the rest of the folder
                // deleted: the folder is unlisted, and what is indexed under it stays.
                Next::Stuck(why) => {
                    tracing::warn!(
                        dir = %docent_connector_api::log_safe(path),
                        "{why}: the directory is left unlisted"
                    );
                    return Ok(Err(nfsstat3::NFS3ERR_TOOSMALL));
                }
            }
        }
        Ok(Ok(out))
    }

    /// Reads a file from the start until EOF or until more than `max` bytes arrived.
    pub async fn read(
        &mut self,
        fh: &nfs_fh3,
        max: u64,
        path: &str,
    ) -> Result<Result<ReadOutcome, nfsstat3>, NfsError> {
        let mut data = Vec::new();
        let mut attr: Option<fattr3> = None;
        let mut settled = true;
        let mut eof = false;
        loop {
            let args = nfs3::READ3args {
                file: fh.clone(),
                offset: data.len() as u64,
                // Never more than one byte past `max`: that byte is enough to tell "too large".
                count: (max + 1)
                    .saturating_sub(data.len() as u64)
                    .clamp(1, u64::from(READ_CHUNK)) as u32,
            };
            let res = with_deadline(self.timeout, "read", path, self.client.read(&args)).await?;
            let ok = match res {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((stat, _)) => return Ok(Err(stat)),
            };
            if let Some(a) = option(ok.file_attributes) {
                settled &= attr.as_ref().is_none_or(|before| same_state(before, &a));
                attr = Some(a);
            }
            let chunk = ok.data.as_ref();
            data.extend_from_slice(chunk);
            if ok.eof {
                eof = true;
                break;
            }
            if data.len() as u64 > max {
                break;
            }
            if chunk.is_empty() {
                // Shorter than it was (truncated while read), or a server that stopped.
                settled = false;
                break;
            }
        }
        // A whole read ends at the file's size.
        if eof && let Some(a) = &attr {
            settled &= a.size == data.len() as u64;
        }
        Ok(Ok(ReadOutcome {
            data,
            attr,
            settled,
        }))
    }
}

/// A refusal to the crawler (not a failure of the object).
fn refused(stat: nfsstat3) -> bool {
    matches!(stat, nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM)
}

async fn with_deadline<T, E: std::fmt::Display>(
    timeout: Duration,
    op: &'static str,
    path: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, NfsError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(NfsError::Rpc {
            op,
            path: path.to_string(),
            message: e.to_string(),
        }),
        Err(_) => Err(NfsError::Timeout {
            op,
            path: path.to_string(),
            secs: timeout.as_secs(),
        }),
    }
}

/// Mounts the export; `Err(None)` is a timeout.
async fn mount(
    cfg: &NfsConfig,
    ip: IpAddr,
    privileged: bool,
) -> Result<nfs3_client::Nfs3Connection<Io>, Option<ConnectError>> {
    let mut b = Nfs3ConnectionBuilder::new(TokioConnector, ip.to_string(), &cfg.export)
        .portmapper_port(cfg.portmapper_port)
        .connect_from_privileged_port(privileged)
        .credential(credential(cfg));
    if let Some(p) = cfg.mount_port {
        b = b.mount_port(p);
    }
    if let Some(p) = cfg.port {
        b = b.nfs3_port(p);
    }
    match tokio::time::timeout(cfg.rpc_timeout, b.mount()).await {
        Ok(r) => r.map_err(Some),
        Err(_) => Err(None),
    }
}

/// One `GETACL` call within `deadline` (`Err(Elapsed)` past it).
async fn getacl(
    rpc: &mut RpcClient<Io>,
    args: &nfsacl::GetAclArgs<'_>,
    deadline: Duration,
) -> Result<Result<nfsacl::RawReply, RpcError>, tokio::time::error::Elapsed> {
    let call =
        rpc.call::<_, nfsacl::RawReply>(nfsacl::PROGRAM, nfsacl::VERSION, nfsacl::GETACL, args);
    tokio::time::timeout(deadline, call).await
}

/// Whether an RPC error says the server does not offer the program, version or procedure
/// (rather than that the call failed).
fn not_offered(e: &RpcError) -> bool {
    matches!(
        e,
        RpcError::ProgUnavail | RpcError::ProgMismatch { .. } | RpcError::ProcUnavail
    )
}

/// The crawler's AUTH_SYS identity.
fn credential(cfg: &NfsConfig) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 0,
        machinename: Opaque::borrowed(b"docent"),
        uid: cfg.uid,
        gid: cfg.gid,
        gids: cfg.gids.clone(),
    })
}

/// A TCP connection to `addr`, from a port below 1024 when `privileged` (as the mount's were).
async fn connect(addr: SocketAddr, privileged: bool) -> std::io::Result<Io> {
    if !privileged {
        return TokioConnector.connect(addr).await;
    }
    let mut last = None;
    for port in (600..1024).rev() {
        match TokioConnector.connect_with_port(addr, port).await {
            Ok(io) => return Ok(io),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port below 1024")))
}

async fn resolve(server: &str) -> Result<IpAddr, NfsError> {
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok(ip);
    }
    let err = |message: String| NfsError::Resolve {
        server: server.to_string(),
        message,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((server, 0))
        .await
        .map_err(|e| err(e.to_string()))?
        .collect();
    // The privileged-port connector binds IPv4 sockets: prefer an IPv4 address.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(|a| a.ip())
        .ok_or_else(|| err("no address".into()))
}

fn option<
    T: nfs3_client::nfs3_types::xdr_codec::Pack + nfs3_client::nfs3_types::xdr_codec::Unpack,
>(
    o: Nfs3Option<T>,
) -> Option<T> {
    match o {
        Nfs3Option::Some(v) => Some(v),
        Nfs3Option::None => None,
    }
}

/// The most entries one directory listing may hold (about 200 MiB of names, handles and
/// attributes): a server that keeps sending new cookies must not grow a listing without end.
const MAX_LISTED: usize = 1 << 20;

/// Where a READDIRPLUS listing goes after a reply.
#[derive(Debug, PartialEq)]
enum Next {
    /// Ask again from this cookie.
    From(u64),
    /// The server said the listing is complete.
    Done,
    /// The listing cannot go on (the reason).
    Stuck(&'static str),
}

/// The cookies a listing was sent on from, and how many entries it holds: a server that sends a
/// cookie it already sent (or none, or the start) would have the listing go round for ever.
#[derive(Default)]
struct Pages {
    seen: std::collections::HashSet<u64>,
    entries: usize,
}

impl Pages {
    fn after(&mut self, last: Option<u64>, eof: bool, entries: usize) -> Next {
        self.entries = self.entries.saturating_add(entries);
        if self.entries > MAX_LISTED {
            return Next::Stuck("more entries than one listing may hold");
        }
        if eof {
            return Next::Done;
        }
        match last {
            None => Next::Stuck("a reply with no entry that does not end the listing"),
            Some(0) => Next::Stuck("a cookie that starts the listing again"),
            Some(c) if !self.seen.insert(c) => Next::Stuck("a cookie the server already sent"),
            Some(c) => Next::From(c),
        }
    }
}

/// `dir/name`, or `name` at the top.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tells a read that the file changed under it: its size, mode, owner, group,
    /// modification or change time; not its access time.
    #[test]
    fn a_file_changed_between_two_replies_is_not_the_same_state() {
        use nfs3_client::nfs3_types::nfs3::{ftype3, nfstime3, specdata3};
        let t = nfstime3 {
            seconds: 100,
            nseconds: 5,
        };
        let a = fattr3 {
            type_: ftype3::NF3REG,
            mode: 0o600,
            nlink: 1,
            uid: 1001,
            gid: 2001,
            size: 5 << 20,
            used: 0,
            rdev: specdata3 {
                specdata1: 0,
                specdata2: 0,
            },
            fsid: 0,
            fileid: 7,
            atime: t,
            mtime: t,
            ctime: t,
        };
        let mut b = a.clone();
        b.atime.seconds += 9;
        assert!(same_state(&a, &b));
        let changes: [fn(&mut fattr3); 6] = [
            |x| x.mode = 0o644,
            |x| x.size += 1,
            |x| x.uid = 0,
            |x| x.gid = 0,
            |x| x.mtime.nseconds += 1,
            |x| x.ctime.seconds += 1,
        ];
        for change in changes {
            let mut b = a.clone();
            change(&mut b);
            assert!(!same_state(&a, &b), "{b:?}");
        }
    }

    #[test]
    fn a_listing_follows_new_cookies_to_the_end() {
        let mut p = Pages::default();
        assert_eq!(p.after(Some(7), false, 3), Next::From(7));
        assert_eq!(p.after(Some(9), false, 2), Next::From(9));
        assert_eq!(p.after(Some(9), true, 1), Next::Done);
        // An empty last page that ends the listing is complete.
        assert_eq!(Pages::default().after(None, true, 0), Next::Done);
    }

    #[test]
    fn a_repeated_cookie_stops_the_listing_instead_of_looping() {
        let mut p = Pages::default();
        assert_eq!(p.after(Some(7), false, 3), Next::From(7));
        assert_eq!(p.after(Some(8), false, 3), Next::From(8));
        assert!(matches!(p.after(Some(7), false, 3), Next::Stuck(_)));
        assert!(matches!(
            Pages::default().after(Some(0), false, 1),
            Next::Stuck(_)
        ));
        assert!(matches!(
            Pages::default().after(None, false, 0),
            Next::Stuck(_)
        ));
    }

    #[test]
    fn a_listing_stops_past_its_entry_bound() {
        let mut p = Pages::default();
        let mut next = Next::From(0);
        for cookie in 1..=(MAX_LISTED / 1000 + 1) as u64 {
            next = p.after(Some(cookie), false, 1000);
        }
        assert!(matches!(next, Next::Stuck(_)), "{next:?}");
        assert!(matches!(
            Pages::default().after(Some(1), true, MAX_LISTED + 1),
            Next::Stuck(_)
        ));
    }

    #[test]
    fn only_an_unoffered_program_version_or_procedure_means_no_nfsacl() {
        assert!(not_offered(&RpcError::ProgUnavail));
        assert!(not_offered(&RpcError::ProgMismatch { low: 2, high: 2 }));
        assert!(not_offered(&RpcError::ProcUnavail));
        assert!(!not_offered(&RpcError::GarbageArgs));
        assert!(!not_offered(&RpcError::SystemErr));
        assert!(!not_offered(&RpcError::Io(std::io::Error::other("reset"))));
    }
}
