//! The Prometheus endpoint serves the counters that requests provoke.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

async fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_requests_answers_and_documents() {
    let env = Env::example();
    let mut config = env.config();
    config.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let d = env.start_with(config).await;
    let addr = d.daemon.metrics_addr().expect("metrics configured");

    d.ask(ALICE, "How do I reset my VPN password?")
        .await
        .unwrap();
    d.ask(ALICE, "What is the capital of Australia?")
        .await
        .unwrap();
    d.ask(
        ALICE,
        "What is the salary band for a senior software engineer?",
    )
    .await
    .unwrap();
    d.search(ALICE, "parking", 5).await.unwrap();
    assert!(d.search("bad-token", "parking", 5).await.is_err());
    assert!(d.ask(ALICE, " ").await.is_err());

    let body = scrape(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for want in [
        "docent_requests_total{method=\"Ask\",code=\"OK\"} 3",
        "docent_requests_total{method=\"Ask\",code=\"INVALID_ARGUMENT\"} 1",
        "docent_requests_total{method=\"Search\",code=\"OK\"} 1",
        "docent_requests_total{method=\"Search\",code=\"UNAUTHENTICATED\"} 1",
        "docent_request_duration_seconds_count{method=\"Ask\"} 4",
        "docent_answers_total{status=\"answered\"} 1",
        "docent_answers_total{status=\"no_answer\"} 2",
        "docent_connector_documents{connector=\"share\"} 29",
        "docent_documents_indexed_total{connector=\"share\"} 29",
        "docent_documents_failed_total{connector=\"share\"} 0",
        "docent_index_documents 29",
        "docent_guardrail_verdicts_total{stage=\"acl\",action=\"drop\"} 0",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    // No document text, titles or user ids in labels.
    assert!(!body.contains("VPN") && !body.contains("alice"));
    assert!(scrape(addr, "/other").await.starts_with("HTTP/1.1 404"));
    d.stop().await;
}
