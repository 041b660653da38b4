//! The push API: per-item results (accepted, unchanged, rejected with a reason), idempotency by
//! key and version, deletes, permission and source checks, and `docent ingest` with JSONL.

use std::time::Duration;

use docent::parse::samples;
use docent_proto::v1 as pb;
use pb::push_document::Content;
use tonic::Code;

use crate::harness::*;

const BOT: &str = "crm-bot-token";

fn doc(key: &str, version: &str, content: Content, allow: &[&str]) -> pb::PushDocument {
    pb::PushDocument {
        key: key.into(),
        version: version.into(),
        content: Some(content),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn statuses(r: &[pb::ItemResult]) -> Vec<(String, i32)> {
    r.iter().map(|r| (r.key.clone(), r.status)).collect()
}

/// A PutDocuments request of [`BOT`] to source `crm`.
fn put(docs: Vec<pb::PushDocument>) -> tonic::Request<pb::PutDocumentsRequest> {
    authed(
        BOT,
        pb::PutDocumentsRequest {
            source: "crm".into(),
            documents: docs,
            ..Default::default()
        },
    )
}

/// `env`'s configuration with push source `crm`, written by the identity of [`BOT`].
fn push_config_text(env: &Env) -> String {
    env.config_text()
        + &format!(
            "\n[[identities]]\nid = \"crm-bot\"\ningest = true\ntoken_sha256 = \"{}\"\n\n[[connectors]]\ntype = \"push\"\nid = \"crm\"\nwriters = [\"user:crm-bot\"]\n",
            hex::encode(docent::identity::token_hash(BOT))
        )
}

/// A daemon with push source `crm`, written by the identity of [`BOT`].
async fn with_push_source(env: &Env) -> Running {
    env.start_with(env.config_from(&push_config_text(env)))
        .await
}

/// Found by a review: on Milvus, a key within the API's limit (1,024 bytes) but past the
/// collection's (chunk ids of at most 512) was ACCEPTED, then failed in the pipeline at every
/// try, and a waiting client was told to send it again. It is REJECTED at once, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_the_index_cannot_hold_is_rejected_at_once() {
    let env = Env::empty();
    let text = crate::milvus::on_milvus(
        &push_config_text(&env),
        &crate::milvus::collection(),
        "ingest",
    );
    let d = env.start_with(env.config_from(&text)).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let long = "k".repeat(600);
    let r = c
        .put_documents(put(vec![
            doc(
                &long,
                "1",
                Content::Text("Kestrels nest.".into()),
                &["everyone"],
            ),
            doc(
                "short",
                "1",
                Content::Text("Kestrels nest.".into()),
                &["everyone"],
            ),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results[0].status,
        pb::ItemStatus::Rejected as i32,
        "{r:?}"
    );
    assert!(r.results[0].reason.contains("cannot hold"), "{r:?}");
    assert_eq!(
        r.results[1].status,
        pb::ItemStatus::Accepted as i32,
        "{r:?}"
    );
    d.stop().await;
}

/// A push source is neither paused nor synced by an admin: its clients decide when to send.
/// (Session 30's review: Pause answered "paused" while pushes went on, and from the 17th
/// Pause or Resume each call waited forever on a command queue nobody read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_source_is_not_paused_and_never_holds_an_admin_call() {
    let env = Env::empty();
    let d = with_push_source(&env).await;
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    for _ in 0..20 {
        let req = || {
            authed(
                ADMIN,
                pb::ConnectorRequest {
                    connector: "crm".into(),
                },
            )
        };
        let e = tokio::time::timeout(Duration::from_secs(10), admin.pause_connector(req()))
            .await
            .expect("answered at once")
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("push source"), "{e:?}");
        let e = tokio::time::timeout(Duration::from_secs(10), admin.resume_connector(req()))
            .await
            .expect("answered at once")
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    // Audited as requests that failed in their handler, with the reason.
    let failed = env
        .audit_records()
        .into_iter()
        .filter(|r| r["outcome"] == "NOT_PAUSABLE" && r["refused"] == false)
        .count();
    assert_eq!(failed, 40);
    d.stop().await;
}

/// Session 37's review: ACCEPTED and DELETED came before the commit, so a crash in between
/// lost what the client had been told, and nothing told it. With `wait_for_commit` the answer
/// comes once the change is committed (durable, and what searches see). A long commit
/// interval: without the wait, the search right after the answer would not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_commit_answers_once_the_change_is_committed() {
    let env = Env::empty();
    let text =
        push_config_text(&env).replace("commit_interval_ms = 100\n", "commit_interval_ms = 3000\n");
    assert!(text.contains("commit_interval_ms = 3000"));
    let d = env.start_with(env.config_from(&text)).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let sees = |needle: &'static str| {
        let d = &d;
        async move {
            search_text(
                &d.search(FELIX, "Initrode merger codename", 10)
                    .await
                    .unwrap(),
            )
            .contains(needle)
        }
    };
    let mut req = put(vec![doc(
        "deal",
        "1",
        Content::Text("The Initrode merger codename is Bluefin.".into()),
        &["group:finance"],
    )]);
    req.get_mut().wait_for_commit = true;
    let r = c.put_documents(req).await.unwrap().into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Accepted as i32);
    assert_eq!(r.results[0].reason, "", "committed");
    assert!(sees("push://crm/deal").await);

    let r = c
        .delete_documents(authed(
            BOT,
            pb::DeleteDocumentsRequest {
                source: "crm".into(),
                keys: vec!["deal".into()],
                wait_for_commit: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Deleted as i32);
    assert_eq!(r.results[0].reason, "", "committed");
    assert!(!sees("push://crm/deal").await);
    d.stop().await;
}

/// Session 37's note: a call waiting for its commit held its concurrency permits until the
/// commit, so with `max_concurrent_per_caller = 1` the writer's next request was refused
/// (OVERLOADED) while a long document was embedded. Waiting now gives them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_its_commit_holds_no_concurrency_permit() {
    let env = Env::empty();
    let text = push_config_text(&env).replace(
        "max_concurrent_per_caller = 4",
        "max_concurrent_per_caller = 1",
    );
    assert!(text.contains("max_concurrent_per_caller = 1"));
    let d = env.start_with(env.config_from(&text)).await;
    // Long enough that its embedding takes a second or two on two cores (~40 chunks; longer
    // would slow the tests running beside it).
    let long: String = (0..600)
        .map(|i| format!("Clause {i} of the supplier agreement covers delivery terms. "))
        .collect();
    let mut req = put(vec![doc(
        "contract",
        "1",
        Content::Text(long),
        &["group:finance"],
    )]);
    req.get_mut().wait_for_commit = true;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let first = tokio::spawn(async move { c.put_documents(req).await });
    // Its embedding takes a second or more: give it the time to be admitted first (else the
    // next call could be, with the old code too).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let mut admitted = false;
    for i in 0..400 {
        assert!(
            !first.is_finished(),
            "the first call ended before another was admitted"
        );
        match c
            .put_documents(put(vec![doc(
                &format!("note-{i}"),
                "1",
                Content::Text("A short note.".into()),
                &["group:finance"],
            )]))
            .await
        {
            Ok(_) => {
                admitted = true;
                break;
            }
            Err(e) => {
                assert_eq!(reason(&e), "OVERLOADED", "{e:?}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
    assert!(admitted);
    assert!(
        !first.is_finished(),
        "admitted while the first call still waits, not once it had ended"
    );
    let r = first.await.unwrap().unwrap().into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Accepted as i32);
    assert_eq!(r.results[0].reason, "", "committed");
    d.stop().await;
}

/// Session 34's review: every item of a request was compared with the state from before the
/// request, so a repeat of the indexed state after a wider ACL in the same request was
/// answered UNCHANGED and never queued, and the wider ACL stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pushed_twice_in_one_request_ends_as_its_last_item() {
    let env = Env::empty();
    let d = with_push_source(&env).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let budget = |allow: &str| {
        doc(
            "budget",
            "1",
            Content::Text("The Globex budget review is on 12 May 2027.".into()),
            &[allow],
        )
    };
    let finds = |token: &'static str, needle: &'static str| {
        let d = &d;
        async move {
            search_text(&d.search(token, "Globex budget review", 10).await.unwrap())
                .contains(needle)
        }
    };
    let r = c
        .put_documents(put(vec![budget("group:finance")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Accepted as i32);
    eventually(10, "indexed for finance", || {
        finds(FELIX, "push://crm/budget")
    })
    .await;
    // Shared with everyone, then back to finance, in one request.
    let r = c
        .put_documents(put(vec![budget("everyone"), budget("group:finance")]))
        .await
        .unwrap()
        .into_inner();
    let ok = pb::ItemStatus::Accepted as i32;
    assert_eq!(
        statuses(&r.results),
        [("budget".into(), ok), ("budget".into(), ok)]
    );
    // Pushed after them: once it is searchable, both are applied.
    let marker = doc(
        "marker",
        "1",
        Content::Text("The Initech offsite is in Porto.".into()),
        &["everyone"],
    );
    c.put_documents(put(vec![marker])).await.unwrap();
    eventually(10, "the marker indexed", || {
        let d = &d;
        async move {
            search_text(&d.search(ALICE, "Initech offsite Porto", 10).await.unwrap())
                .contains("push://crm/marker")
        }
    })
    .await;
    assert!(
        !finds(ALICE, "push://crm/budget").await,
        "the wider ACL stayed"
    );
    assert!(finds(FELIX, "push://crm/budget").await);
    // The same state once more: unchanged.
    let r = c
        .put_documents(put(vec![budget("group:finance")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Unchanged as i32);
    d.stop().await;
}

/// Session 34's review: a pushed ACL had no bound (millions of deny entries cost nothing
/// against the queue's byte budget and went onto every chunk), and names and links could hold
/// invisible characters that change how they show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_acls_names_and_links_are_bounded_and_showable() {
    let env = Env::empty();
    let d = with_push_source(&env).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let text = || Content::Text("x".into());
    let many = pb::PushDocument {
        deny: (0..1024).map(|i| format!("user:u{i}")).collect(),
        ..doc("many", "1", text(), &["everyone"])
    };
    let long = doc("long", "1", text(), &[&format!("user:{}", "a".repeat(300))]);
    let bidi = doc("bidi", "1", text(), &["user:bob\u{202E}nimda"]);
    let key = doc("key\u{200B}", "1", text(), &["everyone"]);
    let up = pb::PushDocument {
        uri: "https://crm.example.com/app/%2E%2E/admin/".into(),
        ..doc("up", "1", text(), &["everyone"])
    };
    let fine = pb::PushDocument {
        uri: "https://crm.example.com/app/acct/7?tab=notes".into(),
        deny: (0..1023).map(|i| format!("user:u{i}")).collect(),
        ..doc("fine", "1", text(), &["everyone"])
    };
    // Titles are prose: a joiner in an emoji and a soft hyphen are fine; an override is not.
    let prose = pb::PushDocument {
        title: "Team off\u{00AD}site \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}".into(),
        ..doc("prose", "1", text(), &["everyone"])
    };
    let flipped = pb::PushDocument {
        title: "invoice \u{202E}fdp.exe".into(),
        ..doc("flipped", "1", text(), &["everyone"])
    };
    let r = c
        .put_documents(put(vec![many, long, bidi, key, up, fine, prose, flipped]))
        .await
        .unwrap()
        .into_inner();
    let (rej, ok) = (
        pb::ItemStatus::Rejected as i32,
        pb::ItemStatus::Accepted as i32,
    );
    let got: Vec<i32> = r.results.iter().map(|r| r.status).collect();
    assert_eq!(
        got,
        [rej, rej, rej, rej, rej, ok, ok, rej],
        "{:?}",
        r.results
    );
    assert!(
        r.results[0].reason.contains("ACL entries"),
        "{:?}",
        r.results[0]
    );
    assert!(r.results[4].reason.contains("`..`"), "{:?}", r.results[4]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_documents_idempotently_with_per_item_results() {
    let env = Env::empty();
    let d = with_push_source(&env).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let acme = |v: &str, when: &str| {
        doc(
            "acct-1",
            v,
            Content::Text(format!(
                "Account Acme renews its contract on {when}; the owner is Dana."
            )),
            &["group:staff"],
        )
    };
    let docx = samples::docx(&[(None, "Globex pays invoices within 45 days.")], None);
    let r = c
        .put_documents(put(vec![
            acme("1", "1 March 2027"),
            doc("acct-2.docx", "7", Content::Data(docx), &["group:finance"]),
            doc("closed", "1", Content::Text("secret".into()), &[]),
            doc("bad-acl", "1", Content::Text("x".into()), &["staff"]),
            pb::PushDocument {
                mime_type: "application/octet-stream".into(),
                ..doc("blob", "1", Content::Data(vec![0, 1, 2]), &["everyone"])
            },
            doc(
                "broken.pdf",
                "1",
                Content::Data(b"%PDF-1.7 nope".to_vec()),
                &["everyone"],
            ),
            // A title with a terminal escape sequence; a version no one needs 40 KiB for.
            pb::PushDocument {
                title: "Q3 \u{1b}]52;c;ZXZpbA==\u{7}plan".into(),
                ..doc("escape", "1", Content::Text("x".into()), &["everyone"])
            },
            doc(
                "long-version",
                &"9".repeat(40_000),
                Content::Text("x".into()),
                &["everyone"],
            ),
            // Each value within its limit, 80 KB in all.
            pb::PushDocument {
                attributes: (0..20)
                    .map(|i| (format!("a{i}"), "x".repeat(4000)))
                    .collect(),
                ..doc(
                    "many-attributes",
                    "1",
                    Content::Text("x".into()),
                    &["everyone"],
                )
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    let (ok, rej) = (
        pb::ItemStatus::Accepted as i32,
        pb::ItemStatus::Rejected as i32,
    );
    assert_eq!(
        statuses(&r.results),
        [
            ("acct-1".into(), ok),
            ("acct-2.docx".into(), ok),
            ("closed".into(), rej),
            ("bad-acl".into(), rej),
            ("blob".into(), rej),
            ("broken.pdf".into(), rej),
            ("escape".into(), rej),
            ("long-version".into(), rej),
            ("many-attributes".into(), rej),
        ]
    );
    assert!(
        r.results[8].reason.contains("attributes"),
        "{:?}",
        r.results[8]
    );
    assert!(r.results[6].reason.contains("title"), "{:?}", r.results[6]);
    assert!(
        r.results[7].reason.contains("version"),
        "{:?}",
        r.results[7]
    );
    assert!(r.results[2].reason.contains("allows nobody"));
    assert!(r.results[3].reason.contains("invalid principal"));
    assert!(r.results[4].reason.contains("unsupported"));
    assert!(r.results[5].reason.contains("PDF"));

    let finds = |token: &'static str, q: &'static str, needle: &'static str| {
        let d = &d;
        async move { search_text(&d.search(token, q, 10).await.unwrap()).contains(needle) }
    };
    eventually(10, "pushed documents searchable", || {
        finds(ALICE, "Acme contract renewal", "push://crm/acct-1")
    })
    .await;
    // ACLs of pushed documents apply: the docx is finance-only.
    eventually(10, "docx indexed", || {
        finds(FELIX, "Globex invoices", "acct-2.docx")
    })
    .await;
    assert!(!finds(ALICE, "Globex invoices", "acct-2.docx").await);

    // The same key and version again: unchanged. A new version: accepted and replaces the text.
    let r = c
        .put_documents(put(vec![acme("1", "1 March 2027")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].status, pb::ItemStatus::Unchanged as i32);
    let r = c
        .put_documents(put(vec![acme("2", "9 June 2027")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].status, ok);
    eventually(10, "new version searchable", || {
        finds(ALICE, "Acme contract renewal", "9 June 2027")
    })
    .await;
    assert!(!finds(ALICE, "Acme contract renewal", "1 March 2027").await);

    // Deletes: idempotent.
    let del = |keys: &[&str]| {
        authed(
            BOT,
            pb::DeleteDocumentsRequest {
                source: "crm".into(),
                keys: keys.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
    };
    let r = c
        .delete_documents(del(&["acct-1", "nope"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        statuses(&r.results),
        [
            ("acct-1".into(), pb::ItemStatus::Deleted as i32),
            ("nope".into(), pb::ItemStatus::NotFound as i32)
        ]
    );
    eventually(10, "deleted document gone", || async {
        !finds(ALICE, "Acme contract renewal", "push://crm/acct-1").await
    })
    .await;

    // Permission and source checks.
    let e = c
        .put_documents(authed(
            ALICE,
            pb::PutDocumentsRequest {
                source: "crm".into(),
                documents: vec![acme("3", "x")],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .put_documents(authed(
            BOT,
            pb::PutDocumentsRequest {
                source: "share".into(),
                documents: vec![],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    // An unknown source and one the caller may not write to answer alike.
    assert_eq!(e.code(), Code::PermissionDenied);

    // `docent ingest --jsonl`.
    let jsonl = env.dir.path().join("docs.jsonl");
    std::fs::write(
        &jsonl,
        "{\"key\": \"kb-1\", \"version\": \"1\", \"text\": \"The Lisbon office closes at 19:00 on Fridays.\", \"allow\": [\"everyone\"], \"attributes\": {\"team\": \"facilities\"}}\n\
         {\"key\": \"kb-2\", \"version\": \"1\", \"text\": \"nobody\", \"allow\": []}\n",
    )
    .unwrap();
    // `docent ingest --source crm --json ARGS…` as the bot.
    let ingest = |args: Vec<String>| {
        let url = d.url();
        async move {
            let mut all: Vec<&str> = vec!["ingest", "--source", "crm", "--json"];
            all.extend(args.iter().map(String::as_str));
            docent_async(&all, &url, BOT).await
        }
    };
    let out = ingest(vec!["--jsonl".into(), jsonl.display().to_string()]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a rejected item makes the exit code 1"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][1]["status"], "rejected");
    eventually(10, "JSONL document searchable", || {
        finds(HANA, "Lisbon office Friday closing", "push://crm/kb-1")
    })
    .await;
    let r = d
        .search(HANA, "Lisbon office Friday closing", 3)
        .await
        .unwrap();
    let hit = r
        .hits
        .iter()
        .find(|h| h.citation.as_ref().unwrap().uri == "push://crm/kb-1")
        .unwrap();
    assert_eq!(hit.attributes["team"], "facilities");

    // `docent ingest FILE`.
    let note = env.dir.path().join("parking.md");
    std::fs::write(
        &note,
        "# Parking\n\nVisitors park on level two of the Lisbon garage.\n",
    )
    .unwrap();
    let out = ingest(vec![
        "--allow".into(),
        "everyone".into(),
        note.display().to_string(),
    ])
    .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["status"], "accepted", "{v}");
    assert_eq!(out.status.code(), Some(0), "{v}");

    // A link and a FIFO among the files are rejected unread (a review: a link planted among
    // uploads pushed what it pointed at, and a FIFO held the run for ever).
    let secret = env.dir.path().join("id_rsa");
    std::fs::write(&secret, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let link = env.dir.path().join("upload.md");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let fifo = env.dir.path().join("pipe.md");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        ingest(vec![
            "--allow".into(),
            "everyone".into(),
            link.display().to_string(),
            fifo.display().to_string(),
        ]),
    )
    .await
    .expect("a FIFO does not hold the run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["status"], "rejected", "{v}");
    assert_eq!(v["results"][1]["status"], "rejected", "{v}");
    assert_eq!(out.status.code(), Some(1), "{v}");

    // Files are read as they are sent: one that cannot be read stops the run after the files
    // before it were sent and reported.
    let lunch = env.dir.path().join("lunch.md");
    std::fs::write(
        &lunch,
        "# Lunch

The Lisbon canteen opens at noon.
",
    )
    .unwrap();
    let missing = env.dir.path().join("missing.md");
    let out = ingest(vec![
        "--allow".into(),
        "everyone".into(),
        lunch.display().to_string(),
        missing.display().to_string(),
    ])
    .await;
    assert_ne!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["results"][0]["status"], "accepted", "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.md"), "{stderr}");

    // A file no request can carry is one rejected item, refused unread (a sparse file: no
    // disk behind it), and the files after it are sent (found by a review: it was read whole
    // first, and a file of several GiB ran the CLI out of memory).
    let huge = env.dir.path().join("huge.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let out = ingest(vec![
        "--allow".into(),
        "everyone".into(),
        huge.display().to_string(),
        lunch.display().to_string(),
    ])
    .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["results"][0]["status"], "rejected", "{v}");
    assert!(
        v["results"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("too large: 314572800 bytes"),
        "{v}"
    );
    assert!(
        ["accepted", "unchanged"].contains(&v["results"][1]["status"].as_str().unwrap()),
        "{v}"
    );
    d.stop().await;
}

/// `docent ingest` batches up to 100 documents or 32 MiB; a source that accepts less per
/// request refuses such a batch whole, so the CLI halves it until it fits, and a document too
/// large alone is that document's rejection while the others are accepted, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docent_ingest_splits_what_the_source_refuses_as_too_large() {
    let env = Env::empty();
    let text = env.config_text()
        + &format!(
            "\n[[identities]]\nid = \"crm-bot\"\ningest = true\ntoken_sha256 = \"{}\"\n\n[[connectors]]\ntype = \"push\"\nid = \"crm\"\nwriters = [\"user:crm-bot\"]\nmax_request_bytes = 65536\n",
            hex::encode(docent::identity::token_hash(BOT))
        );
    let d = env.start_with(env.config_from(&text)).await;
    let line = |key: &str, words: usize| {
        serde_json::json!({
            "key": key,
            "version": "1",
            "text": format!("Note {key}. {}", "Lisbon office facilities. ".repeat(words)),
            "allow": ["everyone"],
        })
        .to_string()
    };
    // About 26 KB each, and one of about 130 KB.
    let lines = [
        line("a", 1000),
        line("b", 1000),
        line("big", 5000),
        line("c", 1000),
        line("d", 1000),
    ];
    let jsonl = env.dir.path().join("docs.jsonl");
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let jsonl = jsonl.display().to_string();
    let out = docent_async(
        &["ingest", "--source", "crm", "--json", "--jsonl", &jsonl],
        &d.url(),
        BOT,
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let got: Vec<(&str, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", "accepted"),
            ("b", "accepted"),
            ("big", "rejected"),
            ("c", "accepted"),
            ("d", "accepted"),
        ],
        "{v}"
    );
    assert!(
        v["results"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("65536"),
        "{v}"
    );
    assert_eq!(out.status.code(), Some(1));
    d.stop().await;
}

/// Session 43's review: per-item reasons left the daemon without the output guardrails every
/// other string passes (a reason can quote what a writer or an earlier version named, or a skip
/// reason recorded for another writer's version of the key). A card number in a media type the
/// parsers refuse comes back redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_reasons_pass_the_output_guardrails() {
    let env = Env::empty();
    let d = with_push_source(&env).await;
    let mut c = pb::ingest_client::IngestClient::new(d.channel().await);
    let mut item = doc(
        "card",
        "1",
        Content::Data(b"some bytes".to_vec()),
        &["everyone"],
    );
    item.mime_type = "application/x-card-4111-1111-1111-1111".into();
    let r = c.put_documents(put(vec![item])).await.unwrap().into_inner();
    let item = &r.results[0];
    assert_eq!(item.status, pb::ItemStatus::Rejected as i32, "{r:?}");
    assert!(item.reason.contains("unsupported"), "{r:?}");
    assert!(!item.reason.contains("4111"), "{r:?}");
    assert!(item.reason.contains("[REDACTED:"), "{r:?}");
    d.stop().await;
}
