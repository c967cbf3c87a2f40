//! The Kasa local protocols: bytes and JSON only.
//!
//! Owns: the legacy IOT protocol (XOR autokey cipher, TCP/UDP framing, typed requests and
//! responses with unit normalisation, device error codes at module and method level, the TCP
//! client and unicast/broadcast discovery on 9999), and the newer devices' discovery on UDP
//! 20002 and KLAP transport. Knows nothing of storage. Every read is bounded in size
//! ([`MAX_FRAME`]) and time (the caller's timeout).

pub mod cipher;
pub mod client;
pub mod discovery;
pub mod frame;
pub mod klap;
pub mod klap_client;
pub mod messages;
pub mod passthrough;
pub mod port20002;
pub mod smart;

/// Largest response frame accepted from a device (real answers are well under 16 KiB).
pub const MAX_FRAME: usize = 64 * 1024;

/// The default port of the legacy protocol (TCP and UDP).
pub use crate::domain::device::DEFAULT_PORT;

/// Everything that can go wrong talking to a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket error (refused, reset, unreachable).
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// No complete answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The device announced a frame bigger than we accept.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Our limit.
        max: usize,
    },
    /// The answer was not the JSON we expected.
    #[error("undecodable answer: {0}")]
    Decode(String),
    /// An HTTP transport (KLAP, AES) failed: a status other than 200, or the exchange broke.
    #[error("HTTP transport: {0}")]
    Http(String),
    /// The device accepted none of the candidate credentials.
    #[error("authentication required: {0}")]
    Auth(String),
    /// The device answered with a non-zero `err_code`.
    #[error("device error {code} in {module}.{method}: {msg}")]
    Device {
        /// Module (e.g. `emeter`).
        module: String,
        /// Method, or `*` for a module-level error.
        method: String,
        /// The `err_code`.
        code: i64,
        /// The `err_msg`, if any.
        msg: String,
    },
}

impl Error {
    /// True when the device said it does not have this module or method (e.g. no meter).
    pub fn is_not_supported(&self) -> bool {
        matches!(self, Error::Device { code, .. } if *code == -1 || *code == -2 || *code == -2001)
    }
}

/// Result alias for protocol operations.
pub type Result<T> = std::result::Result<T, Error>;
