//! The deployment files: the Kubernetes manifests validate strictly against the Kubernetes API
//! schemas (`kubernetes-validate` from PyPI, schemas bundled, no network; installed by
//! `scripts/setup-python-tests.sh`), and the config their ConfigMap carries is a Docent config
//! that loads (its image paths pointed at this checkout). The container image itself cannot be
//! built here (no container daemon, no base-image registry).

use std::process::Command;

use crate::harness::*;

fn manifests() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let validate = crate::slack::python().with_file_name("kubernetes-validate");
    let files = manifests();
    assert!(!files.is_empty());
    for f in files {
        let out = Command::new(&validate)
            .args(["--strict", "-k", "1.30.0"])
            .arg(&f)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}: {text}", f.display());
        assert!(text.contains("passed"), "{}: {text}", f.display());
    }
}

/// The `key` block of the ConfigMap (a YAML literal block indented by four spaces).
fn configmap_entry(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("a {key} key"));
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_carries_a_valid_docent_config() {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/docent.yaml")).unwrap();
    let share = tempfile::tempdir().unwrap();
    let text = configmap_entry(&yaml, "docent.toml")
        .replace(
            "/opt/docent/models",
            &repo().join("models").display().to_string(),
        )
        .replace("/srv/share", &share.path().display().to_string())
        .replace(
            "/var/lib/docent",
            &share.path().join("data").display().to_string(),
        );
    assert!(text.contains("[[connectors]]"), "{text}");
    let config = docent::config::Config::parse(&text, &repo().join("config"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:7878");
}

#[test]
fn the_milvus_layout_carries_a_query_and_an_ingest_config() {
    let yaml =
        std::fs::read_to_string(repo().join("deploy/kubernetes/docent-milvus.yaml")).unwrap();
    let share = tempfile::tempdir().unwrap();
    // The token comes from the Secret through the environment.
    token_comes_from_the_secret(&yaml);
    for (key, role, connectors) in [
        ("query.toml", docent::config::Role::Query, 0),
        ("ingest.toml", docent::config::Role::Ingest, 1),
    ] {
        let text = configmap_entry(&yaml, key)
            .replace(
                "/opt/docent/models",
                &repo().join("models").display().to_string(),
            )
            .replace("/srv/share", &share.path().display().to_string())
            .replace(
                "/var/lib/docent",
                &share.path().join("data").display().to_string(),
            )
            .replace("${MILVUS_TOKEN}", "user:password");
        let config = docent::config::Config::parse(&text, &repo().join("config"))
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        assert_eq!(config.index.role, role, "{key}");
        assert_eq!(config.connectors.len(), connectors, "{key}");
        let m = config.index.milvus.as_ref().expect("the milvus backend");
        assert_eq!(m.token.as_deref(), Some("user:password"));
    }
}

/// Both Deployments read the token from the `docent-milvus` Secret.
fn token_comes_from_the_secret(yaml: &str) {
    assert_eq!(yaml.matches("name: MILVUS_TOKEN").count(), 2, "{yaml}");
    assert_eq!(yaml.matches("name: docent-milvus\n").count(), 2);
}
