//! Attack tests: each reproduction of the outside security review (issue 9) kept against a real
//! daemon, so the class of bug stays closed. Each test is named after what the attacker tried.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use docent::embed::{EmbedError, Embedder};

use docent_proto::v1 as pb;
use tonic::Code;

use crate::harness::*;

/// A figure only `hr/compensation-bands-2027.md` holds.
const SALARY: &str = "148,000";
/// A marker only the secret file outside the roots holds.
const SECRET: &str = "zqxhmackeymaterial";

fn key(env: &Env, rel: &str) -> String {
    let root = env.corpus().canonicalize().unwrap();
    format!("share:{}", root.join(rel).display())
}

/// `company/bands.md` and `hr/bands-link.md` → the HR salary bands; `company/keys.md` → a
/// mode-600 secret outside the crawled roots (as a JWKS with an HMAC key would be).
fn plant_links(env: &Env) {
    let secret = env.dir.path().join("jwks.json");
    std::fs::write(
        &secret,
        format!("{{\"keys\": [{{\"kty\": \"oct\", \"k\": \"{SECRET}\"}}]}}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = env.corpus();
    std::os::unix::fs::symlink(
        c.join("hr/compensation-bands-2027.md"),
        c.join("company/bands.md"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        c.join("hr/compensation-bands-2027.md"),
        c.join("hr/bands-link.md"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, c.join("company/keys.md")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_not_followed_by_default() {
    let env = Env::example();
    plant_links(&env);
    let d = env.start().await;
    let index = &d.daemon.state().index;
    assert!(index.doc_entry(&key(&env, "company/bands.md")).is_none());
    assert!(index.doc_entry(&key(&env, "hr/bands-link.md")).is_none());
    assert!(index.doc_entry(&key(&env, "company/keys.md")).is_none());
    let r = d
        .search(ALICE, "Senior Software Engineer salary band relocation", 20)
        .await
        .unwrap();
    assert!(!search_text(&r).contains(SALARY), "{}", search_text(&r));
    let r = d.search(ADMIN, SECRET, 20).await.unwrap();
    assert!(!search_text(&r).contains(SECRET));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_symlinks_take_the_targets_acl_and_stay_inside_the_roots() {
    let env = Env::example();
    plant_links(&env);
    let text = replaced(
        &env.config_text(),
        "follow_symlinks = false",
        "follow_symlinks = true",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let index = &d.daemon.state().index;
    // A link in hr/ to hr's file is indexed under the target's ACL.
    let link = index
        .doc_entry(&key(&env, "hr/bands-link.md"))
        .expect("a link inside the roots is followed");
    assert_eq!(
        link.acl,
        index
            .doc_entry(&key(&env, "hr/compensation-bands-2027.md"))
            .unwrap()
            .acl
    );
    let r = d
        .search(ALICE, "Senior Software Engineer salary band relocation", 20)
        .await
        .unwrap();
    assert!(!search_text(&r).contains(SALARY), "{}", search_text(&r));
    let r = d
        .search(HANA, "Senior Software Engineer salary band relocation", 20)
        .await
        .unwrap();
    assert!(search_text(&r).contains("hr/bands-link.md"));
    // One in company/ (staff's, by the rules) to hr's file has no reader who may both see its
    // name and read its target (principals are matched as named): skipped, with that reason
    // (session 44; before, it took the target's ACL, and its name showed to hr's members).
    assert!(index.doc_entry(&key(&env, "company/bands.md")).is_none());
    // The link leaving the roots is skipped with its reason, never indexed.
    assert!(index.doc_entry(&key(&env, "company/keys.md")).is_none());
    let r = d.search(ADMIN, SECRET, 20).await.unwrap();
    assert!(!search_text(&r).contains(SECRET));
    let share = d.connectors().await.connectors.remove(0);
    assert!(
        share
            .skipped
            .iter()
            .any(|s| s.id.ends_with("company/keys.md")
                && s.reason.contains("outside the crawled roots")),
        "{:?}",
        share.skipped
    );
    assert!(
        share
            .skipped
            .iter()
            .any(|s| s.id.ends_with("company/bands.md") && s.reason.contains("both")),
        "{:?}",
        share.skipped
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_directory_link_does_not_capture_watched_events() {
    let env = Env::example();
    let d = env.start().await;
    // A directory holding a link to hr/, moved into place while the share is watched: a watcher
    // that followed links would now report hr's events under company/b/l/.
    let c = env.corpus();
    std::fs::create_dir(c.join("company/a")).unwrap();
    std::os::unix::fs::symlink(c.join("hr"), c.join("company/a/l")).unwrap();
    std::fs::rename(c.join("company/a"), c.join("company/b")).unwrap();
    // A document written into the moved directory once it is indexed shows the watcher has
    // taken the move in (a fixed sleep could let a slow watcher miss what follows).
    std::fs::write(
        c.join("company/b/first.md"),
        "# Sentinel one\n\nThe moved directory is watched.\n",
    )
    .unwrap();
    eventually(20, "the moved directory's new document is indexed", || {
        let i = d.daemon.state().index.clone();
        let k = key(&env, "company/b/first.md");
        async move { i.doc_entry(&k).is_some() }
    })
    .await;
    // HR adds a folder with a new document.
    std::fs::create_dir(c.join("hr/2028")).unwrap();
    std::fs::write(
        c.join("hr/2028/bonus.md"),
        "# Bonus pool 2028\n\nThe wrenfield bonus pool is 4% of payroll.\n",
    )
    .unwrap();
    eventually(20, "the HR document is indexed under its own path", || {
        let i = d.daemon.state().index.clone();
        let k = key(&env, "hr/2028/bonus.md");
        async move { i.doc_entry(&k).is_some() }
    })
    .await;
    // Events are handled in order: once a document written after HR's is indexed, any event
    // reported through the link has been handled too.
    std::fs::write(
        c.join("company/b/second.md"),
        "# Sentinel two\n\nWritten after the HR document.\n",
    )
    .unwrap();
    eventually(20, "the second sentinel is indexed", || {
        let i = d.daemon.state().index.clone();
        let k = key(&env, "company/b/second.md");
        async move { i.doc_entry(&k).is_some() }
    })
    .await;
    let r = d.search(ALICE, "wrenfield bonus pool", 10).await.unwrap();
    assert!(
        !search_text(&r).contains("wrenfield"),
        "{}",
        search_text(&r)
    );
    let idx = &d.daemon.state().index;
    assert!(
        idx.doc_entry(&key(&env, "company/b/l/2028/bonus.md"))
            .is_none()
    );
    assert!(
        idx.doc_entry(&key(&env, "company/b/l/compensation-bands-2027.md"))
            .is_none()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_link_into_company_does_not_borrow_its_acl() {
    let env = Env::example();
    let c = env.corpus();
    std::fs::hard_link(
        c.join("hr/compensation-bands-2027.md"),
        c.join("company/bands-copy.md"),
    )
    .unwrap();
    let d = env.start().await;
    let r = d
        .search(ALICE, "Senior Software Engineer salary band relocation", 20)
        .await
        .unwrap();
    assert!(!search_text(&r).contains(SALARY), "{}", search_text(&r));
    let share = d.connectors().await.connectors.remove(0);
    assert!(
        share
            .skipped
            .iter()
            .any(|s| s.id.ends_with("company/bands-copy.md") && s.reason.contains("hard links")),
        "{:?}",
        share.skipped
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moved_into_hr_before_the_commit_leaves_nothing_behind() {
    let env = Env::example();
    // Commits only on a checkpoint or every 30 s: the create is still uncommitted at the move.
    let text = replaced(
        &env.config_text(),
        "commit_interval_ms = 100",
        "commit_interval_ms = 30000",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let index = d.daemon.state().index.clone();
    let (old, new) = (key(&env, "company/plover.md"), key(&env, "hr/plover.md"));
    std::fs::write(
        env.corpus().join("company/plover.md"),
        "# Plover\n\nThe plover-kestrel reorganisation moves the Ghent team in May.\n",
    )
    .unwrap();
    eventually(20, "the create is written (not committed)", || {
        let i = index.clone();
        let old = old.clone();
        async move { i.latest_entry(&old).is_some() }
    })
    .await;
    assert!(index.doc_entry(&old).is_none(), "not committed yet");
    std::fs::rename(
        env.corpus().join("company/plover.md"),
        env.corpus().join("hr/plover.md"),
    )
    .unwrap();
    eventually(20, "the move is written", || {
        let i = index.clone();
        let new = new.clone();
        async move { i.latest_entry(&new).is_some() }
    })
    .await;
    // A sync commits (its checkpoint forces the commit).
    let out = docent_async(&["sync", "share", "--wait"], &d.url(), ADMIN).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(20, "the move is committed", || {
        let i = index.clone();
        let new = new.clone();
        async move { i.doc_entry(&new).is_some() }
    })
    .await;
    assert!(
        index.doc_entry(&old).is_none(),
        "the old path was left behind"
    );
    let r = d
        .search(ALICE, "plover-kestrel reorganisation", 10)
        .await
        .unwrap();
    assert!(!search_text(&r).contains("plover"), "{}", search_text(&r));
    // A stopping daemon waits for the last holders of its index.
    drop(index);
    d.stop().await;
}

const BOT: &str = "crm-bot-token";
const OTHER_BOT: &str = "wiki-bot-token";

/// Two push sources, each with its own writer; `crm` may only grant staff and link into the CRM.
fn push_config(env: &Env, extra: &str) -> docent::config::Config {
    let text = env.config_text()
        + &format!(
            "\n[[identities]]\nid = \"crm-bot\"\ningest = true\ntoken_sha256 = \"{}\"\n\n\
             [[identities]]\nid = \"wiki-bot\"\ningest = true\ntoken_sha256 = \"{}\"\n\n\
             [[connectors]]\ntype = \"push\"\nid = \"crm\"\nwriters = [\"user:crm-bot\"]\n\
             grantable = [\"group:staff\", \"group:finance\"]\n\
             uri_prefixes = [\"https://crm.fernhill.example/\"]\nmax_request_bytes = 65536\n\n\
             [[connectors]]\ntype = \"push\"\nid = \"wiki\"\nwriters = [\"user:wiki-bot\"]\n{extra}",
            hex::encode(docent::identity::token_hash(BOT)),
            hex::encode(docent::identity::token_hash(OTHER_BOT)),
        );
    env.config_from(&text)
}

fn note(key: &str, text: &str) -> pb::PushDocument {
    pb::PushDocument {
        key: key.into(),
        version: "1".into(),
        content: Some(pb::push_document::Content::Text(text.into())),
        allow: vec!["group:staff".into()],
        ..Default::default()
    }
}

fn put(
    token: &str,
    source: &str,
    documents: Vec<pb::PushDocument>,
) -> tonic::Request<pb::PutDocumentsRequest> {
    authed(
        token,
        pb::PutDocumentsRequest {
            source: source.into(),
            documents,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_delete_right_after_the_put_wins() {
    let env = Env::example();
    let d = env.start_with(push_config(&env, "")).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    c.put_documents(put(
        BOT,
        "crm",
        vec![note("acct-9", "Account Wrenfield renews in October.")],
    ))
    .await
    .unwrap();
    let r = c
        .delete_documents(authed(
            BOT,
            pb::DeleteDocumentsRequest {
                source: "crm".into(),
                keys: vec!["acct-9".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Deleted as i32);
    // A later document becoming searchable means everything before it was committed.
    c.put_documents(put(
        BOT,
        "crm",
        vec![note("acct-10", "Account Tamsin renews in December.")],
    ))
    .await
    .unwrap();
    eventually(10, "the later document is searchable", || {
        let d = &d;
        async move {
            search_text(&d.search(ALICE, "Tamsin renews", 5).await.unwrap()).contains("acct-10")
        }
    })
    .await;
    assert!(d.daemon.state().index.doc_entry("crm:acct-9").is_none());
    let r = d
        .search(ALICE, "Wrenfield renews October", 5)
        .await
        .unwrap();
    assert!(!search_text(&r).contains("acct-9"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_requests_are_refused_before_their_body_is_read() {
    let env = Env::example();
    let d = env.start_with(push_config(&env, "")).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    // 1 MiB: over the largest request any push source accepts (64 KiB), so a daemon that
    // decoded it first would answer "too large"; the permission check comes first.
    let big = vec![note("big", &"word ".repeat(200_000))];
    let e = c
        .put_documents(put(ALICE, "crm", big.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::PermissionDenied, "SCOPE_DENIED")
    );
    let e = c
        .put_documents(put("", "crm", big.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A writer gets past the gate and is stopped by the size limit.
    let e = c.put_documents(put(BOT, "crm", big)).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{e:?}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_trust_is_bound_to_sources_acls_uris_and_attributes() {
    let env = Env::example();
    let d = env.start_with(push_config(&env, "")).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    // Another source's writer, and a source that does not exist, answer alike.
    for source in ["crm", "no-such-source"] {
        let e = c
            .put_documents(put(OTHER_BOT, source, vec![note("x", "x")]))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (Code::PermissionDenied, "SOURCE_DENIED")
        );
    }
    let e = c
        .delete_documents(authed(
            OTHER_BOT,
            pb::DeleteDocumentsRequest {
                source: "crm".into(),
                keys: vec!["acct-1".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "SOURCE_DENIED");
    let posing = |mut n: pb::PushDocument, f: &dyn Fn(&mut pb::PushDocument)| {
        f(&mut n);
        n
    };
    let docs = vec![
        posing(note("a", "HR salary bands"), &|n| {
            n.uri = "file:///srv/share/hr/compensation-bands-2027.md".into()
        }),
        posing(note("b", "HR salary bands"), &|n| {
            n.attributes
                .insert("relative_path".into(), "hr/bands.md".into());
        }),
        posing(note("c", "HR salary bands"), &|n| {
            n.attributes.insert("modified_at".into(), "1".into());
        }),
        posing(note("d", "HR salary bands"), &|n| {
            n.allow = vec!["group:hr".into()]
        }),
        posing(note("f", "HR salary bands"), &|n| {
            // The index stores attributes as key␟value: a key with the separator would pose
            // as `relative_path` = "hr/bands.md".
            n.attributes
                .insert("relative_path\u{1f}hr".into(), "/bands.md".into());
        }),
        posing(note("e", "Renewal notes"), &|n| {
            n.uri = "https://crm.fernhill.example/accounts/e".into();
            n.modified_at = 1_767_225_600;
        }),
    ];
    let r = c
        .put_documents(put(BOT, "crm", docs))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<i32> = r.results.iter().map(|r| r.status).collect();
    let (rej, ok) = (
        pb::ItemStatus::Rejected as i32,
        pb::ItemStatus::Accepted as i32,
    );
    assert_eq!(got, [rej, rej, rej, rej, rej, ok], "{:?}", r.results);
    assert!(r.results[0].reason.contains("http"));
    assert!(r.results[1].reason.contains("set by Docent"));
    assert!(r.results[3].reason.contains("may not grant"));
    assert!(r.results[4].reason.contains("attribute name"));
    // Docent sets modified_at from the field, as the proto says.
    eventually(10, "accepted document searchable", || {
        let d = &d;
        async move {
            search_text(&d.search(ALICE, "Renewal notes", 5).await.unwrap())
                .contains("crm.fernhill.example/accounts/e")
        }
    })
    .await;
    let r = d.search(ALICE, "Renewal notes", 5).await.unwrap();
    let hit = r
        .hits
        .iter()
        .find(|h| h.citation.as_ref().unwrap().uri.ends_with("/accounts/e"))
        .unwrap();
    assert_eq!(hit.attributes["modified_at"], "1767225600");
    assert_eq!(hit.attributes["source"], "crm");
    d.stop().await;
}

/// The error of a call (an OK status if it succeeded, which the caller's assertions reject).
macro_rules! error_of {
    ($call:expr) => {
        $call
            .await
            .err()
            .unwrap_or_else(|| tonic::Status::ok("the call succeeded"))
    };
}

/// Every Admin method as `token`, with `connector` where the method takes one.
async fn admin_calls(
    ch: tonic::transport::Channel,
    token: &str,
    connector: &str,
) -> Vec<(&'static str, tonic::Status)> {
    let mut c = pb::admin_client::AdminClient::new(ch);
    let conn = || {
        authed(
            token,
            pb::ConnectorRequest {
                connector: connector.into(),
            },
        )
    };
    let who_is = pb::WhoIsRequest {
        user: "hana".into(),
    };
    let check = pb::CheckAccessRequest {
        user: "hana".into(),
        document_key: "share:/nope".into(),
    };
    let jobs = pb::ListJobsRequest {
        connector: connector.into(),
    };
    let sync = pb::SyncNowRequest {
        connector: connector.into(),
        ..Default::default()
    };
    vec![
        (
            "ListConnectors",
            error_of!(c.list_connectors(authed(token, pb::ListConnectorsRequest {}))),
        ),
        (
            "IndexStats",
            error_of!(c.index_stats(authed(token, pb::IndexStatsRequest {}))),
        ),
        ("WhoIs", error_of!(c.who_is(authed(token, who_is)))),
        (
            "CheckAccess",
            error_of!(c.check_access(authed(token, check))),
        ),
        (
            "ReloadIdentities",
            error_of!(c.reload_identities(authed(token, pb::ReloadIdentitiesRequest {}))),
        ),
        ("ListJobs", error_of!(c.list_jobs(authed(token, jobs)))),
        ("SyncNow", error_of!(c.sync_now(authed(token, sync)))),
        ("PauseConnector", error_of!(c.pause_connector(conn()))),
        ("ResumeConnector", error_of!(c.resume_connector(conn()))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_methods_refuse_non_admins_before_looking_at_the_request() {
    let env = Env::example();
    let d = env.start().await;
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    let sync = |c: &str| {
        authed(
            ADMIN,
            pb::SyncNowRequest {
                connector: c.into(),
                ..Default::default()
            },
        )
    };
    let first = admin
        .sync_now(sync("share"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    // The same answer whether the connector exists or not: no names, kinds or job ids leak.
    for connector in ["share", "no-such-connector"] {
        for (method, e) in admin_calls(d.channel().await, ALICE, connector).await {
            assert_eq!(
                (e.code(), reason(&e).as_str()),
                (Code::PermissionDenied, "ADMIN_REQUIRED"),
                "{method} for {connector}"
            );
        }
    }
    let next = admin
        .sync_now(sync("share"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert_eq!(next, first + 1, "refused calls consumed no job ids");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_audited_without_their_bodies() {
    let env = Env::example();
    let d = env.start().await;
    let ch = d.channel().await;
    let mut admin = pb::admin_client::AdminClient::new(ch.clone());
    admin
        .sync_now(authed(
            ALICE,
            pb::SyncNowRequest {
                connector: "share".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let mut ask = pb::assistant_client::AssistantClient::new(ch);
    ask.search(authed(
        "not-a-real-token",
        pb::SearchRequest {
            query: "salary bands".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    ask.search(authed(
        ALICE,
        pb::SearchRequest {
            query: "salary bands".into(),
            limit: 100_000,
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    let records = env.audit_records();
    let refused: Vec<_> = records.iter().filter(|r| r["refused"] == true).collect();
    let has = |method: &str, outcome: &str, caller: Option<&str>| {
        refused.iter().any(|r| {
            r["method"] == method
                && r["outcome"] == outcome
                && caller.is_none_or(|c| r["caller"] == c)
                && (caller.is_some() || r.get("caller").is_none())
                && r["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.0.1:"))
        })
    };
    assert!(
        has("SyncNow", "ADMIN_REQUIRED", Some("alice")),
        "{refused:?}"
    );
    assert!(has("Search", "INVALID_TOKEN", None), "{refused:?}");
    assert!(
        has("Search", "LIMIT_OUT_OF_RANGE", Some("alice")),
        "{refused:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| !r.to_string().contains("salary bands"))
    );
    d.stop().await;
}

/// A message with one bytes field 1, to send bytes where a string is expected.
#[derive(Clone, PartialEq, prost::Message)]
struct RawBytes {
    #[prost(bytes = "vec", tag = "1")]
    value: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_invalid_argument() {
    let env = Env::example();
    let d = env.start().await;
    let mut grpc = tonic::client::Grpc::new(d.channel().await);
    grpc.ready().await.unwrap();
    // Field 1 of SearchRequest is a string; these bytes are not UTF-8.
    let garbage = RawBytes {
        value: vec![0xff, 0xfe, 0xfd],
    };
    let e = grpc
        .unary::<_, pb::SearchResponse, _>(
            authed(ALICE, garbage),
            "/docent.v1.Assistant/Search".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_flood_is_shed_while_others_are_served() {
    let env = Env::example();
    let text = replaced(
        &env.config_text(),
        "max_concurrent_per_caller = 4",
        "max_concurrent_per_caller = 2",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let ch = d.channel().await;
    let search = |token: &'static str, timeout: Option<Duration>| {
        let mut c = pb::assistant_client::AssistantClient::new(ch.clone());
        async move {
            let mut req = authed(
                token,
                pb::SearchRequest {
                    query: "How do I request a new laptop?".into(),
                    ..Default::default()
                },
            );
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            c.search(req).await
        }
    };
    // One caller floods: past its two slots it is shed at once, with a stable reason.
    let flood: Vec<_> = (0..30).map(|_| tokio::spawn(search(ALICE, None))).collect();
    let others = tokio::spawn(search(HANA, None));
    let mut shed = 0;
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    (e.code(), reason(&e).as_str()),
                    (Code::ResourceExhausted, "OVERLOADED")
                );
                shed += 1;
            }
        }
    }
    assert!(
        shed > 0,
        "30 concurrent searches of one caller, 2 slots: some are shed"
    );
    others
        .await
        .unwrap()
        .expect("another caller is served during the flood");

    d.stop().await;
}

/// Counts the query embeddings the model actually runs.
struct Counting(Arc<dyn Embedder>, AtomicUsize);

impl Embedder for Counting {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.0.embed_passages(texts)
    }
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.embed_query_until(text, &|| false)
    }
    fn embed_query_until(
        &self,
        text: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>, EmbedError> {
        self.0.embed_query_until(text, &|| {
            let c = cancelled();
            if !c {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
            c
        })
    }
    fn token_counter(&self) -> Arc<dyn docent::chunk::TokenCounter> {
        self.0.token_counter()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_past_their_deadline_run_nothing_more() {
    let env = Env::example();
    let counting = Arc::new(Counting(embedder(), AtomicUsize::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Room for all twelve: this test is about deadlines, not shedding.
    let text = replaced(
        &env.config_text(),
        "max_concurrent_per_caller = 4",
        "max_concurrent_per_caller = 16",
    );
    let d = Running {
        daemon: docent::server::start_with(
            env.config_from(&text),
            counting.clone(),
            listener,
            Default::default(),
        )
        .await
        .unwrap(),
    };
    d.wait_until_watching().await;
    let ch = d.channel().await;
    let before = counting.1.load(Ordering::SeqCst);
    // Twelve searches with a 1 ms deadline at once: they queue for the one query session, and
    // those whose deadline passed meanwhile (nearly all) give up before running the model.
    let abandoned: Vec<_> = (0..12)
        .map(|_| {
            let mut c = pb::assistant_client::AssistantClient::new(ch.clone());
            tokio::spawn(async move {
                let mut req = authed(
                    ALICE,
                    pb::SearchRequest {
                        query: "How do I request a new laptop?".into(),
                        ..Default::default()
                    },
                );
                req.set_timeout(Duration::from_millis(1));
                c.search(req).await
            })
        })
        .collect();
    for a in abandoned {
        let r = a.await.unwrap();
        assert!(
            r.is_err(),
            "a 1 ms deadline cannot be met by a hybrid search"
        );
    }
    // Let every blocking task that was still queued finish (or give up).
    let ok = d.search(HANA, "How do I request a new laptop?", 5).await;
    assert!(
        ok.is_ok(),
        "a well-behaved search after the flood is served"
    );
    let runs = counting.1.load(Ordering::SeqCst) - before;
    // The last search ran the model once; of the twelve abandoned ones at most a few did.
    assert!(
        runs <= 6,
        "{runs} model runs for 12 abandoned searches and 1 served"
    );
    d.stop().await;
}

/// Session 19's review: with one readable document as the only candidate (a `uri_prefix`
/// filter), the relevance of "meeting rooms severance" used to depend on how many documents
/// the caller cannot read hold "severance" (index-wide idf and document counts). An engineer's
/// scores must be the same whether or not the HR page that holds the word exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relevance_does_not_count_a_word_in_documents_the_caller_cannot_read() {
    const QUERY: &str = "meeting rooms severance";
    /// The engineer's one hit on the meeting rooms page: its score and relevance.
    async fn engineer_sees(d: &Running) -> (f32, Option<f32>) {
        let rooms = d.search(ALICE, "meeting rooms", 10).await.unwrap();
        let uri = rooms
            .hits
            .iter()
            .filter_map(|h| h.citation.as_ref())
            .find(|c| c.uri.contains("meeting-rooms"))
            .map(|c| c.uri.clone())
            .expect("the engineer can read the meeting rooms page");
        let r = d
            .search_req(
                ALICE,
                pb::SearchRequest {
                    query: QUERY.into(),
                    limit: 5,
                    filter: Some(pb::Filter {
                        uri_prefix: uri,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let h = r.hits.first().cloned().expect("the page is found");
        assert!(h.relevance.is_some(), "the second stage ran");
        (h.score, h.relevance)
    }
    let with_hr = Env::example();
    let d = with_hr.start().await;
    let hana = d.search(HANA, "severance", 5).await.unwrap();
    assert!(
        hana.hits.iter().any(|h| h
            .citation
            .as_ref()
            .is_some_and(|c| c.uri.contains("reorganisation-plan"))),
        "the word is in an HR page: {hana:?}"
    );
    let beside_hr = engineer_sees(&d).await;
    d.stop().await;

    let without = Env::example();
    std::fs::remove_file(without.corpus().join("hr/reorganisation-plan.txt")).unwrap();
    let d = without.start().await;
    assert_eq!(engineer_sees(&d).await, beside_hr);
    d.stop().await;
}

/// Session 43's review: a peer holding a health `Watch` open kept the daemon from ever
/// stopping (the server waited for every connection to close; every stop ended in the
/// supervisor's SIGKILL). Stopping, the daemon reports NOT_SERVING, and closes what is still
/// open after its drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_health_watch_does_not_keep_the_daemon_from_stopping() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let env = Env::example();
    let d = env
        .start_opts(
            env.config(),
            docent::server::StartOptions {
                server_drain: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await;
    let mut health = HealthClient::new(d.channel().await);
    let all = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(all).await.unwrap().into_inner();
    let now = watch.message().await.unwrap().expect("the current status");
    assert_eq!(now.status(), ServingStatus::Serving);
    let stopping = tokio::spawn(d.stop());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("told at once")
        .unwrap()
        .expect("a status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    // Closed by the daemon once the drain ends (a second review: the server task stopped, the
    // connection did not, holding the daemon's index).
    let ended = tokio::time::timeout(Duration::from_secs(8), watch.message())
        .await
        .expect("the stream ends after the drain");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(8), stopping)
        .await
        .expect("stopped, its index let go, with the watch held")
        .unwrap();
}

/// Health `Watch` streams take no credentials and stay open as long as their peer keeps them:
/// past `server.max_unauthenticated_streams` open at once, health and reflection requests are
/// refused at once, one peer address holds at most `max_unauthenticated_streams_per_peer` of
/// them (another address still gets one), and a stream that closes frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_peer_cannot_hold_unbounded_health_watches() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let env = Env::example();
    let mut config = env.config();
    config.server.max_unauthenticated_streams = 3;
    config.server.max_unauthenticated_streams_per_peer = 2;
    let d = env.start_with(config).await;
    let mut health = HealthClient::new(d.channel().await);
    // Another peer: the same daemon reached from another loopback address.
    let other = tonic::transport::Endpoint::from_shared(d.url())
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut other = HealthClient::new(other);
    let all = HealthCheckRequest {
        service: String::new(),
    };
    let check = health.check(all.clone()).await.unwrap().into_inner();
    assert_eq!(check.status(), ServingStatus::Serving);

    let mut first = health.watch(all.clone()).await.unwrap().into_inner();
    let mut second = health.watch(all.clone()).await.unwrap().into_inner();
    for w in [&mut first, &mut second] {
        let now = w.message().await.unwrap().expect("the current status");
        assert_eq!(now.status(), ServingStatus::Serving);
    }
    // This peer's share is taken; the other peer gets the last place.
    let third = health.watch(all.clone()).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("from this address"), "{third:?}");
    let mut others = other.watch(all.clone()).await.unwrap().into_inner();
    assert!(others.message().await.unwrap().is_some());
    // All places are taken: refused for both.
    let checked = other.check(all.clone()).await.unwrap_err();
    assert_eq!(checked.code(), Code::ResourceExhausted, "{checked:?}");
    assert!(
        !checked.message().contains("from this address"),
        "{checked:?}"
    );
    let checked = health.check(all.clone()).await.unwrap_err();
    assert_eq!(checked.code(), Code::ResourceExhausted, "{checked:?}");
    // Authenticated services have their own limits and still answer.
    d.search(ALICE, "parking", 5).await.unwrap();

    drop(first);
    // The server frees the place once it sees the stream reset.
    let mut freed = false;
    for _ in 0..200 {
        if health.check(all.clone()).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(freed, "a closed Watch stream kept its place");
    drop((second, others));
    d.stop().await;
}

/// Session 31's review: only the first `authorization` header was read, so a proxy that checks
/// or adds the last one saw another caller than the daemon. Two are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let env = Env::example();
    let d = env.start().await;
    let mut c = pb::assistant_client::AssistantClient::new(d.channel().await);
    let search = || pb::SearchRequest {
        query: "parking".into(),
        ..Default::default()
    };
    let mut req = authed(HANA, search());
    req.metadata_mut()
        .append("authorization", format!("Bearer {ALICE}").parse().unwrap());
    let e = c.search(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // One is still enough.
    c.search(authed(HANA, search())).await.unwrap();
    d.stop().await;
}

/// Found by a review: the Assistant service decoded up to tonic's default 4 MiB, and two
/// million empty filter strings decode to ~100 MB before the filter's own limits refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_assistant_request_is_refused_before_it_is_decoded() {
    let env = Env::example();
    let d = env.start().await;
    let mut c = pb::assistant_client::AssistantClient::new(d.channel().await);
    let req = pb::SearchRequest {
        query: "vpn".into(),
        filter: Some(pb::Filter {
            sources: vec![String::new(); 100_000],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = c.search(authed(ALICE, req)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // The daemon goes on answering.
    assert!(
        d.search(ALICE, "How do I connect to the VPN?", 3)
            .await
            .is_ok()
    );
    d.stop().await;
}

/// Found by a review: an unknown conversation id came back in the error, quoted with its
/// control characters escaped (six bytes each), twice in the status headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_conversation_id_is_not_echoed_at_any_length() {
    let env = Env::example();
    let d = env.start().await;
    let mut c = pb::assistant_client::AssistantClient::new(d.channel().await);
    let junk = "\u{1}".repeat(30_000);
    let req = pb::ConversationRequest {
        conversation_id: junk.clone(),
        ..Default::default()
    };
    let e = c.get_conversation(authed(ALICE, req)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().len() < 256, "{} bytes", e.message().len());
    assert!(!e.message().contains('\u{1}') && !e.message().contains("\\u{1}"));
    d.stop().await;
}
