//! A connection to one device, whatever its transport: XOR over TCP (one request in flight,
//! every step bounded by a timeout and every answer by [`MAX_FRAME`]), KLAP or AES
//! securePassthrough over HTTP. All carry JSON requests, so the polling code is the same over
//! any of them.

use super::{Error, MAX_FRAME, Result, frame};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// An open connection to a device.
#[derive(Debug)]
pub struct Connection {
    inner: Inner,
    timeout: Duration,
}

#[derive(Debug)]
enum Inner {
    Xor(TcpStream),
    Klap(Box<super::klap_client::KlapClient>),
    Aes(Box<super::passthrough::AesClient>),
}

async fn bounded<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

impl Connection {
    /// Connects to `addr`; each later request is bounded by `timeout` as well.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = bounded(timeout, async { Ok(TcpStream::connect(addr).await?) }).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            inner: Inner::Xor(stream),
            timeout,
        })
    }

    /// A KLAP connection (the handshake happens on the first request).
    pub fn klap(client: super::klap_client::KlapClient, timeout: Duration) -> Self {
        Self {
            inner: Inner::Klap(Box::new(client)),
            timeout,
        }
    }

    /// An AES securePassthrough connection (the handshake and login happen on the first
    /// request).
    pub fn aes(client: super::passthrough::AesClient, timeout: Duration) -> Self {
        Self {
            inner: Inner::Aes(Box::new(client)),
            timeout,
        }
    }

    /// Sends one request and returns the decoded answer.
    pub async fn request(&mut self, req: &Value) -> Result<Value> {
        let body = serde_json::to_vec(req).map_err(|e| Error::Decode(e.to_string()))?;
        let raw = match &mut self.inner {
            Inner::Xor(stream) => {
                bounded(self.timeout, async {
                    frame::write_frame(stream, &body).await?;
                    frame::read_frame(stream, MAX_FRAME).await
                })
                .await?
            }
            Inner::Klap(k) => bounded(self.timeout, k.request(&body)).await?,
            Inner::Aes(a) => bounded(self.timeout, a.request(&body)).await?,
        };
        serde_json::from_slice(&raw).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// Connects, sends one request, returns the answer and closes.
pub async fn query(addr: SocketAddr, req: &Value, timeout: Duration) -> Result<Value> {
    Connection::connect(addr, timeout).await?.request(req).await
}
