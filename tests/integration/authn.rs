//! The authentication matrix over TLS: API keys (scopes, expiry, revocation), JWTs against a
//! local JWKS (RS256, ES256, HS256; expiry, not-before, issuer, audience, signature), mTLS client
//! certificates (mapped, unmapped, from an unknown CA), and on-behalf-of with and without the
//! `act_as` permission, audited with both ids; client certificate revocation lists.

use std::path::Path;

use base64::Engine;
use docent_proto::v1 as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams,
    SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::*;

const HS_SECRET: &[u8] = b"integration-test-hs256-secret-not-for-production";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha(s: &str) -> String {
    hex::encode(docent::identity::token_hash(s))
}

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Self {
            ca: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// (certificate PEM, key PEM) for a client's leaf with these DNS SANs, e-mail SANs and CN.
    fn leaf(&self, dns: &[&str], email: &[&str], cn: &str) -> (String, String) {
        self.numbered_leaf(None, dns, email, cn)
    }

    /// The server's leaf, for `localhost`.
    fn server_leaf(&self) -> (String, String) {
        self.issue(
            None,
            &["localhost"],
            &[],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client's leaf with this serial number (else a random one).
    fn numbered_leaf(
        &self,
        serial: Option<u64>,
        dns: &[&str],
        email: &[&str],
        cn: &str,
    ) -> (String, String) {
        // Docent maps only certificates stating client authentication.
        self.issue(serial, dns, email, cn, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        serial: Option<u64>,
        dns: &[&str],
        email: &[&str],
        cn: &str,
        purpose: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut p =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.serial_number = serial.map(SerialNumber::from);
        p.extended_key_usages = vec![purpose];
        for e in email {
            p.subject_alt_names
                .push(SanType::Rfc822Name((*e).try_into().unwrap()));
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A revocation list (PEM) of this CA revoking these serial numbers, next updated then.
    fn crl(&self, revoked: &[u64], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: next_update.min(now) - Duration::hours(1),
            next_update,
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// Session 43's review: a server certificate renewed in place was served only after a restart.
/// The files are read again when they change; a new pair that does not load keeps the current
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let env = Env::example();
    let dir = env.dir.path();
    let (old_pki, new_pki) = (Pki::new("Old server CA"), Pki::new("New server CA"));
    let (cert, key) = old_pki.server_leaf();
    let (cert_path, key_path) = (
        write(dir, "server.pem", &cert),
        write(dir, "server.key", &key),
    );
    let text = env.config_text().replace(
        "metrics_listen = \"127.0.0.1:9464\"",
        &format!("tls_cert = {cert_path:?}\ntls_key = {key_path:?}"),
    );
    let d = env.start_with(env.config_from(&text)).await;
    let addr = d.daemon.local_addr();
    let (old_ca, new_ca) = (old_pki.ca.pem(), new_pki.ca.pem());
    assert!(tls_channel(addr, &old_ca, None).await.is_ok());
    assert!(tls_channel(addr, &new_ca, None).await.is_err());
    // A key for another certificate: not served, the old pair stays.
    let (renewed, renewed_key) = new_pki.server_leaf();
    std::fs::write(&cert_path, &renewed).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(tls_channel(addr, &old_ca, None).await.is_ok());
    // The matching key written: the new certificate is served.
    std::fs::write(&key_path, &renewed_key).unwrap();
    eventually(10, "the renewed certificate is served", || async {
        tls_channel(addr, &new_ca, None).await.is_ok()
    })
    .await;
    assert!(tls_channel(addr, &old_ca, None).await.is_err());
    d.stop().await;
}

/// Found by a review: the client's connect timeout covered the TCP connect only, so a peer
/// that accepts and then says nothing (a stalled proxy) held `docent status` in the TLS
/// handshake for ever. It is an error within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_fails_the_tls_handshake_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test CA");
    let ca = write(dir.path(), "ca.pem", &pki.ca.pem());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept() {
            held.push(s);
        }
    });
    let config = docent_client::Config {
        ca: Some(ca.into()),
        token: Some("k".into()),
        ..docent_client::Config::new(&addr)
    };
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        docent_client::Client::connect(&config),
    )
    .await
    .expect("an answer, not a wait for ever");
    assert!(r.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    drop(held);
}

/// Replaces a file whole, as a CA's publishing job would (a reader never sees half of it).
fn replace(path: &str, text: &str) {
    let tmp = format!("{path}.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((c, k)) = client {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

fn search_req(token: &str, on_behalf_of: &str) -> tonic::Request<pb::SearchRequest> {
    authed(
        token,
        pb::SearchRequest {
            query: "salary band senior software engineer".into(),
            limit: 10,
            on_behalf_of: on_behalf_of.into(),
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_api_keys_jwt_mtls_and_on_behalf_of() {
    let env = Env::example();
    let dir = env.dir.path();
    let server_pki = Pki::new("Docent test server CA");
    let (server_cert, server_key) = server_pki.server_leaf();
    let client_pki = Pki::new("Fernhill clients CA");
    let rogue_pki = Pki::new("Rogue CA");

    // JWKS: the committed RSA test key, a fresh P-256 key and an HMAC secret.
    let rsa_jwk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/auth/rs256-test.jwk.json")).unwrap(),
    )
    .unwrap();
    let rsa_pem = std::fs::read(repo().join("tests/fixtures/auth/rs256-test-key.pem")).unwrap();
    let ec = KeyPair::generate().unwrap(); // P-256 (ECDSA_P256_SHA256)
    let point = ec.public_key_raw();
    assert_eq!(point.len(), 65);
    let jwks = serde_json::json!({"keys": [
        rsa_jwk,
        {"kty": "EC", "crv": "P-256", "kid": "ec-test", "alg": "ES256",
         "x": b64(&point[1..33]), "y": b64(&point[33..])},
        {"kty": "oct", "kid": "hs-test", "alg": "HS256", "k": b64(HS_SECRET)},
    ]});

    let ca_path = write(dir, "server-ca.pem", &server_pki.ca.pem());
    let text = env
        .config_text()
        .replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            &format!(
                "tls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\ntls_client_auth = \"optional\"",
                write(dir, "server.pem", &server_cert),
                write(dir, "server.key", &server_key),
                write(dir, "clients-ca.pem", &client_pki.ca.pem()),
            ),
        )
        .replace(
            "# jwks_file = \"/etc/docent/jwks.json\"\n# jwt_issuer = \"https://idp.fernhill.example\"\n# jwt_audience = \"docent\"",
            &format!(
                "jwks_file = {:?}\njwt_issuer = \"https://idp.fernhill.example\"\njwt_audience = \"docent\"\njwt_leeway_secs = 0",
                write(dir, "jwks.json", &jwks.to_string())
            ),
        )
        .replace("jwt_leeway_secs = 30", "")
        + &format!(
            r#"
[[api_keys]]
id = "hana-expired"
identity = "hana"
sha256 = "{}"
expires_at = "2020-01-01T00:00:00Z"

[[api_keys]]
id = "hana-revoked"
identity = "hana"
sha256 = "{}"
revoked = true

[[api_keys]]
id = "bridge-query-only"
identity = "slack-bridge"
sha256 = "{}"
scopes = ["query"]
"#,
            sha("expired-key"),
            sha("revoked-key"),
            sha("bridge-query-key"),
        );
    let config = env.config_from(&text);
    let d = env.start_with(config).await;
    let addr = d.daemon.local_addr();
    let server_ca = std::fs::read_to_string(&ca_path).unwrap();

    // Plaintext to a TLS port gets nowhere.
    if let Ok(ch) = Channel::from_shared(d.url()).unwrap().connect().await {
        let mut plain = pb::assistant_client::AssistantClient::new(ch);
        assert!(plain.search(search_req(HANA, "")).await.is_err());
    }

    let ch = tls_channel(addr, &server_ca, None).await.unwrap();
    let mut c = pb::assistant_client::AssistantClient::new(ch.clone());
    let ok = |r: Result<tonic::Response<pb::SearchResponse>, tonic::Status>| {
        r.unwrap_or_else(|e| panic!("{e:?}")).into_inner()
    };
    let sees_hr = |r: &pb::SearchResponse| search_text(r).contains("compensation-bands-2027.md");

    // Personal tokens and API keys.
    assert!(sees_hr(&ok(c.search(search_req(HANA, "")).await)));
    assert!(!sees_hr(&ok(c.search(search_req(ALICE, "")).await)));
    for (token, code, want) in [
        ("", Code::Unauthenticated, "MISSING_TOKEN"),
        ("nope", Code::Unauthenticated, "INVALID_TOKEN"),
        ("expired-key", Code::Unauthenticated, "KEY_EXPIRED"),
        ("revoked-key", Code::Unauthenticated, "KEY_REVOKED"),
    ] {
        let e = c.search(search_req(token, "")).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (code, want),
            "{token}: {e:?}"
        );
    }

    // JWTs.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = |sub: &str, iss: &str, aud: &str, exp: i64, nbf: i64| serde_json::json!({"sub": sub, "iss": iss, "aud": aud, "exp": exp, "nbf": nbf, "iat": now});
    let good = claims(
        "hana@fernhill.example",
        "https://idp.fernhill.example",
        "docent",
        now + 600,
        now - 10,
    );
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey, c: &serde_json::Value| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, c, key).unwrap()
    };
    let rs = EncodingKey::from_rsa_pem(&rsa_pem).unwrap();
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let hs = EncodingKey::from_secret(HS_SECRET);
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa-test", &rs),
        (Algorithm::ES256, "ec-test", &es),
        (Algorithm::HS256, "hs-test", &hs),
    ] {
        let t = sign(alg, kid, key, &good);
        assert!(sees_hr(&ok(c.search(search_req(&t, "")).await)), "{alg:?}");
    }
    let other_hs = EncodingKey::from_secret(b"some other secret");
    let bad = [
        (
            sign(
                Algorithm::RS256,
                "rsa-test",
                &rs,
                &claims(
                    "hana",
                    "https://idp.fernhill.example",
                    "docent",
                    now - 60,
                    now - 600,
                ),
            ),
            "JWT_EXPIRED",
        ),
        (
            sign(
                Algorithm::ES256,
                "ec-test",
                &es,
                &claims(
                    "hana",
                    "https://idp.fernhill.example",
                    "docent",
                    now + 600,
                    now + 300,
                ),
            ),
            "JWT_NOT_YET_VALID",
        ),
        (
            sign(
                Algorithm::ES256,
                "ec-test",
                &es,
                &claims(
                    "hana",
                    "https://idp.fernhill.example",
                    "docent",
                    now + 10 * 365 * 86_400,
                    now - 10,
                ),
            ),
            "JWT_LIFETIME_TOO_LONG",
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa-test",
                &rs,
                &claims(
                    "hana",
                    "https://evil.example",
                    "docent",
                    now + 600,
                    now - 10,
                ),
            ),
            "JWT_WRONG_ISSUER",
        ),
        (
            sign(
                Algorithm::HS256,
                "hs-test",
                &hs,
                &claims(
                    "hana",
                    "https://idp.fernhill.example",
                    "other-app",
                    now + 600,
                    now - 10,
                ),
            ),
            "JWT_WRONG_AUDIENCE",
        ),
        (
            sign(Algorithm::HS256, "hs-test", &other_hs, &good),
            "JWT_BAD_SIGNATURE",
        ),
        // An HS256 token claiming the RSA key's kid: the key fixes the algorithm.
        (
            sign(Algorithm::HS256, "rsa-test", &hs, &good),
            "JWT_UNKNOWN_KEY",
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa-test",
                &rs,
                &claims(
                    "mallory",
                    "https://idp.fernhill.example",
                    "docent",
                    now + 600,
                    now - 10,
                ),
            ),
            "UNKNOWN_IDENTITY",
        ),
    ];
    for (t, want) in bad {
        let e = c.search(search_req(&t, "")).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (Code::Unauthenticated, want)
        );
    }

    // mTLS: a certificate from the clients CA naming the bridge (SAN DNS = its alias).
    let bridge_cert = client_pki.leaf(&["bridge.fernhill.example"], &[], "slack-bridge");
    let mut m = pb::assistant_client::AssistantClient::new(
        tls_channel(addr, &server_ca, Some(&bridge_cert))
            .await
            .unwrap(),
    );
    let as_hana = ok(m.search(search_req("", "hana")).await);
    assert!(sees_hr(&as_hana), "mTLS bridge acting for hana");
    // Hana's own e-mail in a client certificate maps to her.
    let hana_cert = client_pki.leaf(&[], &["hana@fernhill.example"], "Hana");
    let mut m2 = pb::assistant_client::AssistantClient::new(
        tls_channel(addr, &server_ca, Some(&hana_cert))
            .await
            .unwrap(),
    );
    assert!(sees_hr(&ok(m2.search(search_req("", "")).await)));
    let stranger = client_pki.leaf(&["kiosk.fernhill.example"], &[], "kiosk");
    let mut m3 = pb::assistant_client::AssistantClient::new(
        tls_channel(addr, &server_ca, Some(&stranger))
            .await
            .unwrap(),
    );
    let e = m3.search(search_req("", "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::Unauthenticated, "UNKNOWN_CLIENT_CERT")
    );
    // A certificate from a CA the server does not trust fails the handshake.
    let rogue = rogue_pki.leaf(&["bridge.fernhill.example"], &[], "slack-bridge");
    let rogue_result = match tls_channel(addr, &server_ca, Some(&rogue)).await {
        Err(_) => None,
        Ok(ch) => Some(
            pb::assistant_client::AssistantClient::new(ch)
                .search(search_req("", "hana"))
                .await,
        ),
    };
    assert!(
        rogue_result.as_ref().is_none_or(|r| r.is_err()),
        "untrusted client certificate was accepted: {rogue_result:?}"
    );

    // On-behalf-of with API keys.
    let as_hana = ok(c
        .search(search_req("slack-bridge-dev-key", "hana@fernhill.example"))
        .await);
    assert!(sees_hr(&as_hana));
    let as_alice = ok(c.search(search_req("slack-bridge-dev-key", "alice")).await);
    assert!(
        !sees_hr(&as_alice),
        "the bridge's acting user is alice, not the bridge"
    );
    for (token, user, code, want) in [
        (ALICE, "hana", Code::PermissionDenied, "ACT_AS_DENIED"),
        (
            "bridge-query-key",
            "hana",
            Code::PermissionDenied,
            "ACT_AS_DENIED",
        ),
        (
            "slack-bridge-dev-key",
            "nobody",
            Code::NotFound,
            "UNKNOWN_USER",
        ),
        // Longer than any name: refused before it is looked up or logged.
        (
            ALICE,
            &"x".repeat(10_000),
            Code::InvalidArgument,
            "ON_BEHALF_OF_TOO_LONG",
        ),
    ] {
        let e = c.search(search_req(token, user)).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (code, want),
            "{token} as {user}"
        );
    }
    let mut ask = pb::assistant_client::AssistantClient::new(ch.clone());
    let a = ask
        .ask(authed(
            "slack-bridge-dev-key",
            pb::AskRequest {
                question: "What is the salary band for a senior software engineer?".into(),
                on_behalf_of: "hana".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AnswerStatus::Answered as i32);
    // The bridge's own key cannot call the Admin API (its identity is no admin).
    let mut admin = pb::admin_client::AdminClient::new(ch.clone());
    let e = admin
        .index_stats(authed("slack-bridge-dev-key", pb::IndexStatsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The audit trail: both ids on on-behalf-of requests, refusals included, no question text.
    let records = env.audit_records();
    let obo: Vec<_> = records
        .iter()
        .filter(|r| r["caller"] == "slack-bridge" && r["on_behalf_of"] == "hana")
        .collect();
    assert!(obo.iter().any(|r| r["method"] == "Ask"
        && r["outcome"] == "answered"
        && r["documents"].as_array().unwrap().iter().any(|k| {
            k.as_str()
                .unwrap()
                .ends_with("hr/compensation-bands-2027.md")
        })));
    assert!(obo.iter().any(|r| r["credential"] == "mtls"));
    assert!(
        obo.iter()
            .any(|r| r["credential"] == "api_key:slack-bridge-2026")
    );
    // A refused act_as names whom it asked for (session 42's review: only a log line did).
    assert!(records.iter().any(|r| r["caller"] == "alice"
        && r["outcome"] == "ACT_AS_DENIED"
        && r["on_behalf_of"] == "hana"));
    assert!(records.iter().any(|r| r["caller"] == "slack-bridge"
        && r["outcome"] == "UNKNOWN_USER"
        && r["on_behalf_of"] == "nobody"));
    assert!(records.iter().all(|r| r.get("question").is_none()));
    assert!(
        records
            .iter()
            .any(|r| r["credential"] == "jwt" && r["caller"] == "hana")
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_are_refused_and_a_new_list_applies_to_open_connections() {
    const BRIDGE_SERIAL: u64 = 0x5eed_0001;
    const HANA_SERIAL: u64 = 0x5eed_0002;
    let env = Env::example();
    let dir = env.dir.path();
    let server_pki = Pki::new("Docent test server CA");
    let (server_cert, server_key) = server_pki.server_leaf();
    let client_pki = Pki::new("Fernhill clients CA");
    let bridge_cert = client_pki.numbered_leaf(
        Some(BRIDGE_SERIAL),
        &["bridge.fernhill.example"],
        &[],
        "slack-bridge",
    );
    let hana_cert =
        client_pki.numbered_leaf(Some(HANA_SERIAL), &[], &["hana@fernhill.example"], "Hana");
    let in_a_day = OffsetDateTime::now_utc() + Duration::days(1);
    let crl = write(
        dir,
        "clients.crl",
        &client_pki.crl(&[BRIDGE_SERIAL], in_a_day),
    );
    let server_ca = server_pki.ca.pem();
    let text = env.config_text().replace(
        "metrics_listen = \"127.0.0.1:9464\"",
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\ntls_client_crl = {crl:?}\n\
             tls_client_auth = \"optional\"",
            write(dir, "server.pem", &server_cert),
            write(dir, "server.key", &server_key),
            write(dir, "clients-ca.pem", &client_pki.ca.pem()),
        ),
    );
    let d = env.start_with(env.config_from(&text)).await;
    let addr = d.daemon.local_addr();
    let sees_hr = |r: &pb::SearchResponse| search_text(r).contains("compensation-bands-2027.md");
    // A call over a new connection with this certificate: refused at the handshake (the
    // connection or the call fails in the transport, before any interceptor gives a reason).
    let refused_at_handshake = async |cert: &(String, String)| {
        let call = match tls_channel(addr, &server_ca, Some(cert)).await {
            Err(_) => return true,
            Ok(ch) => {
                pb::assistant_client::AssistantClient::new(ch)
                    .search(search_req("", ""))
                    .await
            }
        };
        match call {
            Ok(_) => false,
            Err(e) => reason(&e).is_empty() && e.code() != Code::Unauthenticated,
        }
    };

    // The listed certificate gets no connection; the other one works.
    assert!(
        refused_at_handshake(&bridge_cert).await,
        "a listed certificate connected"
    );
    let mut hana = pb::assistant_client::AssistantClient::new(
        tls_channel(addr, &server_ca, Some(&hana_cert))
            .await
            .unwrap(),
    );
    let r = hana.search(search_req("", "")).await.unwrap().into_inner();
    assert!(sees_hr(&r), "hana's certificate before its revocation");
    // Bearer tokens over TLS do not depend on the lists.
    let token_only = tls_channel(addr, &server_ca, None).await.unwrap();
    let mut token = pb::assistant_client::AssistantClient::new(token_only);
    let token_works = async |c: &mut pb::assistant_client::AssistantClient<Channel>| {
        sees_hr(&c.search(search_req(HANA, "")).await.unwrap().into_inner())
    };
    assert!(token_works(&mut token).await);

    // A new list revokes hana's certificate: her open connection can make no more calls, and
    // she gets no new one.
    replace(
        &crl,
        &client_pki.crl(&[BRIDGE_SERIAL, HANA_SERIAL], in_a_day),
    );
    let e = hana.search(search_req("", "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::Unauthenticated, "CLIENT_CERT_REVOKED")
    );
    // Nor with a bearer token on it (found by a review: a token skipped the check).
    let e = hana.search(search_req(HANA, "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::Unauthenticated, "CLIENT_CERT_REVOKED")
    );
    assert!(
        refused_at_handshake(&hana_cert).await,
        "a revoked certificate connected"
    );

    // A list past its next update says nothing any more: closed, for open connections too.
    replace(
        &crl,
        &client_pki.crl(
            &[BRIDGE_SERIAL],
            OffsetDateTime::now_utc() - Duration::hours(1),
        ),
    );
    let e = hana.search(search_req("", "")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::Unauthenticated, "CLIENT_CERT_REVOCATION_UNKNOWN")
    );
    assert!(
        refused_at_handshake(&hana_cert).await,
        "an expired list was trusted"
    );
    // So does a file that is no revocation list.
    replace(&crl, "not a revocation list\n");
    let e = hana.search(search_req("", "")).await.unwrap_err();
    assert_eq!(reason(&e), "CLIENT_CERT_REVOCATION_UNKNOWN");
    assert!(
        refused_at_handshake(&hana_cert).await,
        "an unreadable list was trusted"
    );
    assert!(
        token_works(&mut token).await,
        "tokens stopped with the lists"
    );

    // A current list that no longer names her lets her in again, on the open connection too.
    replace(&crl, &client_pki.crl(&[BRIDGE_SERIAL], in_a_day));
    assert!(sees_hr(
        &hana.search(search_req("", "")).await.unwrap().into_inner()
    ));
    let mut again = pb::assistant_client::AssistantClient::new(
        tls_channel(addr, &server_ca, Some(&hana_cert))
            .await
            .unwrap(),
    );
    assert!(sees_hr(
        &again.search(search_req("", "")).await.unwrap().into_inner()
    ));
    assert!(refused_at_handshake(&bridge_cert).await);
    d.stop().await;
}
