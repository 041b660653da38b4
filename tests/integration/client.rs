//! The developer clients against a real daemon: the `docent-client` crate (act_as, typed errors
//! with their reason codes) and the Python example generated from the proto by grpcio-tools.

use docent_client::{Client, Config, Error, pb, reasons};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_crate_asks_as_a_user_and_types_refusals() {
    let env = Env::example();
    let d = env.start().await;
    let bridge = Client::connect(&Config {
        token: Some("slack-bridge-dev-key".into()),
        ..Config::new(d.url())
    })
    .await
    .unwrap();
    let q = pb::AskRequest {
        question: "What is the salary band for a senior software engineer?".into(),
        ..Default::default()
    };
    let hana = bridge.act_as("hana").ask(q.clone()).await.unwrap();
    assert!(hana.answer.contains("148,000"), "{}", hana.answer);
    // The audience of a staff channel reads what all staff read: nothing from hr/.
    let staff = bridge.act_as("group:staff").ask(q.clone()).await.unwrap();
    assert!(!format!("{staff:?}").contains("148,000"));
    let unknown = bridge.act_as("nobody").ask(q.clone()).await.unwrap_err();
    assert_eq!(unknown.reason(), Some(reasons::UNKNOWN_USER));
    let alice = Client::connect(&Config {
        token: Some(ALICE.into()),
        ..Config::new(d.url())
    })
    .await
    .unwrap();
    let Error::Api(denied) = alice.act_as("hana").ask(q).await.unwrap_err() else {
        panic!("expected Docent's refusal")
    };
    assert_eq!(denied.reason(), reasons::ACT_AS_DENIED);
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_asks_a_real_daemon() {
    let env = Env::example();
    let d = env.start().await;
    let gen_dir = env.dir.path().join("pygen");
    let py = crate::slack::python();
    // The stubs, generated from proto/ by the example's own script.
    let generated = std::process::Command::new(repo().join("examples/python/generate.sh"))
        .arg(&gen_dir)
        .env("PYTHON", &py)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let args: Vec<String> = vec![
        repo().join("examples/python/ask.py").display().to_string(),
        "--addr".into(),
        d.url().trim_start_matches("http://").to_string(),
        "--token".into(),
        "slack-bridge-dev-key".into(),
        "--as".into(),
        "hana".into(),
        "--json".into(),
        "What is the salary band for a senior software engineer?".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .args(&args)
            .env("PYTHONPATH", gen_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "ANSWER_STATUS_ANSWERED");
    assert!(v["answer"].as_str().unwrap().contains("148,000"), "{v}");
    assert!(
        v["citations"].as_array().unwrap().iter().any(|c| c["uri"]
            .as_str()
            .unwrap()
            .ends_with("/hr/compensation-bands-2027.md")),
        "{v}"
    );
    d.stop().await;
}
