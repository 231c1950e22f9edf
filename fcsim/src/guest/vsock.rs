//! Firecracker's hybrid vsock, host side, as the simulator serves it.
//!
//! `PUT /vsock` binds the Unix socket `uds_path`. A host process connects to it and writes
//! `CONNECT <port>\n`; when something in the guest listens on that vsock port, the VMM
//! answers `OK <local port>\n` and from then on the stream is the guest connection. When
//! nothing listens, the VMM closes the connection without a word.
//!
//! Here "the guest listens on port P" means the simulated guest registered a Unix socket for
//! P (the agent's `--listen unix:` socket), and the splice is a plain byte copy between the
//! two Unix streams. Guest-initiated connections (`<uds_path>_<port>`) are not simulated:
//! banger's agent never initiates one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use crate::log;

/// The longest `CONNECT <port>\n` line read (`CONNECT ` + a u32 + `\n` is 19 bytes).
const MAX_CONNECT_LINE: usize = 32;

/// How long a client may take to send its `CONNECT` line.
const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first host-side port number handed out in `OK` replies (Firecracker's are ephemeral
/// numbers from a high range too; clients only parse them).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// The guest's listening vsock ports: port -> the Unix socket that serves it.
#[derive(Debug, Default)]
pub(crate) struct GuestPorts(Mutex<BTreeMap<u32, PathBuf>>);

impl GuestPorts {
    pub(crate) fn listen(&self, port: u32, socket: PathBuf) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port, socket);
    }

    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn get(&self, port: u32) -> Option<PathBuf> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&port)
            .cloned()
    }
}

/// Accepts hybrid-vsock connections on `listener` until the task is dropped.
pub(crate) async fn serve(listener: UnixListener, ports: Arc<GuestPorts>) {
    let next_port = Arc::new(AtomicU32::new(FIRST_LOCAL_PORT));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn(&format!("vsock: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ports = Arc::clone(&ports);
        let next_port = Arc::clone(&next_port);
        tokio::spawn(async move {
            if let Err(why) = connection(stream, &ports, &next_port).await {
                log::debug(&format!("vsock: connection closed: {why}"));
            }
        });
    }
}

async fn connection(
    mut host: UnixStream,
    ports: &GuestPorts,
    next_port: &AtomicU32,
) -> Result<(), String> {
    let line = tokio::time::timeout(CONNECT_LINE_TIMEOUT, read_line(&mut host))
        .await
        .map_err(|_| "no CONNECT line in time".to_owned())??;
    let port = parse_connect(&line).ok_or_else(|| format!("bad handshake {line:?}"))?;
    let Some(socket) = ports.get(port) else {
        return Err(format!("nothing listens on guest port {port}"));
    };
    let mut guest = UnixStream::connect(&socket)
        .await
        .map_err(|e| format!("guest port {port} ({}) refused: {e}", socket.display()))?;
    let local = next_port.fetch_add(1, Ordering::Relaxed);
    host.write_all(format!("OK {local}\n").as_bytes())
        .await
        .map_err(|e| format!("writing OK: {e}"))?;
    // Ends when either side closes; errors are a peer going away.
    let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
    Ok(())
}

/// Reads up to and including `\n`, one byte at a time so no byte after the line is consumed.
async fn read_line(s: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::with_capacity(MAX_CONNECT_LINE);
    loop {
        let b = s
            .read_u8()
            .await
            .map_err(|e| format!("reading CONNECT: {e}"))?;
        if b == b'\n' {
            return String::from_utf8(line).map_err(|_| "CONNECT line is not UTF-8".to_owned());
        }
        line.push(b);
        if line.len() > MAX_CONNECT_LINE {
            return Err("CONNECT line too long".to_owned());
        }
    }
}

/// `CONNECT 52` -> 52.
fn parse_connect(line: &str) -> Option<u32> {
    line.trim_end_matches('\r')
        .strip_prefix("CONNECT ")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_parse() {
        assert_eq!(parse_connect("CONNECT 52"), Some(52));
        assert_eq!(parse_connect("CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect("CONNECT x"), None);
        assert_eq!(parse_connect("connect 52"), None);
    }

    #[tokio::test]
    async fn a_connect_to_a_listening_port_is_spliced_and_others_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let guest_sock = dir.path().join("guest.sock");
        let guest = UnixListener::bind(&guest_sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = guest.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let uds = dir.path().join("v.sock");
        let ports = Arc::new(GuestPorts::default());
        ports.listen(52, guest_sock);
        tokio::spawn(serve(UnixListener::bind(&uds).unwrap(), ports));

        let mut c = UnixStream::connect(&uds).await.unwrap();
        c.write_all(b"CONNECT 52\nping").await.unwrap();
        let mut buf = vec![0u8; 4 + "OK 1073741824\n".len()];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, b"OK 1073741824\nping");

        let mut other = UnixStream::connect(&uds).await.unwrap();
        other.write_all(b"CONNECT 1234\n").await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(other.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
