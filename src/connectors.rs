//! The connector registry: every connector type this build of Docent knows. Adding a connector
//! is one crate (with its `Factory`, see `docent_connector_api::registry`) and one line here.

use docent_connector_api::registry::ConnectorFactory;

/// The factories, one per `[[connectors]] type`.
pub fn registry() -> Vec<Box<dyn ConnectorFactory>> {
    vec![
        Box::new(docent_fs_connector::Factory),
        Box::new(crate::ingest::push::Factory),
        Box::new(docent_mediawiki_connector::Factory),
        Box::new(docent_dokuwiki_connector::Factory),
        Box::new(docent_nfs_connector::Factory),
        Box::new(docent_smb_connector::Factory),
    ]
}
