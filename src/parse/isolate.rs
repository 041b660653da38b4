//! Parsing in a child process, for the formats whose third-party parsers can abort the process
//! on hostile input. PDF: lopdf parses nested objects recursively, pdf-extract follows form
//! XObjects without a cycle check, and both inflate a stream whole, without a bound. A stack
//! overflow or a failed allocation aborts the process; no `catch_unwind` can stop that.
//!
//! The child is this same executable, started with [`WORKER_ARG`] as its first argument (see
//! [`worker_main`]), with an empty environment and under rlimits: [`worker_memory`] of
//! address space (2 GiB, more for a large document), CPU seconds just past the deadline, no core file; on Linux it dies with its
//! parent. It reads a one-line JSON header (name, MIME type, text budget) and the document's
//! bytes on stdin, runs [`super::parse`], and writes the result as JSON on stdout. A child
//! that crashes, runs out of memory or overruns the deadline is killed, and its document alone
//! fails; the daemon goes on.
//!
//! The daemon names the executable at start ([`use_worker_process`]). Without it (library
//! users, benchmarks, this crate's unit tests) every format parses on a thread, as before.
//!
//! `unsafe`: `pre_exec`, `setrlimit` and `prctl` have no safe wrapper in the dependencies.

#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;

use super::{ParseError, ParseLimits, ParsedDoc};

/// First argument that turns the executable into a parser worker.
pub const WORKER_ARG: &str = "__docent-parse-worker";

/// Address space a parser process may map (its code, heap, and the parser thread's stack), for
/// a small document; a larger one gets [`WORKER_MEMORY_PER_BYTE`] more per byte of it.
pub const WORKER_MEMORY_BYTES: u64 = 2 << 30;

/// Address space per byte of the document, beyond [`WORKER_MEMORY_BYTES`]: the input, and
/// lopdf's objects, loaded twice (the page-tree check, then pdf-extract).
pub const WORKER_MEMORY_PER_BYTE: u64 = 8;

/// The address-space limit of the process parsing a document of `len` bytes, from `base`
/// ([`ParseLimits::worker_memory`]).
pub fn worker_memory(base: u64, len: usize) -> u64 {
    base.saturating_add((len as u64).saturating_mul(WORKER_MEMORY_PER_BYTE))
}

/// Longest header line the worker accepts.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

static WORKER: OnceLock<PathBuf> = OnceLock::new();

/// Parser processes running at once, at most one per core (at least two): each may map
/// [`worker_memory`], and concurrent pushes must not start one each.
fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        Slots::new(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
        )
    })
}

/// A counting semaphore for blocking threads.
struct Slots {
    max: usize,
    running: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A place among the running parser processes, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(max: usize) -> Self {
        Self {
            max,
            running: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits until `deadline` for a place.
    fn acquire(&self, deadline: std::time::Instant) -> Option<Slot<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= self.max {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *running += 1;
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

/// From now on this process parses the isolated formats by starting `exe` (this program:
/// `std::env::current_exe()`; its `main` must call [`worker_main`] first). Set once: later
/// calls are ignored.
pub fn use_worker_process(exe: PathBuf) {
    let _ = WORKER.set(exe);
}

/// The executable that parses isolated formats, when one is set.
pub fn worker_process() -> Option<&'static Path> {
    WORKER.get().map(PathBuf::as_path)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    name: String,
    mime: Option<String>,
    max_text_bytes: usize,
    /// Bytes of the document that follow the header.
    len: usize,
}

/// For `main`: when this process was started as a parser worker, parses the document on stdin,
/// writes the result on stdout and returns the exit code; otherwise `None` (start normally).
pub fn worker_main() -> Option<ExitCode> {
    if std::env::args_os().nth(1)? != WORKER_ARG {
        return None;
    }
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    if std::io::BufRead::read_until(&mut (&mut stdin).take(MAX_HEADER_BYTES), b'\n', &mut line)
        .is_err()
    {
        return Some(ExitCode::from(2));
    }
    let Ok(header) = serde_json::from_slice::<Header>(&line) else {
        return Some(ExitCode::from(2));
    };
    let mut bytes = Vec::with_capacity(header.len);
    if stdin.read_to_end(&mut bytes).is_err() {
        return Some(ExitCode::from(2));
    }
    // The parser gets the same stack as on the daemon's parser threads. A thread that cannot
    // start (its stack does not fit the memory limit) says nothing about the document: exit 2,
    // a transient failure.
    let Ok(thread) = std::thread::Builder::new()
        .stack_size(super::PARSER_STACK_BYTES)
        .spawn(move || {
            super::TEXT_BUDGET.with(|b| b.set(header.max_text_bytes));
            super::parse(&bytes, header.mime.as_deref(), &header.name)
        })
    else {
        return Some(ExitCode::from(2));
    };
    let parsed = thread.join().ok().unwrap_or_else(|| {
        Err(ParseError::Malformed(
            "the parser failed on this file".into(),
        ))
    });
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &parsed).map(|()| out.flush()) {
        Ok(Ok(())) => Some(ExitCode::SUCCESS),
        _ => Some(ExitCode::from(3)),
    }
}

/// Parses in a child process started from `exe` (see the module documentation).
pub(super) fn parse_in_child(
    exe: &Path,
    bytes: std::sync::Arc<Vec<u8>>,
    mime: Option<String>,
    name: String,
    limits: ParseLimits,
) -> Result<ParsedDoc, ParseError> {
    // Waiting for a place counts toward the deadline; with less than half of it left the
    // parse is not tried (a timeout then would blame the document for the wait).
    let started = std::time::Instant::now();
    let _slot = slots()
        .acquire(started + limits.timeout / 2)
        .ok_or_else(|| {
            ParseError::WorkerUnavailable(format!(
                "all {} parser processes stayed busy for {:?}",
                slots().max,
                limits.timeout / 2
            ))
        })?;
    // The error names the configured deadline; the child gets what is left of it.
    let timeout = limits.timeout;
    let limits = ParseLimits {
        timeout: limits.timeout.saturating_sub(started.elapsed()),
        ..limits
    };
    let mut cmd = Command::new(exe);
    cmd.arg(WORKER_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let cpu_seconds = limits.timeout.as_secs() + 2;
    let memory = worker_memory(limits.worker_memory, bytes.len());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only makes system calls (setrlimit, prctl),
        // which are async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || limit_child(cpu_seconds, memory));
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ParseError::WorkerUnavailable(format!("{}: {e}", exe.display())))?;
    let header = serde_json::to_vec(&Header {
        name,
        mime,
        max_text_bytes: limits.max_text_bytes,
        len: bytes.len(),
    })
    .expect("a header serializes");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // The child may die before it has read everything (then the write fails; its exit status
    // tells why), so the input is written on its own thread, beside the reader below.
    let writer = std::thread::Builder::new()
        .name("docent-parse-in".into())
        .spawn(move || {
            let _ = stdin
                .write_all(&header)
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.write_all(&bytes));
        });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    // Text, heading paths, JSON escapes and ~80 bytes of JSON per block (a PDF of table cells
    // has a block per few bytes of text): the budget bounds what a worker may say.
    let cap = (limits.max_text_bytes as u64).saturating_mul(32) + (1 << 20);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let reader = std::thread::Builder::new()
        .name("docent-parse-out".into())
        .spawn(move || {
            let mut out = Vec::new();
            let r = (&mut stdout).take(cap).read_to_end(&mut out);
            let _ = tx.send(r.map(|_| out));
        });
    if writer.is_err() || reader.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ParseError::WorkerUnavailable(
            "cannot start the threads that talk to the parser process".into(),
        ));
    }
    let out = match rx.recv_timeout(limits.timeout) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ParseError::Timeout(timeout));
        }
    };
    // The output ended (or hit the cap): the child has finished, or is killed now.
    let over_cap = matches!(&out, Ok(o) if o.len() as u64 >= cap);
    if over_cap {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| ParseError::WorkerUnavailable(e.to_string()))?;
    if over_cap {
        return Err(ParseError::TooMuchText {
            len: cap as usize,
            max: limits.max_text_bytes,
        });
    }
    // Exit codes 2 and 3: the worker could not read its input or write its result, which
    // says nothing about the document (a worker from another version of docent, say).
    if matches!(status.code(), Some(2 | 3)) {
        return Err(ParseError::WorkerUnavailable(format!(
            "the parser process failed to talk to the daemon ({status})"
        )));
    }
    if !status.success() {
        return Err(match crash_reason(status) {
            Some(why) => ParseError::Malformed(why),
            // Killed from outside (the OOM killer, an operator) or failing before it parsed
            // (a panic outside the parser, a loader error): not the document's doing.
            None => ParseError::WorkerUnavailable(format!("the parser process ended: {status}")),
        });
    }
    let out = out.map_err(|e| ParseError::WorkerUnavailable(e.to_string()))?;
    serde_json::from_slice::<Result<ParsedDoc, ParseError>>(&out).map_err(|_| {
        ParseError::WorkerUnavailable(
            "the parser process answered in a form this daemon does not read (was docent \
             replaced by another version?)"
                .into(),
        )
    })?
}

/// Why a worker that did not exit cleanly failed on its document, in words for the skip
/// report; `None` when its end says nothing about the document.
fn crash_reason(status: std::process::ExitStatus) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        let sig = status.signal()?;
        let what = match sig {
            libc::SIGSEGV | libc::SIGBUS => "a stack overflow or a memory fault",
            // Rust aborts on a failed allocation (the memory limit) and on a stack overflow.
            libc::SIGABRT => "its memory limit or a stack overflow",
            libc::SIGXCPU => "its CPU time limit",
            _ => return None,
        };
        Some(format!(
            "the parser crashed on this file ({what}, signal {sig})"
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}

/// In the child, before exec: the resource limits of a parser process.
#[cfg(unix)]
fn limit_child(cpu_seconds: u64, memory: u64) -> std::io::Result<()> {
    let set = |resource, limit: u64| {
        let l = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives across the call.
        if unsafe { libc::setrlimit(resource, &l) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_AS, memory)?;
    set(libc::RLIMIT_CPU, cpu_seconds)?;
    set(libc::RLIMIT_CORE, 0)?;
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        // The worker dies with the thread that started it (the daemon's, waiting on it).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: open, write and close are async-signal-safe system calls; the path and the value
    // are static byte strings.
    unsafe {
        // Under memory pressure the kernel's OOM killer takes the parser, not the daemon (a
        // process may raise its own score without privileges). Best effort: no /proc, no
        // change.
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"1000".as_ptr().cast(), 4);
            libc::close(fd);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Slots;

    /// A worker that cannot be started, or answers nothing readable, is not the document's
    /// fault: transient (its previous version stays), never "malformed".
    #[test]
    fn a_worker_that_cannot_run_or_answer_is_a_transient_failure() {
        let run = |exe: &str| {
            super::parse_in_child(
                std::path::Path::new(exe),
                b"%PDF-1.4".to_vec().into(),
                None,
                "a.pdf".into(),
                Default::default(),
            )
            .unwrap_err()
        };
        for exe in ["/nonexistent/docent", "/bin/true"] {
            let e = run(exe);
            assert!(e.is_transient(), "{exe}: {e:?}");
        }
    }

    /// Under memory pressure the OOM killer prefers the parser process to the daemon, and the
    /// parser's address space is the configured limit.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_parser_process_is_the_oom_killers_first_choice_within_its_memory_limit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("limits");
        let exe = dir.path().join("probe-worker");
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh
{{ cat /proc/self/oom_score_adj; ulimit -v; }} > {}
exit 2
",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let limits = crate::parse::ParseLimits {
            worker_memory: 1536 << 20,
            ..Default::default()
        };
        let document = b"%PDF-1.4".to_vec();
        let expected_kib = super::worker_memory(limits.worker_memory, document.len()) / 1024;
        let mut written = String::new();
        // A fork elsewhere in this test process may hold the script open for writing a moment
        // (ETXTBSY): try again.
        for _ in 0..6 {
            let e =
                super::parse_in_child(&exe, document.clone().into(), None, "a.pdf".into(), limits)
                    .unwrap_err();
            assert!(
                matches!(e, crate::parse::ParseError::WorkerUnavailable(_)),
                "{e:?}"
            );
            if let Ok(s) = std::fs::read_to_string(&out) {
                written = s;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines, ["1000", &expected_kib.to_string()], "{written:?}");
    }

    /// A parse past its deadline kills its process and waits for it: nothing keeps running
    /// (a parser thread could only be abandoned and counted as overdue).
    #[test]
    fn a_parse_past_its_deadline_kills_and_reaps_its_process() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let exe = dir.path().join("slow-worker");
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec /bin/sleep 30\n",
                pid_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Long enough for the shell to write its pid on a loaded machine.
        let limits = crate::parse::ParseLimits {
            timeout: Duration::from_secs(4),
            ..Default::default()
        };
        let run = || {
            super::parse_in_child(
                &exe,
                b"%PDF-1.4".to_vec().into(),
                None,
                "a.pdf".into(),
                limits,
            )
            .unwrap_err()
        };
        // A fork elsewhere in this test process may hold the script open for writing a moment
        // (ETXTBSY): try again.
        let mut e = run();
        for _ in 0..5 {
            if !matches!(&e, crate::parse::ParseError::WorkerUnavailable(m) if m.contains("busy")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            e = run();
        }
        assert_eq!(e, crate::parse::ParseError::Timeout(limits.timeout));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the process {} was killed and reaped",
            pid.trim()
        );
    }

    #[test]
    fn parser_processes_wait_for_a_free_place_until_their_deadline() {
        let slots = Slots::new(1);
        let soon = || Instant::now() + Duration::from_millis(20);
        let first = slots.acquire(soon()).expect("a free place");
        assert!(slots.acquire(soon()).is_none(), "full until the deadline");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                slots
                    .acquire(Instant::now() + Duration::from_secs(10))
                    .is_some()
            });
            std::thread::sleep(Duration::from_millis(20));
            drop(first);
            assert!(
                waiter.join().unwrap(),
                "a place given back goes to the waiter"
            );
        });
        assert!(slots.acquire(soon()).is_some());
    }
}
