//! Adding, editing, renaming and deleting files shows in answers within seconds.

use crate::harness::*;
use docent_proto::v1 as pb;

async fn hit_uris(d: &Running, token: &str, q: &str) -> Vec<String> {
    d.search(token, q, 20)
        .await
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.citation.unwrap().uri)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_edit_rename_delete_show_within_seconds() {
    let env = Env::example();
    let d = env.start().await;
    let c = env.corpus();
    let q = "Where is the company summer party held?";

    // Add.
    std::fs::write(
        c.join("company/summer-party.md"),
        "# Summer party\n\nThe company summer party is held at the Blaarmeersen lake on 3 July.",
    )
    .unwrap();
    eventually(10, "added file answers", || async {
        let a = d.ask(ALICE, q).await.unwrap();
        a.answer.contains("Blaarmeersen")
            && a.citations
                .iter()
                .any(|c| c.uri.ends_with("/summer-party.md"))
    })
    .await;

    // Edit.
    std::fs::write(
        c.join("company/summer-party.md"),
        "# Summer party\n\nThe company summer party is held at the Gravensteen castle on 10 July.",
    )
    .unwrap();
    eventually(10, "edited file answers", || async {
        let a = d.ask(ALICE, q).await.unwrap();
        a.answer.contains("Gravensteen") && !answer_text(&a).contains("Blaarmeersen")
    })
    .await;

    // Rename (a file) and move (a whole directory).
    std::fs::rename(
        c.join("company/summer-party.md"),
        c.join("company/party-2027.md"),
    )
    .unwrap();
    eventually(10, "renamed file", || async {
        let uris = hit_uris(&d, ALICE, "summer party Gravensteen").await;
        uris.iter().any(|u| u.ends_with("/party-2027.md"))
            && !uris.iter().any(|u| u.ends_with("/summer-party.md"))
    })
    .await;
    std::fs::rename(c.join("facilities"), c.join("buildings")).unwrap();
    eventually(10, "moved directory", || async {
        let uris = hit_uris(&d, ALICE, "staff parking underground garage").await;
        uris.iter()
            .any(|u| u.contains("/buildings/office-ghent.md"))
            && !uris.iter().any(|u| u.contains("/facilities/"))
    })
    .await;

    // Moving a file into hr/ changes who may read it.
    std::fs::rename(c.join("company/party-2027.md"), c.join("hr/party-2027.md")).unwrap();
    eventually(
        10,
        "file moved into hr/ is hidden from engineers",
        || async {
            let eng = hit_uris(&d, ALICE, "summer party Gravensteen").await;
            let hr = hit_uris(&d, HANA, "summer party Gravensteen").await;
            !eng.iter().any(|u| u.contains("party-2027"))
                && hr.iter().any(|u| u.ends_with("/hr/party-2027.md"))
        },
    )
    .await;

    // Delete (a file and a directory).
    std::fs::remove_file(c.join("hr/party-2027.md")).unwrap();
    std::fs::remove_dir_all(c.join("buildings")).unwrap();
    eventually(10, "deleted files gone", || async {
        let a = d.ask(HANA, q).await.unwrap();
        let party = !answer_text(&a).contains("Gravensteen");
        let parking = hit_uris(&d, ALICE, "staff parking underground garage").await;
        party && !parking.iter().any(|u| u.contains("/buildings/"))
    })
    .await;
    let stats = d.stats().await;
    assert_eq!(
        stats.documents,
        29 - 3,
        "three facilities files deleted: {stats:?}"
    );
    let a = d.ask(HANA, q).await.unwrap();
    assert_ne!(a.status, pb::AnswerStatus::Answered as i32, "{a:?}");
    d.stop().await;
}
