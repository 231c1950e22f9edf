//! DNS on the wire, by hand: a query packet built byte by byte, one datagram or one
//! length-prefixed TCP message sent raw, and the response code read back. For tests and
//! benchmarks that must control (or break) the packet a DNS client library would build, and for
//! load generators that must not pay for one.

#![allow(
    clippy::unwrap_used,
    reason = "test and benchmark helpers: a socket that cannot bind is a failed run"
)]

use std::net::SocketAddr;
use std::time::Duration;

/// A query packet built by hand: header with `opcode`, RD set, one question.
pub fn query_packet(id: u16, name: &str, qtype: u16, qclass: u16, opcode: u8) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.push((opcode & 0x0f) << 3 | 0x01); // QR=0, opcode, RD=1
    p.push(0);
    p.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        p.push(u8::try_from(label.len()).unwrap());
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&qclass.to_be_bytes());
    p
}

/// Sends one datagram and returns the reply, or `None` when none came within `wait`.
pub async fn raw_udp(addr: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(packet, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Sends one length-prefixed message over a new TCP connection and returns the reply, or
/// `None` when the server closed the connection or said nothing within `wait`.
pub async fn raw_tcp(addr: SocketAddr, message: &[u8], wait: Duration) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let len = u16::try_from(message.len()).unwrap();
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    // The server may close early on garbage; a failed write is then just "no answer".
    if s.write_all(&framed).await.is_err() {
        return None;
    }
    let read = async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

/// The response code in a raw reply.
pub fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

/// rcode NOERROR.
pub const NOERROR: u8 = 0;
/// rcode FORMERR.
pub const FORMERR: u8 = 1;
/// rcode NXDOMAIN.
pub const NXDOMAIN: u8 = 3;
/// rcode NOTIMP.
pub const NOTIMP: u8 = 4;
/// rcode REFUSED.
pub const REFUSED: u8 = 5;
