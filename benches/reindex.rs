//! `cargo bench --bench reindex [-- --docs N --milvus-docs N]`: what `docent reindex` costs
//! besides the embedding (vectors copied, the same model), on the embedded index and on Milvus
//! Lite; what a resumed run costs when everything was written already; and what the per-call
//! re-verification of a client certificate chain against revocation lists costs (uncached and
//! cached). Figures in benches/RESULTS.md (session 33).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use docent::chunk::{TokenCounter, WordCounter};
use docent::embed::{EmbedError, Embedder};
use docent::index::{ChunkRecord, DocumentRecord, Index};
use docent_connector_api::{Acl, DocKey, Principal};

const DIM: usize = 384;

/// Gives every passage the same vector: the runs below copy the stored vectors (the same model
/// on both sides), so it is never asked; it only names the model.
struct Fixed;

impl Embedder for Fixed {
    fn model_id(&self) -> &str {
        "bench-fixed"
    }
    fn dim(&self) -> usize {
        DIM
    }
    fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(vec![vec![0.05; DIM]; texts.len()])
    }
    fn embed_query(&self, _: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(vec![0.05; DIM])
    }
    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        Arc::new(WordCounter)
    }
}

/// A document of two chunks of about 150 words, with an ACL, attributes and a vector per chunk.
fn doc(i: usize) -> DocumentRecord {
    let text = |o: usize| {
        (0..150)
            .map(|w| format!("w{}", (i * 7 + o * 13 + w * 31) % 5000))
            .collect::<Vec<_>>()
            .join(" ")
    };
    DocumentRecord {
        key: DocKey::new("bench", format!("doc-{i:07}")),
        uri: format!("file:///share/doc-{i:07}.md"),
        title: format!("Document {i}"),
        version: "v1".into(),
        modified_at: Some(1_700_000_000 + i as i64),
        attributes: BTreeMap::from([("team".to_string(), format!("t{}", i % 17))]),
        acl: Acl::new([Principal::group(format!("g{}", i % 50))], []),
        content_hash: format!("h{i}"),
        chunks: (0..2)
            .map(|o| {
                let t = text(o);
                ChunkRecord {
                    ord: o as u32,
                    span: o * 1000..o * 1000 + t.len(),
                    page: None,
                    heading_path: vec!["Section".into()],
                    hash: format!("c{i}-{o}"),
                    text: t,
                    vector: (0..DIM).map(|d| ((i + d + o) % 97) as f32 / 97.0).collect(),
                }
            })
            .collect(),
    }
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64())
}

fn embedded(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (from, to) = (dir.path().join("old"), dir.path().join("new"));
    {
        let old = Index::open(&from, Fixed.model_id(), DIM)?;
        for i in 0..n {
            old.upsert(doc(i))?;
        }
        old.commit(BTreeMap::new())?;
    }
    let r = docent::ingest::reembed::reembed(&from, &to, &Fixed, None, &mut |_, _| {})?;
    println!(
        "embedded, copy: {} documents, {} chunks in {:.2} s ({} chunks)",
        r.documents,
        r.chunks,
        r.elapsed.as_secs_f64(),
        rate(r.chunks, r.elapsed)
    );
    // A run after one that was interrupted just before its end: everything is compared, nothing
    // written again.
    std::fs::write(to.join(docent::index::INCOMPLETE_MARKER), "")?;
    let r = docent::ingest::reembed::reembed(&from, &to, &Fixed, None, &mut |_, _| {})?;
    assert_eq!(r.resumed, r.chunks);
    println!(
        "embedded, resume with everything written: {} chunks in {:.2} s ({} chunks)",
        r.chunks,
        r.elapsed.as_secs_f64(),
        rate(r.chunks, r.elapsed)
    );
    Ok(())
}

fn milvus(n: usize) -> anyhow::Result<()> {
    use docent::index::Backend;
    use docent::index::milvus::{MilvusBackend, MilvusConfig};
    let config = |collection: String| MilvusConfig {
        uri: docent_milvus::lite::shared_server(&std::env::temp_dir()).to_string(),
        collection,
        token: Some("root:Milvus".into()),
        database: String::new(),
        ca_file: None,
        server_name: None,
        timeout: Duration::from_secs(120),
    };
    let id = std::process::id();
    let (from, to) = (
        config(format!("bench_old_{id}")),
        config(format!("bench_new_{id}")),
    );
    let sig = docent::index::ModelSignature::of(&Fixed);
    {
        let old = MilvusBackend::open(&from, &sig)?;
        for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
            for &i in chunk {
                old.upsert(doc(i))?;
            }
            old.commit(BTreeMap::new())?;
        }
    }
    let r = docent::ingest::reembed::reembed_milvus(&from, &to, &Fixed, None, &mut |_, _| {})?;
    println!(
        "Milvus Lite, copy: {} documents, {} chunks in {:.2} s ({} documents, {} chunks)",
        r.documents,
        r.chunks,
        r.elapsed.as_secs_f64(),
        rate(r.documents, r.elapsed),
        rate(r.chunks, r.elapsed)
    );
    Ok(())
}

fn revocation() -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DnType, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    };
    use time::OffsetDateTime;
    let ca = |name: &str| -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ok(CertifiedIssuer::self_signed(p, KeyPair::generate()?)?)
    };
    let (server, clients) = (ca("server")?, ca("clients")?);
    let dir = tempfile::tempdir()?;
    let file = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let leaf = |ca: &CertifiedIssuer<'static, KeyPair>, serial: u64| {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    };
    let (cert, key, _) = leaf(&server, 1);
    let now = OffsetDateTime::now_utc();
    // A list of 10,000 revoked certificates.
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: (100_000..110_000u64)
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&clients)?
    .pem()?;
    let tls = docent::config::TlsConfig {
        cert: file("server.pem", &cert)?,
        key: file("server.key", &key)?,
        client_ca: Some(file("clients.pem", &clients.pem())?),
        client_auth_required: true,
        client_crl: Some(file("clients.crl", &crl)?),
    };
    let r = docent::service::tls::server_tls(&tls)?
        .revocations
        .expect("lists configured");
    // Distinct chains: each call's first check verifies; the same chain again is cached.
    const N: u64 = 300;
    let chains: Vec<_> = (0..N).map(|s| vec![leaf(&clients, 10 + s).2]).collect();
    let t = Instant::now();
    for c in &chains {
        r.check(c).expect("not revoked");
    }
    let first = t.elapsed();
    let t = Instant::now();
    for _ in 0..10 {
        for c in &chains {
            r.check(c).expect("not revoked");
        }
    }
    let cached = t.elapsed();
    println!(
        "revocation lists (10,000 entries): a chain's first check {:.1} µs, again (cached) {:.2} µs",
        first.as_secs_f64() * 1e6 / N as f64,
        cached.as_secs_f64() * 1e6 / (10 * N) as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    revocation()?;
    embedded(arg("--docs", 20_000))?;
    milvus(arg("--milvus-docs", 5_000))?;
    Ok(())
}
