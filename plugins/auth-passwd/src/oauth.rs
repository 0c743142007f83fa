//! Bearer tokens for OAUTHBEARER and XOAUTH2: JSON Web Tokens signed with
//! HMAC-SHA-256 (`HS256`, RFC 7519 / RFC 7518) by an issuer that shares a
//! secret with this plugin, checked locally without any network call.
//!
//! A token is accepted when its signature verifies, it has not expired
//! (`exp`, required) and is already valid (`nbf`, if present), its `iss`
//! and `aud` match the configured ones (when configured), and the user
//! named by the configured claim exists in the passwd-file. The login name
//! the client gave, if any, must be that user.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Longest token accepted (a JWT with a few claims is a few hundred bytes).
const MAX_TOKEN_LEN: usize = 8192;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: i64 = 60;

/// How tokens are checked (`oauth_*` config keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The shared HS256 key.
    pub secret: Vec<u8>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud` (a string, or one of a list), if set.
    pub audience: Option<String>,
    /// The claim naming the user (`sub` by default; `email` is common).
    pub user_claim: String,
}

/// Checks a token's signature and claims at time `now` (Unix seconds);
/// returns the user it names.
pub fn validate(config: &OAuthConfig, token: &str, now: i64) -> Result<String, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token too long".into());
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token is not a JWS compact serialization".into());
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header: Value = decode_json(header).ok_or("token header is not base64url JSON")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("token algorithm is not HS256".into());
    }
    let signature = B64URL
        .decode(signature)
        .map_err(|_| "token signature is not base64url")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&config.secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "token signature does not verify")?;
    let claims: Value = decode_json(payload).ok_or("token payload is not base64url JSON")?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("token has no exp claim")?;
    if now > exp + LEEWAY_SECS {
        return Err("token expired".into());
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && now + LEEWAY_SECS < nbf
    {
        return Err("token not yet valid".into());
    }
    if let Some(iss) = &config.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss)
    {
        return Err("token issuer does not match".into());
    }
    if let Some(aud) = &config.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err("token audience does not match".into());
        }
    }
    claims
        .get(&config.user_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("token has no {} claim", config.user_claim))
}

fn decode_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&B64URL.decode(part).ok()?).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Signs `claims` with `secret` (what an issuer does).
    pub fn sign(secret: &[u8], claims: &str) -> String {
        let head = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let body = B64URL.encode(claims);
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{head}.{body}").as_bytes());
        let sig = B64URL.encode(mac.finalize().into_bytes());
        format!("{head}.{body}.{sig}")
    }

    fn config() -> OAuthConfig {
        OAuthConfig {
            secret: b"s3cret".to_vec(),
            issuer: Some("https://idp.example".into()),
            audience: Some("poplar".into()),
            user_claim: "sub".into(),
        }
    }

    const GOOD: &str =
        r#"{"sub":"alice","iss":"https://idp.example","aud":["x","poplar"],"exp":2000}"#;

    #[test]
    fn accepts_a_good_token() {
        assert_eq!(
            validate(&config(), &sign(b"s3cret", GOOD), 1000),
            Ok("alice".into())
        );
    }

    #[test]
    fn refuses_bad_tokens() {
        let c = config();
        let cases = [
            (sign(b"other", GOOD), "signature does not verify"),
            (sign(b"s3cret", GOOD), "expired"),
            (
                sign(b"s3cret", &GOOD.replace("idp.example", "evil.example")),
                "issuer",
            ),
            (
                sign(b"s3cret", &GOOD.replace("poplar", "other")),
                "audience",
            ),
            (
                sign(b"s3cret", &GOOD.replace(r#","exp":2000"#, "")),
                "no exp",
            ),
            (
                sign(b"s3cret", &GOOD.replace("sub", "email")),
                "no sub claim",
            ),
            (
                sign(
                    b"s3cret",
                    &GOOD.replace(r#""exp":2000"#, r#""exp":9999,"nbf":5000"#),
                ),
                "not yet valid",
            ),
            ("a.b".into(), "not a JWS"),
            ("!.!.!".into(), "header"),
            ("x".repeat(9000), "too long"),
        ];
        for (token, why) in cases {
            let now = if why == "expired" { 2061 } else { 1000 };
            let err = validate(&c, &token, now).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
        // alg=none and other algorithms are refused outright.
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none"}"#),
            B64URL.encode(GOOD)
        );
        assert!(validate(&c, &none, 1000).unwrap_err().contains("HS256"));
    }
}
