//! A real MediaWiki for the tests, started with `scripts/wiki/mediawiki.sh` in a temporary
//! directory on a free port, and a client that seeds it through the API (as the bot password
//! the script creates, which may edit, move, delete and undelete).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The bot password `mediawiki.sh` creates (see the script's header).
pub const BOT_USER: &str = "Admin@docent";
pub const BOT_PASS: &str = "docentbotpassword000000000000000";

/// The script, from this crate's tests or from Docent's integration tests (which include this
/// file).
fn script() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let here = dir.join("scripts/wiki/mediawiki.sh");
    if here.exists() {
        here
    } else {
        dir.join("../../scripts/wiki/mediawiki.sh")
    }
}

/// Installs MediaWiki and PHP once per test binary when they are missing (the script is
/// idempotent); a machine that cannot install them fails here, with the reason.
fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        let present = std::path::Path::new("/usr/share/mediawiki/maintenance/install.php")
            .exists()
            && Command::new("php").arg("--version").output().is_ok();
        if present {
            return Ok(());
        }
        let out = Command::new("bash")
            .arg(script())
            .arg("install")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`scripts/wiki/mediawiki.sh install` failed (MediaWiki and PHP are needed for these tests; \
                 install them with it as root): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// One running wiki; stopped (and its directory removed) on drop.
pub struct Wiki {
    dir: tempfile::TempDir,
    port: u16,
    private: bool,
    pub url: String,
    client: reqwest::Client,
    csrf: String,
}

impl Wiki {
    /// A fresh public wiki (only "Main Page" exists).
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A fresh wiki that only logged-in users may read.
    pub async fn start_private() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(private: bool) -> Self {
        ensure_installed();
        // A port found free can be taken before the server binds it (the suite starts many
        // servers): then a fresh directory (the wiki's URL names its port) and another port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a temp dir");
            let port = free_port();
            let mut wiki = Self {
                dir,
                port,
                private,
                url: format!("http://127.0.0.1:{port}"),
                client: reqwest::Client::new(),
                csrf: String::new(),
            };
            match wiki.script("start") {
                Ok(()) => {
                    wiki.login().await;
                    return wiki;
                }
                Err(e) => failures.push(e),
            }
        }
        panic!("the wiki did not start: {failures:#?}");
    }

    fn run_script(&self, cmd: &str) {
        if let Err(e) = self.script(cmd) {
            panic!("{e}");
        }
    }

    fn script(&self, cmd: &str) -> Result<(), String> {
        let mut c = Command::new("bash");
        c.arg(script()).arg(cmd).arg(self.dir.path());
        if cmd == "start" {
            c.arg(self.port.to_string());
            if self.private {
                c.arg("--private");
            }
        }
        let out = c.output().expect("run mediawiki.sh");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "mediawiki.sh {cmd} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Moves the recent-changes and log rows of `title` to `secs` seconds before the newest
    /// other recent change, in the wiki's SQLite database (through PHP, which the wiki needs
    /// anyway): as MediaWiki writes them when an edit is saved before, and its rows land after,
    /// a poll of another edit.
    pub fn backdate_rows(&self, title: &str, secs: u32) {
        let db = self.dir.path().join("data/testwiki.sqlite");
        let php = format!(
            r#"$db = new PDO("sqlite:" . getenv("DB"));
            $q = $db->prepare("SELECT MAX(rc_timestamp) FROM recentchanges WHERE rc_title <> ?");
            $q->execute([getenv("TITLE")]);
            $d = DateTime::createFromFormat("YmdHis", $q->fetchColumn(), new DateTimeZone("UTC"));
            $d->modify("-{secs} seconds");
            $t = $d->format("YmdHis");
            $n = $db->prepare("UPDATE recentchanges SET rc_timestamp = ? WHERE rc_title = ?");
            $n->execute([$t, getenv("TITLE")]);
            $l = $db->prepare("UPDATE logging SET log_timestamp = ? WHERE log_title = ?");
            $l->execute([$t, getenv("TITLE")]);
            if ($n->rowCount() < 1) {{ fwrite(STDERR, "no recent change of the title"); exit(1); }}"#
        );
        let out = Command::new("php")
            .args(["-r", &php])
            .env("DB", &db)
            .env("TITLE", title.replace(' ', "_"))
            .output()
            .expect("run php");
        assert!(
            out.status.success(),
            "backdating {title}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the wiki's job queue (link and cache updates: a template's edit moves the `touched`
    /// time of the pages that use it there). The built-in server runs no jobs after API
    /// requests; a wiki in service runs them after page views or from cron.
    pub fn run_jobs(&self) {
        let out = Command::new("php")
            .arg("/usr/share/mediawiki/maintenance/runJobs.php")
            .env("MW_CONFIG_FILE", self.dir.path().join("LocalSettings.php"))
            .output()
            .expect("run runJobs.php");
        assert!(
            out.status.success(),
            "runJobs.php failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Appends `php` to the wiki's LocalSettings.php (read again by every request: the
    /// built-in server runs each request afresh).
    pub fn add_settings(&self, php: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("LocalSettings.php"))
            .expect("LocalSettings.php");
        writeln!(f, "\n{php}").expect("append to LocalSettings.php");
    }

    /// Stops the server (the wiki's data stays: `restart` serves it again).
    pub fn stop(&self) {
        self.run_script("stop");
    }

    pub async fn restart(&mut self) {
        self.run_script("start");
        self.login().await;
    }

    async fn login(&mut self) {
        // A fresh cookie store: MediaWiki refuses a login inside a live bot-password session.
        self.client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let t = self
            .get(&[("action", "query"), ("meta", "tokens"), ("type", "login")])
            .await;
        let token = t["query"]["tokens"]["logintoken"]
            .as_str()
            .unwrap()
            .to_string();
        let r = self
            .post(&[
                ("action", "login"),
                ("lgname", BOT_USER),
                ("lgpassword", BOT_PASS),
                ("lgtoken", &token),
            ])
            .await;
        assert_eq!(r["login"]["result"], "Success", "{r}");
        let t = self.get(&[("action", "query"), ("meta", "tokens")]).await;
        self.csrf = t["query"]["tokens"]["csrftoken"]
            .as_str()
            .unwrap()
            .to_string();
    }

    fn api(&self) -> String {
        format!("{}/api.php", self.url)
    }

    async fn get(&self, params: &[(&str, &str)]) -> Value {
        let mut p = params.to_vec();
        p.extend([("format", "json"), ("formatversion", "2")]);
        let r = self.client.get(self.api()).query(&p).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn post(&self, params: &[(&str, &str)]) -> Value {
        let mut p = params.to_vec();
        p.extend([("format", "json"), ("formatversion", "2")]);
        let r = self.client.post(self.api()).form(&p).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn write(&self, params: &[(&str, &str)]) -> Value {
        let mut p = params.to_vec();
        p.push(("token", &self.csrf));
        let r = self.post(&p).await;
        assert!(r.get("error").is_none(), "{params:?}: {r}");
        r
    }

    /// Creates or edits `title`; returns its page id.
    pub async fn edit(&self, title: &str, text: &str) -> u64 {
        let r = self
            .write(&[("action", "edit"), ("title", title), ("text", text)])
            .await;
        r["edit"]["pageid"].as_u64().unwrap()
    }

    pub async fn delete(&self, title: &str) {
        self.write(&[("action", "delete"), ("title", title)]).await;
    }

    pub async fn undelete(&self, title: &str) {
        self.write(&[("action", "undelete"), ("title", title)])
            .await;
    }

    /// Moves `from` to `to`, leaving a redirect behind when `redirect` is set.
    pub async fn move_page(&self, from: &str, to: &str, redirect: bool) {
        let mut p = vec![("action", "move"), ("from", from), ("to", to)];
        if !redirect {
            p.push(("noredirect", "1"));
        }
        self.write(&p).await;
    }

    /// The page id now at `title`, if a page is there.
    pub async fn page_id(&self, title: &str) -> Option<u64> {
        let r = self.get(&[("action", "query"), ("titles", title)]).await;
        r["query"]["pages"][0]["pageid"].as_u64()
    }

    /// The latest revision id of page `id`.
    pub async fn revision(&self, id: u64) -> u64 {
        let r = self
            .get(&[
                ("action", "query"),
                ("pageids", &id.to_string()),
                ("prop", "info"),
            ])
            .await;
        r["query"]["pages"][0]["lastrevid"].as_u64().unwrap()
    }
}

impl Drop for Wiki {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
