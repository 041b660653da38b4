//! Every supported format through the whole pipeline: PDF pages reach citations, spreadsheet and
//! CSV rows are cited with their header, DOCX headings become heading paths, slides are pages.

use docent::parse::samples;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_is_indexed_and_cited() {
    let env = Env::empty();
    let c = env.corpus();
    std::fs::write(
        c.join("expenses.pdf"),
        samples::pdf(&[
            &[
                "Expense policy 2027",
                "",
                "Claims are filed in the expense portal.",
            ],
            &["Receipts for claims are kept for seven years by the finance archive."],
        ]),
    )
    .unwrap();
    std::fs::write(
        c.join("travel.docx"),
        samples::docx(
            &[
                (Some("Heading1"), "Travel policy"),
                (Some("Heading2"), "Hotels"),
                (
                    None,
                    "Hotel rooms cost at most 140 EUR per night in Lisbon.",
                ),
            ],
            Some("Travel policy 2027"),
        ),
    )
    .unwrap();
    std::fs::write(
        c.join("kickoff.pptx"),
        samples::pptx(&[
            ("Kickoff", &["Welcome to the 2027 kickoff."]),
            (
                "Roadmap",
                &["The forecasting engine ships a streaming mode in June."],
            ),
        ]),
    )
    .unwrap();
    std::fs::write(
        c.join("budgets.xlsx"),
        samples::xlsx(
            "Budgets",
            &[
                &["Team", "Owner", "Budget EUR"],
                &["Finance", "Dana", "12000"],
                &["Platform", "Rui", "48000"],
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        c.join("oncall.csv"),
        "week,engineer,backup\n12,Ana Sousa,Pieter\n13,Joris,Ana Sousa\n",
    )
    .unwrap();
    std::fs::write(
        c.join("service.json"),
        r#"{"name": "billing-api", "owner": "payments team", "runbook": "Restart the billing worker pods when the queue stalls."}"#,
    )
    .unwrap();
    std::fs::write(
        c.join("retry.py"),
        "def retry_billing(job):\n    \"\"\"Retries a failed billing job up to five times.\"\"\"\n    for attempt in range(5):\n        job.run()\n",
    )
    .unwrap();
    let d = env.start().await;
    assert_eq!(d.stats().await.documents, 7, "{:?}", d.connectors().await);

    let cite = |r: &docent_proto::v1::SearchResponse, file: &str| {
        r.hits
            .iter()
            .filter_map(|h| h.citation.clone())
            .find(|c| c.uri.ends_with(file))
            .unwrap_or_else(|| panic!("{file} not found in {r:?}"))
    };
    let r = d
        .search(ALICE, "how long are receipts kept", 5)
        .await
        .unwrap();
    assert_eq!(cite(&r, "expenses.pdf").page, 2);
    let r = d.search(ALICE, "streaming mode roadmap", 5).await.unwrap();
    assert_eq!(cite(&r, "kickoff.pptx").page, 2);
    let r = d
        .search(ALICE, "hotel price per night Lisbon", 5)
        .await
        .unwrap();
    let h = cite(&r, "travel.docx");
    assert_eq!(h.title, "Travel policy 2027");
    assert_eq!(h.heading_path, ["Travel policy", "Hotels"]);
    assert_eq!(h.page, 0);

    let a = d
        .ask(ALICE, "What is the budget of the Platform team?")
        .await
        .unwrap();
    assert!(
        a.answer
            .contains("Team: Platform; Owner: Rui; Budget EUR: 48000"),
        "{a:?}"
    );
    assert!(a.citations.iter().any(|c| c.uri.ends_with("budgets.xlsx")));
    let a = d
        .ask(ALICE, "Who is the backup engineer in week 13?")
        .await
        .unwrap();
    assert!(
        a.answer
            .contains("week: 13; engineer: Joris; backup: Ana Sousa"),
        "{a:?}"
    );
    let r = d
        .search(ALICE, "billing worker queue stalls", 5)
        .await
        .unwrap();
    assert!(
        cite(&r, "service.json")
            .snippet
            .contains("runbook: Restart the billing worker")
    );
    let r = d
        .search(ALICE, "retries failed billing job", 5)
        .await
        .unwrap();
    assert!(cite(&r, "retry.py").snippet.contains("def retry_billing"));
    d.stop().await;
}
