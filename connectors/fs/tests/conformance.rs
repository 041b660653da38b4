//! The connector conformance suite (docent-connector-api) over a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use docent_connector_api::Connector;
use docent_connector_api::conformance::{Fixture, run_all};
use docent_fs_connector::{FsConfig, FsConnector};

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.txt"))
    }
}

impl Fixture for Dir {
    fn connector(&self) -> Box<dyn Connector> {
        Box::new(
            FsConnector::new(FsConfig {
                id: "fs-conformance".into(),
                roots: vec![self.dir.path().canonicalize().unwrap()],
                include: vec![],
                exclude: vec![],
                max_file_size: 1 << 20,
                reconcile_interval: Duration::from_secs(3600),
                debounce: Duration::from_millis(50),
                watch: false,
                follow_symlinks: true,
                acl_rules: vec![],
                passwd_file: "/etc/passwd".into(),
                group_file: "/etc/group".into(),
                report_memberships: false,
                deletion_protection_percent: 100,
                deletion_protection_min_docs: 1_000_000,
            })
            .unwrap(),
        )
    }

    fn put(&mut self, id: &str, text: &str) {
        let p = self.path(id);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn remove(&mut self, id: &str) {
        std::fs::remove_file(self.path(id)).unwrap();
    }

    fn change_acl(&mut self, id: &str) {
        // World-readable → owner and group only: the `everyone` entry goes.
        std::fs::set_permissions(self.path(id), std::fs::Permissions::from_mode(0o640)).unwrap();
    }

    fn native_id(&self, id: &str) -> String {
        self.dir
            .path()
            .canonicalize()
            .unwrap()
            .join(format!("{id}.txt"))
            .to_string_lossy()
            .into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_connector_passes_the_conformance_suite() {
    run_all(|| Dir {
        dir: tempfile::tempdir().unwrap(),
    })
    .await
    .unwrap();
}
