//! JWT verification against a local JWKS file (no network): RS256, ES256 (P-256) and HS256
//! (`oct` keys). The algorithm is fixed by the key, never taken from the token alone, so a token
//! cannot pick a weaker algorithm than its key. Issuer, audience, expiry and not-before are
//! always checked; `exp`, `iss`, `aud` and the user claim are required. Keys published for
//! another use (`use` other than `sig`, `key_ops` without `verify`) or another algorithm (`alg`)
//! are left out, and an `oct` key shorter than 32 bytes (HS256's hash size, RFC 7518 3.2) is an
//! error: an empty secret would let anyone sign.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub jwks_file: PathBuf,
    pub issuer: String,
    pub audience: String,
    /// The claim naming the user (an identity id or alias); default `sub`.
    pub user_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// The longest a token may still be valid for when it is presented, seconds: a token that
    /// expires later (a long-lived one an IdP misconfiguration or a leak minted) is refused.
    pub max_lifetime_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("no key in the JWKS matches the token's kid and algorithm")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("valid for longer than the configured maximum lifetime")]
    LifetimeTooLong,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("the e-mail address is not verified (email_verified is not true)")]
    UnverifiedEmail,
}

impl JwtError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "JWT_MALFORMED",
            Self::UnknownKey => "JWT_UNKNOWN_KEY",
            Self::BadSignature => "JWT_BAD_SIGNATURE",
            Self::Expired => "JWT_EXPIRED",
            Self::LifetimeTooLong => "JWT_LIFETIME_TOO_LONG",
            Self::NotYetValid => "JWT_NOT_YET_VALID",
            Self::WrongIssuer => "JWT_WRONG_ISSUER",
            Self::WrongAudience => "JWT_WRONG_AUDIENCE",
            Self::MissingClaim(_) => "JWT_MISSING_CLAIM",
            Self::UnverifiedEmail => "JWT_UNVERIFIED_EMAIL",
        }
    }
}

/// What tells one key from another across reads of the JWKS file: its id and its key material
/// (its type's parameters), not its certificate chain or other metadata an IdP renews without
/// changing the key (a review).
fn key_identity(jwk: &jsonwebtoken::jwk::Jwk) -> String {
    serde_json::to_string(&(&jwk.common.key_id, &jwk.algorithm)).unwrap_or_default()
}

/// The identities ([`key_identity`]) of the keys the JWKS file at `path` lists that read as
/// JWKs one by one, whatever the others are: none when the file cannot be read as JSON. For a
/// failed reload, where the file may not load whole (session 43's review: a new JWKS with one
/// malformed or unsupported key kept every old key, one removed as compromised included).
pub fn keys_listed_in(path: &Path) -> std::collections::BTreeSet<String> {
    let Some(v) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return Default::default();
    };
    v.get("keys")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()).ok())
        .map(|jwk| key_identity(&jwk))
        .collect()
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    /// The JWK as the file gave it, to tell whether a later read still holds this key.
    jwk: String,
}

/// The shortest HS256 secret accepted (RFC 7518 3.2: at least the hash's size).
const MIN_HMAC_KEY_BYTES: usize = 32;

pub struct JwtVerifier {
    keys: Vec<Key>,
    cfg: JwtConfig,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.cfg.issuer)
            .finish()
    }
}

impl JwtVerifier {
    /// Reads the JWKS file. Keys of unsupported types are left out (logged); a file with no key
    /// Docent can use is an error.
    pub fn load(cfg: JwtConfig) -> Result<Self, String> {
        let text = std::fs::read_to_string(&cfg.jwks_file)
            .map_err(|e| format!("{}: {e}", cfg.jwks_file.display()))?;
        Self::from_jwks(&text, cfg)
    }

    pub fn from_jwks(text: &str, cfg: JwtConfig) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let (alg, declared) = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    (Algorithm::ES256, KeyAlgorithm::ES256)
                }
                AlgorithmParameters::OctetKey(p) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p.value.trim_end_matches('='))
                        .map_err(|e| format!("keys[{i}]: `k` is not base64url: {e}"))?;
                    if bytes.len() < MIN_HMAC_KEY_BYTES {
                        return Err(format!(
                            "keys[{i}]: an HS256 key must be at least {MIN_HMAC_KEY_BYTES} bytes \
                             (this one has {})",
                            bytes.len()
                        ));
                    }
                    (Algorithm::HS256, KeyAlgorithm::HS256)
                }
                _ => {
                    // An IdP's JWKS often publishes keys of other types beside the one it signs
                    // with: one such key does not make the file unreadable (a review: it failed
                    // a reload, which kept keys the admin had removed).
                    tracing::info!(
                        key = i,
                        kid = jwk.common.key_id.as_deref().unwrap_or(""),
                        "JWKS key left out: unsupported key type (RSA, EC P-256 and oct are)"
                    );
                    continue;
                }
            };
            let c = &jwk.common;
            let for_signatures = c
                .public_key_use
                .as_ref()
                .is_none_or(|u| matches!(u, PublicKeyUse::Signature))
                && c.key_operations
                    .as_ref()
                    .is_none_or(|ops| ops.iter().any(|o| matches!(o, KeyOperations::Verify)));
            if !for_signatures || c.key_algorithm.is_some_and(|a| a != declared) {
                tracing::info!(
                    key = i,
                    kid = c.key_id.as_deref().unwrap_or(""),
                    "JWKS key left out: published for another use or algorithm"
                );
                continue;
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
                jwk: key_identity(jwk),
            });
        }
        if keys.is_empty() {
            return Err(
                "the JWKS has no keys for verifying RS256, ES256 or HS256 signatures".into(),
            );
        }
        Ok(Self { keys, cfg })
    }

    /// This verifier with only the keys `newer` (a later read of the JWKS file) still holds,
    /// and how many it dropped: after a reload that failed, a key removed from the file (a
    /// compromised one) stops verifying, and no key is added (a review: such a key went on
    /// verifying until a reload succeeded).
    pub fn keeping_only(&self, newer: &JwtVerifier) -> (JwtVerifier, usize) {
        let listed: std::collections::BTreeSet<String> =
            newer.keys.iter().map(|k| k.jwk.clone()).collect();
        self.keeping_listed(&listed)
    }

    /// The keys of this verifier whose identity ([`key_identity`]) is in `listed`, and how
    /// many were dropped.
    pub fn keeping_listed(
        &self,
        listed: &std::collections::BTreeSet<String>,
    ) -> (JwtVerifier, usize) {
        let keys: Vec<Key> = self
            .keys
            .iter()
            .filter(|k| listed.contains(&k.jwk))
            .cloned()
            .collect();
        let dropped = self.keys.len() - keys.len();
        (
            JwtVerifier {
                keys,
                cfg: self.cfg.clone(),
            },
            dropped,
        )
    }

    pub fn path(&self) -> &Path {
        &self.cfg.jwks_file
    }

    /// Verifies the token at time `now` (unix seconds) and returns the user claim.
    pub fn verify(&self, token: &str, now: i64) -> Result<String, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if names_critical_parameters(token) {
            return Err(JwtError::Malformed);
        }
        // A token without `kid` may be signed by any key of its algorithm (during a rotation
        // the JWKS holds two): each is tried until one's signature matches.
        let mut last = JwtError::UnknownKey;
        for key in self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (None, _) => true,
                (Some(_), None) => false,
            })
        {
            match self.verify_with(key, token, now) {
                Err(JwtError::BadSignature) => last = JwtError::BadSignature,
                r => return r,
            }
        }
        Err(last)
    }

    fn verify_with(&self, key: &Key, token: &str, now: i64) -> Result<String, JwtError> {
        let mut v = Validation::new(key.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // Time checks are done here against `now` so tests can pin the clock (and so a clock set
        // before 1970 refuses rather than panics in the library's own reading of it; a review).
        v.validate_nbf = false;
        v.validate_exp = false;
        v.leeway = self.cfg.leeway_secs;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &v)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidSignature => JwtError::BadSignature,
                    ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
                    ErrorKind::InvalidAudience => JwtError::WrongAudience,
                    ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
                    ErrorKind::InvalidAlgorithm => JwtError::UnknownKey,
                    _ => JwtError::Malformed,
                })?;
        let claims = data.claims;
        let leeway = self.cfg.leeway_secs as i64;
        let num = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        let exp = num("exp").ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
        if now > exp.saturating_add(leeway) {
            return Err(JwtError::Expired);
        }
        let max = i64::try_from(self.cfg.max_lifetime_secs).unwrap_or(i64::MAX);
        // Still valid for too long from now, or issued for too long: a token minted for ten
        // years is refused in its last day too (a second review).
        let issued_for_too_long =
            num("iat").is_some_and(|iat| exp.saturating_sub(iat) > max.saturating_add(leeway));
        if exp > now.saturating_add(max).saturating_add(leeway) || issued_for_too_long {
            return Err(JwtError::LifetimeTooLong);
        }
        // An `nbf` that is there and not a whole number of seconds is not ignored (a review).
        let nbf = match claims.get("nbf") {
            None => None,
            Some(_) => Some(num("nbf").ok_or(JwtError::Malformed)?),
        };
        if let Some(nbf) = nbf
            && now.saturating_add(leeway) < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        // An e-mail address names the identity only when the IdP says it verified it: some let
        // users set their own address (an unverified `email` equal to an admin's alias would
        // sign in as that admin).
        if self.cfg.user_claim == "email"
            && claims.get("email_verified") != Some(&serde_json::Value::Bool(true))
        {
            return Err(JwtError::UnverifiedEmail);
        }
        claims
            .get(&self.cfg.user_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| JwtError::MissingClaim(self.cfg.user_claim.clone()))
    }
}

/// Whether the token's header lists parameters the verifier must understand (`crit`, RFC 7515
/// §4.1.11): Docent understands none, so such a token is refused rather than read without them
/// (a review: the library's header has no such field, and dropped it). A header that does not
/// decode counts as naming some.
fn names_critical_parameters(token: &str) -> bool {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok())
        .is_none_or(|h| h.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &[u8] = b"test-only-hs256-secret-0123456789";

    fn verifier() -> JwtVerifier {
        let jwks = serde_json::json!({"keys": [{
            "kty": "oct", "kid": "hs1", "alg": "HS256",
            "k": base64url(SECRET),
        }]});
        JwtVerifier::from_jwks(
            &jwks.to_string(),
            JwtConfig {
                jwks_file: PathBuf::new(),
                issuer: "https://idp.test".into(),
                audience: "docent".into(),
                user_claim: "sub".into(),
                leeway_secs: 0,
                max_lifetime_secs: 86_400,
            },
        )
        .unwrap()
    }

    fn base64url(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn token(claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("hs1".into());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn claims_are_checked() {
        let v = verifier();
        let ok = serde_json::json!({"sub": "alice", "iss": "https://idp.test", "aud": "docent",
            "exp": 1_000, "nbf": 500});
        assert_eq!(v.verify(&token(ok.clone()), 700), Ok("alice".into()));
        assert_eq!(v.verify(&token(ok.clone()), 1_001), Err(JwtError::Expired));
        assert_eq!(
            v.verify(&token(ok.clone()), 499),
            Err(JwtError::NotYetValid)
        );
        let mut wrong = ok.clone();
        wrong["iss"] = "https://evil.test".into();
        assert_eq!(v.verify(&token(wrong), 700), Err(JwtError::WrongIssuer));
        let mut wrong = ok.clone();
        wrong["aud"] = "other".into();
        assert_eq!(v.verify(&token(wrong), 700), Err(JwtError::WrongAudience));
        let mut no_sub = ok.clone();
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            v.verify(&token(no_sub), 700),
            Err(JwtError::MissingClaim("sub".into()))
        );
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &ok,
            &EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        assert_eq!(v.verify(&forged, 700), Err(JwtError::BadSignature));
        assert_eq!(v.verify("a.b.c", 700), Err(JwtError::Malformed));
    }

    /// Found by a review: a header's `crit` list (parameters the verifier must understand) was
    /// dropped unread, and an `nbf` that is not a number was ignored. Both refuse now.
    #[test]
    fn critical_header_parameters_and_a_malformed_nbf_are_refused() {
        let v = verifier();
        let claims = serde_json::json!({"sub": "alice", "iss": "https://idp.test",
            "aud": "docent", "exp": 1_000});
        let signed = |header: serde_json::Value, claims: &serde_json::Value| {
            let msg = format!(
                "{}.{}",
                base64url(header.to_string().as_bytes()),
                base64url(claims.to_string().as_bytes())
            );
            let sig = jsonwebtoken::crypto::sign(
                msg.as_bytes(),
                &EncodingKey::from_secret(SECRET),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{msg}.{sig}")
        };
        let plain = serde_json::json!({"alg": "HS256", "kid": "hs1", "typ": "JWT"});
        assert_eq!(
            v.verify(&signed(plain.clone(), &claims), 700),
            Ok("alice".into())
        );
        let critical = serde_json::json!({"alg": "HS256", "kid": "hs1", "crit": ["bound"],
            "bound": true});
        assert_eq!(
            v.verify(&signed(critical, &claims), 700),
            Err(JwtError::Malformed)
        );
        let mut later = claims.clone();
        later["nbf"] = "9999999999".into();
        assert_eq!(
            v.verify(&signed(plain, &later), 700),
            Err(JwtError::Malformed)
        );
    }

    /// Found by a review: with `user_claim = "email"`, an address the IdP never verified named
    /// the identity.
    #[test]
    fn an_email_claim_names_the_identity_only_when_verified() {
        let mut v = verifier();
        v.cfg.user_claim = "email".into();
        let claims = |verified: serde_json::Value| {
            serde_json::json!({"sub": "x1", "email": "alice@corp.example",
                "email_verified": verified, "iss": "https://idp.test", "aud": "docent",
                "exp": 1_000})
        };
        assert_eq!(
            v.verify(&token(claims(true.into())), 700),
            Ok("alice@corp.example".into())
        );
        for unverified in [false.into(), "true".into(), serde_json::Value::Null] {
            assert_eq!(
                v.verify(&token(claims(unverified)), 700),
                Err(JwtError::UnverifiedEmail)
            );
        }
    }

    /// A token without `kid` is checked against every key of its algorithm (session 30's
    /// review: only the first was tried, so during a key rotation tokens of the new key failed).
    #[test]
    fn a_token_without_kid_is_checked_against_every_key_of_its_algorithm() {
        const NEW: &[u8] = b"test-only-hs256-secret-rotated-987";
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "old", "alg": "HS256", "k": base64url(SECRET)},
            {"kty": "oct", "kid": "new", "alg": "HS256", "k": base64url(NEW)},
        ]});
        let v = JwtVerifier::from_jwks(&jwks.to_string(), verifier().cfg).unwrap();
        let claims = serde_json::json!({"sub": "alice", "iss": "https://idp.test",
            "aud": "docent", "exp": 1_000});
        let signed = |secret: &[u8]| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        assert_eq!(v.verify(&signed(SECRET), 700), Ok("alice".into()));
        assert_eq!(v.verify(&signed(NEW), 700), Ok("alice".into()));
        assert_eq!(
            v.verify(&signed(b"neither of the two keys, at all"), 700),
            Err(JwtError::BadSignature)
        );
    }

    /// Session 31's review: an empty `oct` key loaded (anyone could sign), and keys published
    /// for encryption or another algorithm verified signatures.
    #[test]
    fn short_secrets_are_refused_and_keys_for_other_uses_left_out() {
        let cfg = || verifier().cfg;
        for k in ["", "c2hvcnQ"] {
            let jwks = serde_json::json!({"keys": [{"kty": "oct", "kid": "x", "k": k}]});
            let e = JwtVerifier::from_jwks(&jwks.to_string(), cfg()).unwrap_err();
            assert!(e.contains("at least 32 bytes"), "{e}");
        }
        let good =
            serde_json::json!({"kty": "oct", "kid": "sig", "alg": "HS256", "k": base64url(SECRET)});
        for other in [
            serde_json::json!({"kty": "oct", "kid": "enc", "use": "enc", "k": base64url(b"an encryption key, not for signing")}),
            serde_json::json!({"kty": "oct", "kid": "ops", "key_ops": ["sign"], "k": base64url(b"a signing-only key, never verifies")}),
            serde_json::json!({"kty": "oct", "kid": "512", "alg": "HS512", "k": base64url(b"a key for HS512 and nothing else..")}),
        ] {
            let only = serde_json::json!({"keys": [other.clone()]});
            assert!(JwtVerifier::from_jwks(&only.to_string(), cfg()).is_err());
            let both = serde_json::json!({"keys": [good.clone(), other]});
            assert_eq!(
                JwtVerifier::from_jwks(&both.to_string(), cfg())
                    .unwrap()
                    .keys
                    .len(),
                1
            );
        }
    }

    /// `exp` near `i64::MAX` plus the leeway overflowed (a panic in debug builds).
    #[test]
    fn an_exp_at_the_end_of_time_does_not_overflow() {
        let mut v = verifier();
        v.cfg.leeway_secs = 60;
        let claims = serde_json::json!({"sub": "alice", "iss": "https://idp.test",
            "aud": "docent", "exp": i64::MAX});
        let t = jsonwebtoken::encode(
            &Header {
                kid: Some("hs1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        // Refused for its lifetime, without overflowing; with no limit it signs in.
        assert_eq!(v.verify(&t, 700), Err(JwtError::LifetimeTooLong));
        v.cfg.max_lifetime_secs = u64::MAX;
        assert_eq!(v.verify(&t, 700), Ok("alice".into()));
    }

    /// Session 40's note: a token valid for years (minted by a leaked key or a misconfigured
    /// IdP) was accepted for all of them.
    #[test]
    fn a_token_valid_for_longer_than_the_maximum_lifetime_is_refused() {
        let mut v = verifier();
        v.cfg.max_lifetime_secs = 3_600;
        v.cfg.leeway_secs = 30;
        let at = |exp: i64| {
            token(
                serde_json::json!({"sub": "alice", "iss": "https://idp.test",
                "aud": "docent", "exp": exp}),
            )
        };
        assert_eq!(v.verify(&at(1_000 + 3_630), 1_000), Ok("alice".into()));
        assert_eq!(
            v.verify(&at(1_000 + 3_631), 1_000),
            Err(JwtError::LifetimeTooLong)
        );
        // The same token later in its life is within the limit, unless it says when it was
        // issued, and that was longer ago than the limit allows.
        assert_eq!(v.verify(&at(1_000 + 3_631), 1_100), Ok("alice".into()));
        let issued = |iat: i64, exp: i64| {
            token(
                serde_json::json!({"sub": "alice", "iss": "https://idp.test",
                "aud": "docent", "exp": exp, "iat": iat}),
            )
        };
        assert_eq!(
            v.verify(&issued(0, 10 * 365 * 86_400), 10 * 365 * 86_400 - 60),
            Err(JwtError::LifetimeTooLong)
        );
        assert_eq!(v.verify(&issued(1_000, 4_600), 1_100), Ok("alice".into()));
        assert_eq!(JwtError::LifetimeTooLong.reason(), "JWT_LIFETIME_TOO_LONG");
    }
}
