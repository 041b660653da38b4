//! Every config file in config/ loads; broken ones report all their problems with paths.

use docent::config::Config;

use crate::harness::repo;

#[test]
fn every_config_in_the_repo_loads() {
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("config")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            // The example corpus root must exist for validation; it does in the repo.
            Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no config files found");
}

#[test]
fn invalid_file_reports_all_errors_with_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "version = 1\n[server]\nlisten = \"x\"\nport = 1\n[[identities]]\nid = \"a b\"\n[[connectors]]\ntype = \"fs\"\nid = \"s\"\nroots = []\n",
    )
    .unwrap();
    let e = Config::load(&p).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("bad.toml"), "{text}");
    let paths: Vec<&str> = e.issues.iter().map(|i| i.path.as_str()).collect();
    for want in ["server", "identities[0].id", "connectors[0].roots"] {
        assert!(paths.contains(&want), "missing {want}: {text}");
    }
    assert!(text.contains("port"), "{text}");
}
