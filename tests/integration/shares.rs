//! Network shares end to end: a real smbd (Windows ACLs set with `smbcacls`) and a real
//! nfs-ganesha export (owners and modes), both started through `scripts/shares/*.sh`, crawled by
//! the daemon; answers, snippets, titles, uris and hit counts are checked per identity, and
//! permission changes and edits are followed.
//!
//! The example identities: alice (engineering), hana (people-leads → hr), felix (finance).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use docent_proto::v1 as pb;

use crate::harness::*;

const SMB_PASS: &str = "Passw0rd!";

fn script(name: &str) -> PathBuf {
    repo().join("scripts/shares").join(name)
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example config with the fs share replaced by `connector` (a TOML table body).
fn config_with(env: &Env, connector: &str) -> String {
    let text = env.config_text();
    let (head, _) = text.split_once("[[connectors]]").unwrap();
    format!("{head}[[connectors]]\n{connector}")
}

/// Distinct documents among the hits of a broad search (k = 50).
async fn readable(d: &Running, token: &str, query: &str) -> Vec<String> {
    let r = d.search(token, query, 50).await.unwrap();
    let mut uris: Vec<String> = r
        .hits
        .iter()
        .map(|h| {
            h.citation
                .as_ref()
                .unwrap()
                .uri
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    uris.sort();
    uris.dedup();
    uris
}

async fn answered(d: &Running, token: &str, q: &str, needle: &str) -> bool {
    let r = d.ask(token, q).await.unwrap();
    r.status == pb::AnswerStatus::Answered as i32 && r.answer.contains(needle)
}

/// Everything the caller receives for `q` (answer, citations, search hits) as one string.
async fn everything(d: &Running, token: &str, q: &str) -> String {
    let a = d.ask(token, q).await.unwrap();
    let s = d.search(token, q, 50).await.unwrap();
    format!("{} {a:?} {}", answer_text(&a), search_text(&s))
}

// ---------------------------------------------------------------------------------------------
// SMB

/// smbd on port 445 (smbcacls reaches no other port), stopped on drop.
struct Smbd {
    dir: tempfile::TempDir,
}

impl Smbd {
    fn start() -> Self {
        sh(Command::new("bash").arg(script("smb.sh")).arg("install"));
        // The SMB connector crate's tests use port 445 too; their smbd stops after their binary.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::net::TcpListener::bind("127.0.0.1:445").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "port 445 stays in use"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let dir = tempfile::tempdir().unwrap();
        sh(Command::new("bash")
            .arg(script("smb.sh"))
            .arg("start")
            .arg(dir.path())
            .arg("445")
            .env("SMB_WATCH_PID", std::process::id().to_string()));
        Self { dir }
    }

    fn share(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    fn client(&self, cmds: &str) {
        sh(Command::new("smbclient")
            .args(["-p", "445", "//127.0.0.1/docs", "-U"])
            .arg(format!("crawler%{SMB_PASS}"))
            .arg("-c")
            .arg(cmds));
    }

    fn put(&self, rel: &str, text: &str) {
        let local = self.dir.path().join("upload.tmp");
        std::fs::write(&local, text).unwrap();
        let mut cmds = String::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !self.share().join(&d).is_dir() {
                cmds.push_str(&format!("mkdir \"{d}\"; "));
            }
        }
        cmds.push_str(&format!("put \"{}\" \"{rel}\"", local.display()));
        self.client(&cmds);
    }

    fn mkdir(&self, rel: &str) {
        self.client(&format!("mkdir \"{rel}\""));
    }

    /// Sets the DACL of `rel` (SDDL).
    fn dacl(&self, rel: &str, sddl: &str) {
        sh(Command::new("smbcacls")
            .args(["//127.0.0.1/docs", rel, "-U"])
            .arg(format!("crawler%{SMB_PASS}"))
            .args(["--sddl", "--set", sddl]));
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("smb.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn unix_gid(name: &str) -> String {
    sh(Command::new("getent").arg("group").arg(name))
        .split(':')
        .nth(2)
        .unwrap()
        .to_string()
}

/// hana's domain SID in this test (mapped through `sid_principals`, as a Windows domain user's).
const HANA_SID: &str = "S-1-5-21-1111-2222-3333-1105";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smb_share_answers_follow_windows_acls_per_identity() {
    let s = Smbd::start();
    // smb.sh creates the Unix groups hr and eng; Docent calls engineering "engineering".
    let (hr, eng) = (unix_gid("hr"), unix_gid("eng"));
    s.put(
        "hr/salary-review.md",
        "# Salary review\n\nThe salary review budget for 2027 is 4.2 percent of payroll, decided by the pay committee.\n",
    );
    s.dacl("hr/salary-review.md", &format!("D:(A;;FR;;;S-1-22-2-{hr})"));
    s.put(
        "hr/promotions.md",
        "# Promotions\n\nThe promotion committee meets on the third Tuesday of March to rank candidates.\n",
    );
    // hr may read, except hana (a deny ACE for her domain SID).
    s.dacl(
        "hr/promotions.md",
        &format!("D:(D;;FR;;;{HANA_SID})(A;;FR;;;S-1-22-2-{hr})"),
    );
    // A folder whose inheritable ACE (read and execute: engineering may pass through it) new
    // files take…
    s.mkdir("eng");
    s.dacl("eng", &format!("D:(A;OICI;0x1200a9;;;S-1-22-2-{eng})"));
    s.put(
        "eng/oncall.md",
        "# On-call\n\nThe on-call rotation hands over every Monday at 10:00 through the pager bot.\n",
    );
    // …and a public file.
    s.put(
        "public/canteen.md",
        "# Canteen\n\nThe canteen serves mushroom lasagna every Wednesday at noon.\n",
    );
    s.dacl("public/canteen.md", "D:(A;;FR;;;S-1-1-0)");

    let env = Env::empty();
    let connector = format!(
        "type = \"smb\"\nid = \"share\"\nserver = \"127.0.0.1\"\nport = 445\nshare = \"docs\"\n\
         username = \"crawler\"\npassword = {SMB_PASS:?}\nreconcile_interval_secs = 3600\n\
         watch_debounce_ms = 100\n\
         sid_principals = {{ \"S-1-22-2-{eng}\" = \"group:engineering\", {HANA_SID:?} = \"user:hana\" }}\n"
    );
    let d = env
        .start_with(env.config_from(&config_with(&env, &connector)))
        .await;

    let broad = "salary review promotion committee on-call rotation canteen lasagna";
    assert_eq!(
        readable(&d, HANA, broad).await,
        ["canteen.md", "salary-review.md"],
        "hana: hr files except the one that denies her, and the public one"
    );
    assert_eq!(
        readable(&d, ALICE, broad).await,
        ["canteen.md", "oncall.md"],
        "alice: engineering (inherited ACE) and public"
    );
    assert_eq!(readable(&d, FELIX, broad).await, ["canteen.md"]);

    let salary = "What is the salary review budget for 2027?";
    assert!(answered(&d, HANA, salary, "4.2 percent").await);
    let r = d.ask(HANA, salary).await.unwrap();
    assert!(
        r.citations[0].uri == "smb://127.0.0.1/docs/hr/salary-review.md",
        "{:?}",
        r.citations
    );
    for token in [ALICE, FELIX] {
        let seen = everything(&d, token, salary).await;
        for secret in [
            "4.2 percent",
            "salary-review",
            "Salary review",
            "pay committee",
        ] {
            assert!(!seen.contains(secret), "{secret:?} leaked: {seen}");
        }
    }
    let promo = "When does the promotion committee meet?";
    let seen = everything(&d, HANA, promo).await;
    assert!(
        !seen.contains("third Tuesday") && !seen.contains("promotions.md"),
        "the deny ACE holds for hana: {seen}"
    );
    assert!(
        answered(
            &d,
            ALICE,
            "When does the on-call rotation hand over?",
            "Monday"
        )
        .await
    );
    assert!(
        answered(
            &d,
            FELIX,
            "What does the canteen serve on Wednesday?",
            "lasagna"
        )
        .await
    );

    // A new file is answered without a sync: the change notification brings it.
    s.put(
        "eng/standup.md",
        "# Stand-up\n\nThe engineering stand-up starts at 09:15 in the Tulip room.\n",
    );
    eventually(60, "the notified new file is answered", || async {
        answered(
            &d,
            ALICE,
            "Where does the engineering stand-up start?",
            "Tulip",
        )
        .await
    })
    .await;

    // An ACL-only change (the content is unchanged) is followed after one sync: the canteen
    // becomes hr's. (Samba does not notify ACL changes below the watched folder's own level.)
    s.dacl("public/canteen.md", &format!("D:(A;;FR;;;S-1-22-2-{hr})"));
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    admin
        .sync_now(authed(
            ADMIN,
            pb::SyncNowRequest {
                connector: "share".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    eventually(60, "the canteen ACL change is indexed", || async {
        !readable(&d, FELIX, broad)
            .await
            .contains(&"canteen.md".into())
    })
    .await;
    assert!(
        readable(&d, HANA, broad)
            .await
            .contains(&"canteen.md".into())
    );
    let seen = everything(&d, FELIX, "What does the canteen serve on Wednesday?").await;
    assert!(!seen.contains("lasagna"), "{seen}");
    d.stop().await;
}

// ---------------------------------------------------------------------------------------------
// NFS

const NFS_PASSWD: &str = "alice:x:3001:4002::/home/alice:/bin/sh\nhana:x:3002:4001::/home/hana:/bin/sh\nfelix:x:3003:4003::/home/felix:/bin/sh\n";
const NFS_GROUP: &str = "hr:x:4001:hana\nengineering:x:4002:alice\nfinance:x:4003:felix\n";

/// nfs-ganesha exporting `dir/export` (port 2049 is fixed: this is the binary's only NFS test).
struct Ganesha {
    dir: tempfile::TempDir,
}

impl Ganesha {
    fn start() -> Self {
        sh(Command::new("bash").arg(script("nfs.sh")).arg("install"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), NFS_PASSWD).unwrap();
        std::fs::write(dir.path().join("group"), NFS_GROUP).unwrap();
        sh(Command::new("bash")
            .arg(script("nfs.sh"))
            .arg("start")
            .arg(dir.path()));
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("export").join(rel)
    }

    fn put(&self, rel: &str, text: &str, uid: u32, gid: u32, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(&self, rel: &str, uid: u32, gid: u32, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(rel);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("nfs.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfs_export_answers_follow_owners_modes_edits_and_deletes() {
    let g = Ganesha::start();
    g.put(
        "hr/salary-review.md",
        "# Salary review\n\nThe salary review budget for 2027 is 4.2 percent of payroll, decided by the pay committee.\n",
        3002,
        4001,
        0o640,
    );
    g.put(
        "eng/oncall.md",
        "# On-call\n\nThe on-call rotation hands over every Monday at 10:00 through the pager bot.\n",
        3001,
        4002,
        0o640,
    );
    g.put(
        "public/canteen.md",
        "# Canteen\n\nThe canteen serves mushroom lasagna every Wednesday at noon.\n",
        3001,
        4002,
        0o644,
    );
    // World-readable by its own bits, but in a directory only hr may enter.
    g.put(
        "hr/parking-draft.md",
        "# Parking draft\n\nThe staff parking garage will charge a monthly fee from June.\n",
        3002,
        4001,
        0o644,
    );
    g.chown("hr", 3002, 4001, 0o750);
    let env = Env::empty();
    let connector = format!(
        "type = \"nfs\"\nid = \"nfs\"\nserver = \"127.0.0.1\"\nexport = {:?}\npasswd_file = {:?}\n\
         group_file = {:?}\nreconcile_interval_secs = 1\nretry_max_secs = 1\n",
        g.path("").display().to_string().trim_end_matches('/'),
        g.file("passwd"),
        g.file("group"),
    );
    let d = env
        .start_with(env.config_from(&config_with(&env, &connector)))
        .await;
    let broad = "salary review on-call rotation canteen lasagna";
    assert_eq!(
        readable(&d, HANA, broad).await,
        ["canteen.md", "parking-draft.md", "salary-review.md"]
    );
    // The parking draft's "other" bits do not let felix or alice past the hr directory.
    assert_eq!(
        readable(&d, ALICE, broad).await,
        ["canteen.md", "oncall.md"]
    );
    assert_eq!(readable(&d, FELIX, broad).await, ["canteen.md"]);
    let salary = "What is the salary review budget for 2027?";
    assert!(answered(&d, HANA, salary, "4.2 percent").await);
    let seen = everything(&d, FELIX, salary).await;
    for secret in ["4.2 percent", "salary-review", "Salary review"] {
        assert!(!seen.contains(secret), "{secret:?} leaked to felix: {seen}");
    }

    // An owner and mode change: the canteen becomes felix's and finance's (no "other" bits).
    g.chown("public/canteen.md", 3003, 4003, 0o640);
    eventually(60, "the mode change is indexed", || async {
        !readable(&d, ALICE, broad)
            .await
            .contains(&"canteen.md".into())
    })
    .await;
    assert!(
        answered(
            &d,
            FELIX,
            "What does the canteen serve on Wednesday?",
            "lasagna"
        )
        .await
    );

    // An edit and a delete follow.
    g.put(
        "eng/oncall.md",
        "# On-call\n\nThe on-call rotation hands over every Friday at 16:00 through the pager bot.\n",
        3001,
        4002,
        0o640,
    );
    std::fs::remove_file(g.path("hr/salary-review.md")).unwrap();
    std::fs::remove_file(g.path("hr/parking-draft.md")).unwrap();
    eventually(60, "the edit and the delete are indexed", || async {
        answered(
            &d,
            ALICE,
            "When does the on-call rotation hand over?",
            "Friday",
        )
        .await
            && readable(&d, HANA, broad).await.is_empty()
    })
    .await;
    assert!(!everything(&d, HANA, salary).await.contains("4.2 percent"));
    d.stop().await;
}
