//! Authentication as a tonic interceptor: the caller is resolved before any handler runs and
//! placed in the request extensions. Order: a bearer token (JWT, personal token or API key) if
//! one is sent; else a verified client certificate (mTLS) mapped to an identity through its
//! names, if its issuer's revocation list (when configured) still allows it; else, only under
//! `--insecure-dev`, the `x-docent-user` header. Anything else:
//! UNAUTHENTICATED with a stable reason. The identity store is read per request from a swap
//! cell, so a reload takes effect for the next request.
//!
//! A service can demand a permission of every caller ([`Requirement`]): the Admin service
//! demands an admin, the Ingest service the `ingest` permission. The interceptor runs on the
//! request headers, before the body is read or decoded, so a caller without that permission
//! learns nothing (no connector or source name, no job id) and cannot make the daemon buffer
//! a large request body.

use tonic::{Request, Status};

use super::ServiceError;
use super::tls::{Revocations, Revoked};
use crate::identity::{AuthError, Caller, SharedIdentities};

/// Header naming the user under `--insecure-dev` (no credential checked); one definition, in
/// the proto crate, shared with the clients.
pub use docent_proto::DEV_USER_HEADER;

/// What a whole service demands of every caller, checked before the request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Authentication only; handlers check the rest (Assistant: the effective caller's query
    /// permission, after `on_behalf_of`).
    Authenticated,
    Admin,
    Ingest,
}

/// Filled by the interceptor with who the caller is, for layers outside it (the refusal audit)
/// that see the request before authentication and the response after it.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(std::sync::Arc<std::sync::Mutex<Slot>>);

#[derive(Debug, Default)]
struct Slot {
    caller: Option<(String, String)>,
    acting_for: Option<String>,
}

impl CallerSlot {
    fn set(&self, caller: &Caller) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).caller = Some((
            caller.user_id().to_string(),
            caller.credential().to_string(),
        ));
    }

    /// (identity id, credential kind), if the request was authenticated.
    pub fn get(&self) -> Option<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .caller
            .clone()
    }

    /// Records the user or audience the request asks to act for (`on_behalf_of`), for the
    /// refusal audit (a review: a refused one was named in a log line only, so a service key
    /// walking through user names left "UNKNOWN_USER" records naming no one).
    pub fn set_acting_for(&self, name: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).acting_for = Some(name.to_string());
    }

    pub fn acting_for(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acting_for
            .clone()
    }
}

#[derive(Clone)]
pub struct AuthInterceptor {
    identities: SharedIdentities,
    insecure_dev: bool,
    requires: Requirement,
    /// The client CA's revocation lists, checked again at every call a certificate
    /// authenticates: a connection opened before a revocation cannot go on using it.
    revocations: Option<std::sync::Arc<Revocations>>,
}

impl AuthInterceptor {
    pub fn new(identities: SharedIdentities, insecure_dev: bool) -> Self {
        Self {
            identities,
            insecure_dev,
            requires: Requirement::Authenticated,
            revocations: None,
        }
    }

    /// The same interceptor checking client certificates against these revocation lists.
    pub fn with_revocations(self, revocations: Option<std::sync::Arc<Revocations>>) -> Self {
        Self {
            revocations,
            ..self
        }
    }

    /// The same interceptor demanding `r` of every caller.
    pub fn requiring(&self, r: Requirement) -> Self {
        Self {
            requires: r,
            ..self.clone()
        }
    }

    fn authenticate(&self, req: &Request<()>) -> Result<Caller, AuthError> {
        let store = self.identities.load();
        let md = req.metadata();
        // rustls has verified the chain against the configured client CA, and the revocation
        // lists as they were at the handshake; they may have changed since. Checked whatever
        // authenticates the call: a connection whose certificate was revoked goes on with
        // nothing, a bearer token included.
        if let Some(certs) = req.peer_certs()
            && !certs.is_empty()
            && let Some(r) = &self.revocations
        {
            r.check(&certs).map_err(|e| match e {
                Revoked::Listed => AuthError::CertificateRevoked,
                Revoked::Unknown(why) => {
                    tracing::debug!(reason = %why, "client certificate no longer accepted");
                    AuthError::RevocationUnknown
                }
            })?;
        }
        if let Some(h) = md.get("authorization") {
            // Two of them: a proxy that checks or adds one sees another caller than this
            // daemon would. Refused rather than guessed.
            if md.get_all("authorization").iter().nth(1).is_some() {
                return Err(AuthError::InvalidToken);
            }
            let h = h.to_str().map_err(|_| AuthError::InvalidToken)?;
            // The scheme's case does not matter (RFC 9110 §11.1).
            let token = h
                .get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &h[7..])
                .ok_or(AuthError::InvalidToken)?
                .trim();
            return store.authenticate_bearer(token);
        }
        if let Some(certs) = req.peer_certs()
            && let Some(leaf) = certs.first()
        {
            return store.authenticate_cert(&cert_names(leaf.as_ref()));
        }
        if self.insecure_dev
            && let Some(user) = md.get(DEV_USER_HEADER).and_then(|v| v.to_str().ok())
        {
            return store.insecure_dev_user(user.trim());
        }
        Err(AuthError::MissingCredentials)
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.authenticate(&req).map_err(ServiceError::from)?;
        tracing::debug!(
            user = %crate::guardrail::pii::for_log(caller.user_id()),
            credential = caller.credential(),
            "authenticated"
        );
        if let Some(slot) = req.extensions().get::<CallerSlot>() {
            slot.set(&caller);
        }
        match self.requires {
            Requirement::Authenticated => {}
            Requirement::Admin if !caller.is_admin() => {
                return Err(ServiceError::AdminRequired.into());
            }
            Requirement::Ingest if !caller.permissions().ingest => {
                return Err(ServiceError::ScopeDenied("ingest documents").into());
            }
            Requirement::Admin | Requirement::Ingest => {}
        }
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// A certificate's names in mapping order: SAN e-mail addresses, SAN DNS names, SAN URIs; the
/// subject common name only when the certificate has no subject alternative name at all (as
/// RFC 6125 reads names: a certificate naming `mallory@partner.example` in a SAN is not also
/// taken for the `alice` its CN may say). An unparsable certificate has none (and so maps to
/// nobody), and so has one that does not state client authentication as an extended key usage:
/// TLS accepts a certificate without that extension for any purpose, so a host certificate the
/// same CA issued to a server (`DNS:reports`) would sign in as the identity its name names
/// (session 40's note).
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        _ => {
            // At debug, as other refusals here: it is logged at every call the certificate
            // makes (a second review).
            tracing::debug!(
                "client certificate does not state client authentication (extended key usage \
                 clientAuth); it names nobody"
            );
            return Vec::new();
        }
    }
    let mut names = Vec::new();
    let has_san = match cert.subject_alternative_name() {
        Ok(Some(san)) => !san.value.general_names.is_empty(),
        Ok(None) => false,
        // Present but unreadable: no name is trusted.
        Err(_) => return Vec::new(),
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for rank in 0..3 {
            for n in &san.value.general_names {
                match (rank, n) {
                    (0, GeneralName::RFC822Name(s))
                    | (1, GeneralName::DNSName(s))
                    | (2, GeneralName::URI(s)) => names.push(s.to_string()),
                    _ => {}
                }
            }
        }
    }
    if !has_san {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_string());
            }
        }
    }
    names
}

/// The authenticated caller of a request; fails closed if the interceptor did not run.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, ServiceError> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(ServiceError::Auth(AuthError::MissingCredentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_names_in_mapping_order() {
        let mut p = rcgen::CertificateParams::new(vec!["bridge.corp.example".to_string()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "bridge@corp.example".try_into().unwrap(),
        ));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "slack-bridge");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            cert_names(cert.der()),
            ["bridge@corp.example", "bridge.corp.example"],
            "the common name counts only without SANs"
        );
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "slack-bridge");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(cert_names(cert.der()), ["slack-bridge"]);
        assert!(cert_names(b"not a certificate").is_empty());
    }

    /// Session 40's note: a certificate without an extended key usage is valid for any purpose,
    /// so a host certificate (`DNS:reports`) signed in as the identity `reports`.
    #[test]
    fn a_certificate_not_stating_client_authentication_names_nobody() {
        let key = rcgen::KeyPair::generate().unwrap();
        let with = |eku: Vec<rcgen::ExtendedKeyUsagePurpose>| {
            let mut p = rcgen::CertificateParams::new(vec!["reports".to_string()]).unwrap();
            p.extended_key_usages = eku;
            cert_names(p.self_signed(&key).unwrap().der())
        };
        use rcgen::ExtendedKeyUsagePurpose::{Any, ClientAuth, ServerAuth};
        assert!(with(vec![]).is_empty(), "no extended key usage");
        assert!(with(vec![ServerAuth]).is_empty(), "a server's");
        assert!(
            with(vec![Any]).is_empty(),
            "any purpose is not client authentication"
        );
        assert_eq!(with(vec![ServerAuth, ClientAuth]), ["reports"]);
    }
}
