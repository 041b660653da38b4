//! Slack request signatures (the v0 scheme): `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw
//! body}` under the signing secret, compared in constant time, with the timestamp within five
//! minutes of now (a captured request cannot be replayed later).
//!
//! Must never: parse or act on a body before it is verified, or compare signatures with `==`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way.
pub const MAX_AGE_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("request timestamp outside the 5-minute window")]
    Stale,
    #[error("bad signature")]
    BadSignature,
}

impl VerifyError {
    /// Label for the rejection metric.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Stale => "stale",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// What can be checked before the body is read: both headers present, and the timestamp
/// within the window. A request failing this is refused without reading its body.
pub fn fresh(
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_unix: i64,
) -> Result<(), VerifyError> {
    let (Some(ts), Some(_)) = (timestamp, signature) else {
        return Err(VerifyError::Missing);
    };
    let t: i64 = ts.trim().parse().map_err(|_| VerifyError::Stale)?;
    // `abs_diff`: a hostile timestamp such as `i64::MIN` must not overflow.
    if now_unix.abs_diff(t) > MAX_AGE_SECS.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

/// Verifies one request: `timestamp` and `signature` are the raw header values.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    fresh(timestamp, signature, now_unix)?;
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(VerifyError::Missing);
    };
    let given = sig
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::BadSignature)?;
    let mut mac = mac(secret, ts);
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)
}

/// The `X-Slack-Signature` value for a body (used by the tests and the benchmark to sign like
/// Slack does).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = mac(secret, timestamp);
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &str, ts: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIG);
        let now = TS.parse::<i64>().unwrap() + 10;
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), now),
            Ok(())
        );
    }

    #[test]
    fn an_extreme_timestamp_is_stale_and_does_not_overflow() {
        for ts in ["-9223372036854775808", "9223372036854775807"] {
            assert_eq!(
                verify("s", Some(ts), Some("v0=00"), b"", 1_700_000_000),
                Err(VerifyError::Stale),
                "{ts}"
            );
        }
    }

    #[test]
    fn a_changed_body_secret_or_signature_is_refused() {
        let now = TS.parse::<i64>().unwrap();
        let body = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), body.as_bytes(), now),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify("other", Some(TS), Some(SIG), BODY.as_bytes(), now),
            Err(VerifyError::BadSignature)
        );
        for sig in ["", "v0=", "v0=zz", "v1=a2114d57", &SIG[..SIG.len() - 2]] {
            assert_eq!(
                verify(SECRET, Some(TS), Some(sig), BODY.as_bytes(), now),
                Err(VerifyError::BadSignature),
                "{sig}"
            );
        }
        assert_eq!(
            verify(SECRET, None, Some(SIG), BODY.as_bytes(), now),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_five_minutes() {
        let t = TS.parse::<i64>().unwrap();
        let ok = |now| verify(SECRET, Some(TS), Some(SIG), BODY.as_bytes(), now);
        assert_eq!(ok(t + MAX_AGE_SECS), Ok(()));
        assert_eq!(ok(t - MAX_AGE_SECS), Ok(()));
        assert_eq!(ok(t + MAX_AGE_SECS + 1), Err(VerifyError::Stale));
        assert_eq!(ok(t - MAX_AGE_SECS - 1), Err(VerifyError::Stale));
    }
}
