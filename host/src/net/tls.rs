//! TLS setup: loading certificates and keys from PEM files into a rustls
//! acceptor, and generating a self-signed certificate for the demo.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Builds the acceptor shared by STLS and implicit-TLS listeners.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .with_context(|| format!("tls.cert: cannot read {}", config.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls.cert: {} is not valid PEM", config.cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "tls.cert: {} contains no CERTIFICATE block",
            config.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
        anyhow!(
            "tls.key: cannot load a private key from {}: {e}",
            config.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: the certificate and key do not form a usable pair")?;
    server.alpn_protocols = vec![b"pop3".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Writes a self-signed certificate for `localhost`/127.0.0.1/::1 to
/// `cert` and `key` (PEM), unless both files exist already.
pub fn ensure_self_signed(cert: &Path, key: &Path) -> Result<()> {
    if cert.is_file() && key.is_file() {
        return Ok(());
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    std::fs::write(cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(key, generated.signing_key.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        ensure_self_signed(&cert, &key).unwrap();
        acceptor(&TlsConfig { cert, key }).unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let e = acceptor(&TlsConfig {
            cert: cert.clone(),
            key: dir.path().join("missing.pem"),
        })
        .err()
        .unwrap();
        let text = format!("{e:#}");
        assert!(
            text.contains("tls.cert") && text.contains("c.pem"),
            "{text}"
        );
    }
}
