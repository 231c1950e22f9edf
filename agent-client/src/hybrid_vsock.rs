//! Firecracker's hybrid vsock handshake, host side.
//!
//! Firecracker exposes a VM's vsock device as a Unix socket (`uds_path`). To reach a guest
//! port, the host connects to it and writes `CONNECT <port>\n`; Firecracker connects to that
//! port in the guest and answers `OK <host_port>\n`, after which the stream is the guest
//! connection. When no guest process listens on the port, Firecracker closes the connection
//! without an answer.
//!
//! The guest may speak immediately after the connection is made, so its first bytes can arrive
//! in the same read as the `OK` line. The line is therefore read one byte at a time: a buffered
//! read would swallow those bytes into a buffer that the HTTP layer never sees.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The longest `OK <n>\n` line accepted (`OK ` + a u32 + `\n` is 14 bytes).
const MAX_REPLY_LINE: usize = 32;

/// The handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Writing `CONNECT` failed.
    #[error("writing the CONNECT line")]
    Write(#[source] std::io::Error),
    /// Reading the reply failed.
    #[error("reading the OK line")]
    Read(#[source] std::io::Error),
    /// Firecracker closed the connection: nothing listens on that port in the guest (or the
    /// VM is not running).
    #[error("connection closed before the OK line: nothing listens on that guest port")]
    Closed,
    /// The reply is not `OK <n>`.
    #[error("unexpected reply {0:?}, expected \"OK <port>\"")]
    Malformed(String),
}

/// Performs the handshake for guest `port` on `stream` (a fresh connection to the VM's vsock
/// Unix socket) and returns the host-side port Firecracker assigned. Reads exactly the reply
/// line and nothing after it.
pub async fn connect<S>(stream: &mut S, port: u32) -> Result<u32, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(HandshakeError::Write)?;
    stream.flush().await.map_err(HandshakeError::Write)?;
    let mut line = Vec::with_capacity(MAX_REPLY_LINE);
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.map_err(HandshakeError::Read)?;
        if n == 0 {
            return Err(if line.is_empty() {
                HandshakeError::Closed
            } else {
                HandshakeError::Malformed(String::from_utf8_lossy(&line).into_owned())
            });
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_REPLY_LINE {
            return Err(HandshakeError::Malformed(
                String::from_utf8_lossy(&line).into_owned(),
            ));
        }
    }
    let text = String::from_utf8_lossy(&line);
    text.strip_prefix("OK ")
        .and_then(|p| p.trim_end_matches('\r').parse::<u32>().ok())
        .ok_or_else(|| HandshakeError::Malformed(text.into_owned()))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt as _;
    use tokio::net::UnixStream;

    use super::*;

    #[tokio::test]
    async fn the_ok_line_is_read_without_swallowing_the_bytes_after_it() {
        let (mut host, guest) = UnixStream::pair().unwrap();
        let fc = tokio::spawn(async move {
            let mut guest = tokio::io::BufReader::new(guest);
            let mut line = String::new();
            guest.read_line(&mut line).await.unwrap();
            assert_eq!(line, "CONNECT 52\n");
            // The OK line and the guest's first bytes in one write.
            guest.get_mut().write_all(b"OK 5\nhello").await.unwrap();
            guest
        });
        assert_eq!(connect(&mut host, 52).await.unwrap(), 5);
        let mut rest = [0u8; 5];
        host.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        drop(fc.await.unwrap());
    }

    #[tokio::test]
    async fn a_closed_connection_means_no_listener() {
        let (mut host, guest) = UnixStream::pair().unwrap();
        let fc = tokio::spawn(async move {
            let mut guest = tokio::io::BufReader::new(guest);
            let mut line = String::new();
            guest.read_line(&mut line).await.unwrap();
        });
        assert!(matches!(
            connect(&mut host, 9).await,
            Err(HandshakeError::Closed)
        ));
        fc.await.unwrap();
    }

    #[tokio::test]
    async fn a_malformed_reply_is_reported() {
        for reply in [&b"NOPE\n"[..], b"OK x\n", &[b'O'; 40]] {
            let (mut host, mut guest) = UnixStream::pair().unwrap();
            guest.write_all(reply).await.unwrap();
            assert!(matches!(
                connect(&mut host, 1).await,
                Err(HandshakeError::Malformed(_))
            ));
            drop(guest);
        }
    }
}
