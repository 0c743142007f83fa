//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, server side (RFC 5802, RFC 7677),
//! with `tls-exporter` channel binding (RFC 9266).
//!
//! Sans I/O like the rest of the protocol: [`ClientFirst::parse`] reads the
//! client's first message, the session asks the auth plugin for the user's
//! stored verifier, [`Exchange::new`] makes the server's first message and
//! [`Exchange::finish`] checks the client's proof and makes the server's
//! final message. The server never learns the password; the plugin only
//! hands out the salted verifier (salt, iterations, StoredKey, ServerKey).
//!
//! Unknown users get an exchange built on a made-up verifier that cannot
//! succeed but looks and costs the same, so the answer does not tell
//! whether the user exists.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The only channel binding type offered: RFC 9266, for TLS 1.3.
pub const CHANNEL_BINDING: &str = "tls-exporter";

/// Iteration count of the verifiers made up for unknown users.
const FAKE_ITERATIONS: u32 = 4096;

/// A stored SCRAM-SHA-256 verifier (RFC 5802 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Verifier {
    /// Derives a verifier from a clear-text password, for auth backends
    /// that can hand out only that (RFC 5802 §3; the password is used as
    /// given, without SASLprep).
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Verifier {
        let salted = hi(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key").to_vec(),
        }
    }

    /// Dovecot's passwd-file form, `<iterations>,<salt>,<stored key>,<server
    /// key>` (base64), as `{SCRAM-SHA-256}` stores it.
    pub fn to_dovecot(&self) -> String {
        format!(
            "{},{},{},{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    /// A verifier that no proof matches, the same for every call with the
    /// same `user` and `secret` (so a probing client sees a stable salt).
    pub fn unmatchable(user: &str, secret: &[u8]) -> Verifier {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"poplar scram salt\0");
        mac.update(user.as_bytes());
        let salt = mac.finalize().into_bytes()[..16].to_vec();
        // Random-looking keys with no known preimage.
        let key = hmac(secret, user.as_bytes());
        Verifier {
            salt,
            iterations: FAKE_ITERATIONS,
            stored_key: key.to_vec(),
            server_key: key.to_vec(),
        }
    }
}

/// RFC 5802 `Hi`: PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations.max(1))
}

fn to32(m: HmacSha256) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    to32(m)
}

/// Why an exchange failed. `Malformed` and `ChannelBinding` are the
/// client's fault; `Proof` is a wrong password (or an unknown user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    Malformed(&'static str),
    ChannelBinding(&'static str),
    /// An authorization identity other than the user (not supported).
    Authzid,
    Proof,
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramError::Malformed(why) => write!(f, "malformed SCRAM message: {why}"),
            ScramError::ChannelBinding(why) => write!(f, "channel binding: {why}"),
            ScramError::Authzid => f.write_str("authorization identity not supported"),
            ScramError::Proof => f.write_str("wrong proof"),
        }
    }
}

/// How the client answered the channel binding question (RFC 5802 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but thinks the server does not.
    NotOffered,
    /// `p=tls-exporter`.
    TlsExporter,
}

/// The client's first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name (`n=`), with `=2C`/`=3D` decoded.
    pub user: String,
    gs2_header: String,
    bare: String,
    nonce: String,
    binding: Binding,
}

impl ClientFirst {
    /// Parses `client-first-message`. `plus` is whether the client chose the
    /// `-PLUS` mechanism; `binding_offered` whether this server offered
    /// `-PLUS` on this connection (so a `y` flag means a downgrade).
    pub fn parse(msg: &str, plus: bool, binding_offered: bool) -> Result<ClientFirst, ScramError> {
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let binding = match flag {
            "n" => Binding::None,
            "y" => Binding::NotOffered,
            _ => match flag.strip_prefix("p=") {
                Some(CHANNEL_BINDING) => Binding::TlsExporter,
                Some(_) => {
                    return Err(ScramError::ChannelBinding(
                        "unsupported channel binding type",
                    ));
                }
                None => return Err(ScramError::Malformed("bad channel binding flag")),
            },
        };
        match (plus, binding) {
            (true, Binding::TlsExporter) | (false, Binding::None) => {}
            (false, Binding::NotOffered) if !binding_offered => {}
            (false, Binding::NotOffered) => {
                return Err(ScramError::ChannelBinding(
                    "client did not use the channel binding the server offered",
                ));
            }
            (true, _) => {
                return Err(ScramError::ChannelBinding(
                    "SCRAM-SHA-256-PLUS requires p=tls-exporter",
                ));
            }
            (false, Binding::TlsExporter) => {
                return Err(ScramError::ChannelBinding(
                    "channel binding requires SCRAM-SHA-256-PLUS",
                ));
            }
        }
        let mut fields = bare.split(',');
        let user = match fields.next() {
            Some(f) if f.starts_with("m=") => {
                return Err(ScramError::Malformed("unsupported mandatory extension"));
            }
            Some(f) => f
                .strip_prefix("n=")
                .ok_or(ScramError::Malformed("no user name"))?,
            None => return Err(ScramError::Malformed("no user name")),
        };
        let user = decode_saslname(user)?;
        if user.is_empty() {
            return Err(ScramError::Malformed("empty user name"));
        }
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed("bad nonce"));
        }
        if !authzid.is_empty() {
            let a = authzid
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authorization identity"))?;
            if decode_saslname(a)? != user {
                return Err(ScramError::Authzid);
            }
        }
        Ok(ClientFirst {
            user,
            gs2_header: format!("{flag},{authzid},"),
            bare: bare.to_string(),
            nonce: nonce.to_string(),
            binding,
        })
    }
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is
/// an error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An exchange after the server's first message.
#[derive(Debug, Clone)]
pub struct Exchange {
    first: ClientFirst,
    server_first: String,
    verifier: Verifier,
    /// False for the made-up verifier of an unknown user.
    real: bool,
    /// The TLS exporter value, when the client asked to bind to it.
    channel_binding: Option<Vec<u8>>,
}

impl Exchange {
    /// Starts the exchange: `server_nonce` must be unpredictable (printable,
    /// no commas: base64 of random bytes will do); `real` is false when the
    /// verifier was made up for an unknown user. `channel_binding` is the
    /// connection's `tls-exporter` value, if TLS 1.3 is up.
    pub fn new(
        first: ClientFirst,
        verifier: Verifier,
        real: bool,
        server_nonce: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<Exchange, ScramError> {
        let channel_binding = match first.binding {
            Binding::TlsExporter => Some(channel_binding.ok_or(ScramError::ChannelBinding(
                "no tls-exporter value on this connection",
            ))?),
            _ => None,
        };
        let server_first = format!(
            "r={}{},s={},i={}",
            first.nonce,
            server_nonce,
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok(Exchange {
            first,
            server_first,
            verifier,
            real,
            channel_binding,
        })
    }

    /// The user this exchange is for.
    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// `server-first-message`.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks `client-final-message`; on success returns
    /// `server-final-message` (`v=…`).
    pub fn finish(&self, msg: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let cbind = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding attribute"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("bad base64 in channel binding"))?;
        let mut expected = self.first.gs2_header.as_bytes().to_vec();
        if let Some(cb) = &self.channel_binding {
            expected.extend_from_slice(cb);
        }
        if !bool::from(cbind.ct_eq(&expected)) {
            return Err(ScramError::ChannelBinding("channel binding data differ"));
        }
        let (_, combined) = self
            .server_first
            .split_once("r=")
            .and_then(|(a, r)| r.split_once(',').map(|(n, _)| (a, n)))
            .expect("server-first starts with the nonce");
        if nonce != combined {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("bad base64 in proof"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.first.bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let matches = Sha256::digest(&client_key)
            .as_slice()
            .ct_eq(&self.verifier.stored_key);
        if !(bool::from(matches) && self.real) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example exchange of RFC 7677 §3 (user "user", password "pencil").
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn verifier() -> Verifier {
        Verifier::from_password(
            b"pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        )
    }

    #[test]
    fn rfc7677_example() {
        let first = ClientFirst::parse(CLIENT_FIRST, false, false).unwrap();
        assert_eq!(first.user, "user");
        let ex = Exchange::new(first, verifier(), true, SERVER_NONCE, None).unwrap();
        assert_eq!(ex.server_first(), SERVER_FIRST);
        assert_eq!(ex.finish(CLIENT_FINAL).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn wrong_proof_and_made_up_verifiers_fail() {
        let first = ClientFirst::parse(CLIENT_FIRST, false, false).unwrap();
        let wrong = Verifier::from_password(b"pen", &verifier().salt, 4096);
        let ex = Exchange::new(first.clone(), wrong, true, SERVER_NONCE, None).unwrap();
        assert_eq!(ex.finish(CLIENT_FINAL), Err(ScramError::Proof));
        // Even the right keys fail when the exchange is marked made-up.
        let ex = Exchange::new(first, verifier(), false, SERVER_NONCE, None).unwrap();
        assert_eq!(ex.finish(CLIENT_FINAL), Err(ScramError::Proof));
    }

    #[test]
    fn unmatchable_verifiers_are_stable_per_user() {
        let a = Verifier::unmatchable("ghost", b"k");
        assert_eq!(a, Verifier::unmatchable("ghost", b"k"));
        assert_ne!(a.salt, Verifier::unmatchable("other", b"k").salt);
        assert_eq!(a.iterations, FAKE_ITERATIONS);
    }

    #[test]
    fn tampered_messages_fail() {
        let first = ClientFirst::parse(CLIENT_FIRST, false, false).unwrap();
        let ex = Exchange::new(first, verifier(), true, SERVER_NONCE, None).unwrap();
        let other_nonce = CLIENT_FINAL.replace("$k0,p", "$k1,p");
        assert_eq!(
            ex.finish(&other_nonce),
            Err(ScramError::Malformed("nonce mismatch"))
        );
        let other_cbind = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert!(matches!(
            ex.finish(&other_cbind),
            Err(ScramError::ChannelBinding(_))
        ));
        for bad in [
            "",
            "c=biws",
            "c=biws,r=x",
            "c=!!,r=x,p=AA==",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        ] {
            assert!(
                matches!(ex.finish(bad), Err(ScramError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_first_rules() {
        let ok = |m: &str, plus, offered| ClientFirst::parse(m, plus, offered);
        assert_eq!(
            ok("n,,n=a=2Cb=3Dc,r=x", false, false).unwrap().user,
            "a,b=c"
        );
        assert_eq!(ok("n,a=bob,n=bob,r=x", false, false).unwrap().user, "bob");
        assert_eq!(
            ok("n,a=eve,n=bob,r=x", false, false),
            Err(ScramError::Authzid)
        );
        // `y` is fine unless the server offered -PLUS (a downgrade).
        assert!(ok("y,,n=bob,r=x", false, false).is_ok());
        assert!(matches!(
            ok("y,,n=bob,r=x", false, true),
            Err(ScramError::ChannelBinding(_))
        ));
        // -PLUS needs p=tls-exporter, and p= needs -PLUS.
        assert!(ok("p=tls-exporter,,n=bob,r=x", true, true).is_ok());
        for (m, plus) in [
            ("n,,n=bob,r=x", true),
            ("p=tls-exporter,,n=bob,r=x", false),
            ("p=tls-unique,,n=bob,r=x", true),
        ] {
            assert!(
                matches!(ok(m, plus, true), Err(ScramError::ChannelBinding(_))),
                "{m}"
            );
        }
        for m in [
            "",
            "n",
            "n,",
            "x,,n=bob,r=x",
            "n,,r=x",
            "n,,n=,r=x",
            "n,,n=b=ob,r=x",
            "n,,n=bob",
            "n,,n=bob,r=",
            "n,,m=ext,n=bob,r=x",
            "n,b=bob,n=bob,r=x",
        ] {
            assert!(
                matches!(ok(m, false, false), Err(ScramError::Malformed(_))),
                "{m:?}"
            );
        }
    }

    #[test]
    fn channel_binding_data_must_match() {
        let cb = vec![7u8; 32];
        let first = ClientFirst::parse("p=tls-exporter,,n=user,r=abc", true, true).unwrap();
        assert!(matches!(
            Exchange::new(first.clone(), verifier(), true, "srv", None),
            Err(ScramError::ChannelBinding(_))
        ));
        let ex = Exchange::new(first, verifier(), true, "srv", Some(cb.clone())).unwrap();
        // A proof over the wrong binding fails before the proof is checked.
        let mut input = b"p=tls-exporter,,".to_vec();
        input.extend_from_slice(&[8u8; 32]);
        let msg = format!(
            "c={},r=abcsrv,p={}",
            B64.encode(&input),
            B64.encode([0u8; 32])
        );
        assert!(matches!(
            ex.finish(&msg),
            Err(ScramError::ChannelBinding(_))
        ));
        let mut input = b"p=tls-exporter,,".to_vec();
        input.extend_from_slice(&cb);
        let msg = format!(
            "c={},r=abcsrv,p={}",
            B64.encode(&input),
            B64.encode([0u8; 32])
        );
        assert_eq!(ex.finish(&msg), Err(ScramError::Proof));
    }
}
