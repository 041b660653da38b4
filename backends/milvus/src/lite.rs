//! Starting a real Milvus Lite for tests and benchmarks (`scripts/milvus.sh`): one server per
//! process, on a free port, stopped (and its directory removed) by a detached watchdog once the
//! process is gone, however it ended (test binaries have no teardown hook).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// The checkout's root (this crate lives in `backends/milvus`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `scripts/milvus.sh install` puts milvus-lite (`DOCENT_PYENV` overrides).
pub fn pyenv() -> PathBuf {
    match std::env::var_os("DOCENT_PYENV") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/docent/pyenv")
        }
    }
}

/// The URI (`http://127.0.0.1:PORT`) of this process's Milvus Lite, started on first use with
/// its data under `tmp`. Panics with the fix when milvus-lite is not installed or does not start:
/// the tests that use it fail rather than skip.
pub fn shared_server(tmp: &Path) -> &'static str {
    static URI: OnceLock<String> = OnceLock::new();
    URI.get_or_init(|| {
        let lite = pyenv().join("bin/milvus-lite");
        assert!(
            lite.exists(),
            "milvus-lite is not installed ({} is missing): run `scripts/milvus.sh install` \
             (scripts/test.sh does) before these tests",
            lite.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tmp.join(format!("milvus-lite-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let uri = start(&dir, port);
        let script = repo_root().join("scripts/milvus.sh");
        // It outlives us, so there is nothing to wait for.
        #[allow(clippy::zombie_processes)]
        Command::new("bash")
            .arg("-c")
            .arg(
                r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; "$2" stop "$3"; rm -rf "$3""#,
            )
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&script)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the milvus watchdog");
        uri
    })
}

/// Starts (or finds running) a Milvus Lite with its data in `dir`, on `port`; returns its URI
/// once the port answers. Panics with the script's error when it cannot.
pub fn start(dir: &Path, port: u16) -> String {
    let t = Instant::now();
    let out = Command::new(repo_root().join("scripts/milvus.sh"))
        .arg("start")
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/milvus.sh start");
    assert!(
        out.status.success(),
        "scripts/milvus.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "milvus lite on port {port} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    format!("http://127.0.0.1:{port}")
}

/// Stops the Milvus Lite whose data is in `dir` (gracefully; its data stays).
pub fn stop(dir: &Path) {
    let _ = Command::new(repo_root().join("scripts/milvus.sh"))
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .output();
}
