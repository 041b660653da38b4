//! Wiki connectors end to end: a real wiki (started by the connector crates' test helpers,
//! through `scripts/wiki/*.sh`), the daemon crawling it, and answers that follow edits, deletes,
//! moves and restores after one poll.

use docent_proto::v1 as pb;

use crate::harness::*;

#[path = "../../connectors/mediawiki/tests/real_wiki/wiki.rs"]
#[allow(dead_code)]
mod mediawiki;

/// The example config with the fs share left out and a MediaWiki connector readable by staff.
fn mediawiki_config(env: &Env, url: &str) -> String {
    let text = env.config_text();
    let (head, _) = text.split_once("[[connectors]]").unwrap();
    format!(
        "{head}[[connectors]]\ntype = \"mediawiki\"\nid = \"wiki\"\nurl = {url:?}\nusername = {:?}\npassword = {:?}\npoll_interval_secs = 1\npermissions = \"group\"\ngroup = \"staff\"\n",
        mediawiki::BOT_USER,
        mediawiki::BOT_PASS
    )
}

async fn ask_text(d: &Running, token: &str, q: &str) -> pb::AskResponse {
    d.ask(token, q).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediawiki_pages_are_answered_and_follow_edits_deletes_moves_and_restores() {
    let wiki = mediawiki::Wiki::start().await;
    wiki.edit(
        "Bike storage",
        "Intro text.\n\n== Ghent office ==\nBicycles are stored in the basement rack behind door B2; the code is issued by reception.\n",
    )
    .await;
    wiki.edit("Canteen", "The canteen serves soup every Thursday at noon.")
        .await;
    let env = Env::empty();
    let d = env
        .start_with(env.config_from(&mediawiki_config(&env, &wiki.url)))
        .await;
    let q = "Where are bicycles stored at the Ghent office?";
    let r = ask_text(&d, ALICE, q).await;
    assert_eq!(r.status, pb::AnswerStatus::Answered as i32, "{r:?}");
    assert!(r.answer.contains("door B2"), "{}", r.answer);
    let c = &r.citations[0];
    assert!(
        c.uri
            .starts_with(&format!("{}/index.php?title=Bike", wiki.url))
            && c.uri.ends_with("#Ghent_office"),
        "a citation links to the page's section: {}",
        c.uri
    );
    assert_eq!(
        c.heading_path.last().map(String::as_str),
        Some("Ghent office")
    );

    // An edit: the answer changes after one poll.
    wiki.edit(
        "Bike storage",
        "Intro text.\n\n== Ghent office ==\nBicycles are stored in the courtyard shed next to door C4.\n",
    )
    .await;
    eventually(30, "the edit is answered", || async {
        ask_text(&d, ALICE, q).await.answer.contains("door C4")
    })
    .await;
    assert!(!answer_text(&ask_text(&d, ALICE, q).await).contains("door B2"));

    // A move: the old title is gone, the new one answers.
    wiki.move_page("Bike storage", "Bicycle parking", true)
        .await;
    eventually(30, "the move is indexed", || async {
        let r = d.search(ALICE, "courtyard shed door C4", 10).await.unwrap();
        let text = search_text(&r);
        text.contains("title=Bicycle") && !text.contains("title=Bike")
    })
    .await;

    // A delete: gone from answers, snippets and counts.
    let before = d.stats().await.documents;
    wiki.delete("Bicycle parking").await;
    eventually(30, "the delete is indexed", || async {
        d.stats().await.documents == before - 1
    })
    .await;
    let r = d
        .search(ALICE, "courtyard shed door C4 bicycles", 10)
        .await
        .unwrap();
    assert!(
        !search_text(&r).contains("courtyard"),
        "{}",
        search_text(&r)
    );
    assert!(!ask_text(&d, ALICE, q).await.answer.contains("door C4"));

    // A restore: back.
    wiki.undelete("Bicycle parking").await;
    eventually(30, "the restore is indexed", || async {
        ask_text(&d, ALICE, q).await.answer.contains("door C4")
    })
    .await;

    // The wiki's ACL is the configured group; an admin can see which entry decided.
    let id = wiki.page_id("Canteen").await.unwrap();
    let check = |user: &str| pb::CheckAccessRequest {
        user: user.into(),
        document_key: format!("wiki:{id}"),
    };
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    let yes = admin
        .check_access(authed(ADMIN, check("alice")))
        .await
        .unwrap()
        .into_inner();
    assert!(yes.allowed && yes.entry == "group:staff", "{yes:?}");
    let no = admin
        .check_access(authed(ADMIN, check("slack-bridge")))
        .await
        .unwrap()
        .into_inner();
    assert!(!no.allowed, "{no:?}");
    d.stop().await;
}

/// A private DokuWiki from `scripts/wiki/dokuwiki.sh` (its users and ACL rules are listed in the
/// script: `* @ALL 1`, `hr:* @ALL 0`, `hr:* @hr 1`, …); stopped when dropped.
struct DokuWiki {
    dir: tempfile::TempDir,
    url: String,
}

impl DokuWiki {
    fn start() -> Self {
        let script = repo().join("scripts/wiki/dokuwiki.sh");
        if !std::path::Path::new("/usr/share/dokuwiki/inc").is_dir() {
            let out = std::process::Command::new("bash")
                .arg(&script)
                .arg("install")
                .output()
                .unwrap();
            assert!(out.status.success(), "dokuwiki.sh install: {out:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        // A port found free can be taken before the server binds it (the suite starts many
        // servers): then another port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let out = std::process::Command::new("bash")
                .arg(&script)
                .args(["start", &dir.path().to_string_lossy(), &port.to_string()])
                .output()
                .unwrap();
            if out.status.success() {
                return Self {
                    dir,
                    url: format!("http://127.0.0.1:{port}"),
                };
            }
            failures.push(out);
        }
        panic!("dokuwiki.sh start: {failures:#?}");
    }

    fn admin(&self) -> docent_dokuwiki_connector::client::Client {
        docent_dokuwiki_connector::client::Client::new(
            &self.url,
            "admin",
            "admin-pass",
            Default::default(),
        )
        .unwrap()
    }
}

impl Drop for DokuWiki {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(repo().join("scripts/wiki/dokuwiki.sh"))
            .args(["stop", &self.dir.path().to_string_lossy()])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dokuwiki_acls_decide_who_is_answered_and_follow_rule_changes() {
    let wiki = DokuWiki::start();
    let admin = wiki.admin();
    admin
        .put_page(
            "hr:leave",
            "====== Parental leave ======\n===== Birth parents =====\nBirth parents at Fernhill receive twenty weeks of fully paid parental leave.\n",
            "seed",
        )
        .await
        .unwrap();
    admin
        .put_page(
            "start",
            "====== Canteen ======\nThe canteen serves vegetable soup every Thursday at noon.\n",
            "seed",
        )
        .await
        .unwrap();
    // A public page that includes an HR page: an include plugin would render the HR text with
    // the crawler's rights, so the page is not indexed at all.
    admin
        .put_page(
            "digest",
            "====== Weekly digest ======\nThe weekly digest collects the news of all teams.\n{{page>hr:leave}}\n",
            "seed",
        )
        .await
        .unwrap();
    let env = Env::empty();
    let text = env.config_text();
    let (head, _) = text.split_once("[[connectors]]").unwrap();
    let text = format!(
        "{head}[[connectors]]\ntype = \"dokuwiki\"\nid = \"dw\"\nurl = {:?}\nusername = \"admin\"\npassword = \"admin-pass\"\npoll_interval_secs = 1\n",
        wiki.url
    );
    let d = env.start_with(env.config_from(&text)).await;
    let q = "How many weeks of parental leave do birth parents receive?";

    // hr:* is for @hr: hana (people-leads → hr) is answered, alice (engineering) is not.
    let hr = d.ask(HANA, q).await.unwrap();
    assert_eq!(hr.status, pb::AnswerStatus::Answered as i32, "{hr:?}");
    assert!(hr.answer.contains("twenty weeks"), "{}", hr.answer);
    let c = &hr.citations[0];
    assert!(
        c.uri.ends_with("doku.php?id=hr:leave#birth_parents"),
        "{}",
        c.uri
    );
    let eng = d.ask(ALICE, q).await.unwrap();
    assert!(!answer_text(&eng).contains("twenty weeks"), "{eng:?}");
    let found = d
        .search(ALICE, "parental leave birth parents weeks", 100)
        .await
        .unwrap();
    assert!(
        !search_text(&found).contains("hr:leave"),
        "{}",
        search_text(&found)
    );
    assert!(search_text(&d.search(ALICE, "canteen soup", 10).await.unwrap()).contains("soup"));
    for who in [ALICE, HANA] {
        let digest = search_text(&d.search(who, "weekly digest news", 100).await.unwrap());
        assert!(!digest.contains("id=digest"), "{digest}");
    }

    // `docent admin can-read` explains the decision for the wiki document.
    let out = docent_async(
        &["admin", "can-read", "alice", "dw:hr:leave"],
        &d.url(),
        ADMIN,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("no: alice cannot read dw:hr:leave"),
        "{said}"
    );
    let out = docent_async(
        &["admin", "can-read", "hana", "dw:hr:leave"],
        &d.url(),
        ADMIN,
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("group:hr"));

    // An ACL rule added on the wiki opens the page to everyone within one poll.
    admin.add_acl("hr:leave", "@ALL", 1).await.unwrap();
    eventually(60, "the ACL change reaches the index", || async {
        d.ask(ALICE, q)
            .await
            .unwrap()
            .answer
            .contains("twenty weeks")
    })
    .await;
    d.stop().await;
}
