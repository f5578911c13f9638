//! TLS to PostgreSQL and Redis: rustls with aws-lc-rs (the provider the rest of the tree
//! already builds), trusting the system's CA certificates and, optionally, those of a CA file
//! (a managed service's own CA, say). The certificate and the host name are always verified:
//! an unverified connection would stop a passive listener but not an active one.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The client side of a verified TLS connection to `what` ("PostgreSQL", "Redis").
pub fn client_config(what: &str, ca_file: Option<&Path>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "skipping a system CA certificate that could not be read");
    }
    roots.add_parsable_certificates(system.certs);
    if let Some(path) = ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading the {what} CA file {}", path.display()))?;
        ensure!(
            !certificates.is_empty(),
            "the {what} CA file {} holds no PEM certificate",
            path.display()
        );
        for certificate in certificates {
            roots
                .add(certificate)
                .with_context(|| format!("a certificate in the {what} CA file {}", path.display()))?;
        }
    }
    ensure!(
        !roots.is_empty(),
        "no CA certificate to verify {what}'s against: the system has none; give a CA file"
    );
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Whether traffic to `host` stays on this machine, where TLS adds nothing.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "db.example.com",
            "10.0.0.5",
            "2001:db8::1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate\n").unwrap();
        let error = client_config("Redis", Some(file.path())).unwrap_err();
        assert!(
            format!("{error:#}").contains("holds no PEM certificate"),
            "{error:#}"
        );
        let missing = client_config("Redis", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            format!("{missing:#}").contains("/nonexistent/ca.pem"),
            "{missing:#}"
        );
    }
}
