//! TLS for kasad's clients (webhooks, SMTP, MQTT, KLAP over reqwest): rustls with ring as the
//! one process-wide crypto provider, installed once before the first connection.

/// Makes rustls' ring provider the process default (reqwest needs one before it builds a
/// client; idempotent). Tests call it too: their reqwest shares this crate's features.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
