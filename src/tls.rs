//! TLS for kasad's clients (webhooks, SMTP, MQTT, KLAP over reqwest): rustls with ring as the
//! one process-wide crypto provider, installed once before the first connection.

/// Makes rustls' ring provider the process default (reqwest needs one before it builds a
/// client; idempotent). Tests call it too: their reqwest shares this crate's features.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls client configuration (ring) trusting `ca_file`'s certificates, or the public web
/// roots without one; `what` names the setting in errors (`[mqtt]`, `push[0]`).
pub fn client_config(
    ca_file: Option<&std::path::Path>,
    what: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            for c in CertificateDer::pem_file_iter(p)
                .map_err(|e| anyhow::anyhow!("{what} ca_file {}: {e}", p.display()))?
            {
                roots
                    .add(c.map_err(|e| anyhow::anyhow!("{what} ca_file {}: {e}", p.display()))?)?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "{what} ca_file {} holds no certificate",
                p.display()
            );
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
