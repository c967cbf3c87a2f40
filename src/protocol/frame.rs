//! Framing: TCP frames are a 4-byte big-endian length followed by the encrypted payload; UDP
//! datagrams carry the encrypted payload alone.
//!
//! A frame is written with a single write (some devices and the reference simulator treat each
//! TCP segment as a whole message) and read with a size cap so a hostile device cannot make us
//! allocate unbounded memory.

use super::{Error, Result, cipher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Encodes a JSON text as one TCP frame (length prefix + ciphertext).
pub fn encode_tcp(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 4);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&cipher::encrypt(json));
    out
}

/// Encodes a JSON text as one UDP datagram (ciphertext only).
pub fn encode_udp(json: &[u8]) -> Vec<u8> {
    cipher::encrypt(json)
}

/// Writes one frame with a single write call.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, json: &[u8]) -> Result<()> {
    w.write_all(&encode_tcp(json)).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and returns the decrypted payload; rejects frames over `max` bytes before
/// reading their body.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(Error::FrameTooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    cipher::decrypt_in_place(&mut buf);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, br#"{"system":{"get_sysinfo":{}}}"#)
            .await
            .unwrap();
        let got = read_frame(&mut b, 1024).await.unwrap();
        assert_eq!(got, br#"{"system":{"get_sysinfo":{}}}"#);
    }

    #[test]
    fn tcp_frame_matches_the_sheet_vector() {
        let f = encode_tcp(b"{}");
        assert_eq!(f, [0, 0, 0, 2, 0xd0, 0xad]);
        assert_eq!(encode_udp(b"{}"), [0xd0, 0xad]);
    }

    #[tokio::test]
    async fn oversize_frame_is_rejected_without_reading_it() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Announce 1 GiB; the reader must refuse at the header.
        a.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        match read_frame(&mut b, super::super::MAX_FRAME).await {
            Err(Error::FrameTooLarge { len, .. }) => assert_eq!(len, 1 << 30),
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_frame_is_an_io_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b, 1024).await, Err(Error::Io(_))));
    }
}
