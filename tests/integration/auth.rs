//! Authentication fails closed; admin methods need an admin; malformed requests are
//! INVALID_ARGUMENT with a stable reason code.

use crate::harness::*;
use docent_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_request_validation() {
    let env = Env::empty();
    std::fs::write(
        env.corpus().join("note.txt"),
        "A note about parking badges for visitors.",
    )
    .unwrap();
    let d = env.start().await;

    for (token, reason) in [("", "MISSING_TOKEN"), ("not-a-token", "INVALID_TOKEN")] {
        let e = d.ask(token, "parking").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert_eq!(e.get_details_error_info().unwrap().reason, reason);
        let e = d.search(token, "parking", 5).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // A header that is not a bearer token.
    let mut c = pb::assistant_client::AssistantClient::new(d.channel().await);
    let mut req = tonic::Request::new(pb::SearchRequest {
        query: "parking".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", "Basic YWxpY2U6eA==".parse().unwrap());
    assert_eq!(
        c.search(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Admin API: admin yes, employee no.
    let mut admin = pb::admin_client::AdminClient::new(d.channel().await);
    let e = admin
        .index_stats(authed(ALICE, pb::IndexStatsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.get_details_error_info().unwrap().reason, "ADMIN_REQUIRED");
    let stats = d.stats().await;
    assert_eq!(stats.documents, 1);
    assert_eq!(stats.dimension, 384);

    // Malformed requests.
    let e = d.ask(ALICE, "   ").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let info = e.get_details_error_info().unwrap();
    assert_eq!(info.reason, "EMPTY_TEXT");
    assert_eq!(
        info.metadata.get("field").map(String::as_str),
        Some("question")
    );
    let e = d.search(ALICE, &"x".repeat(5000), 5).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.get_details_error_info().unwrap().reason, "TEXT_TOO_LONG");
    assert!(e.message().contains("4096"), "{}", e.message());
    let e = d.search(ALICE, "parking", 1000).await.unwrap_err();
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "LIMIT_OUT_OF_RANGE"
    );
    let e = d
        .search_req(
            ALICE,
            pb::SearchRequest {
                query: "parking".into(),
                mode: 42,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.get_details_error_info().unwrap().reason, "UNKNOWN_MODE");

    // The server is still fine after all that.
    let ok = d.search(ALICE, "parking badges", 5).await.unwrap();
    assert_eq!(ok.hits.len(), 1);
    d.stop().await;
}
