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

/// The `docent.toml` block of the ConfigMap (a YAML literal block indented by four spaces).
fn configmap_config(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "docent.toml: |");
    lines.next().expect("a docent.toml key");
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
    let text = configmap_config(&yaml)
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
