//! Helpers shared by dnsd's integration tests: `dig` and hickory clients, plus (re-exported
//! from `banger_testkit`, where the benchmarks use them too) a dnsd in-process or as the real
//! binary, a stand-in vm-controller answering `vm.list`, lifecycle events and raw DNS packets.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "shared test helpers; not every test file uses every helper; a panic is a failed test"
)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub use banger_testkit::dns_packets::*;
pub use banger_testkit::dnsd_in_process::*;
pub use banger_testkit::stand_in_controller::*;
use banger_testkit::wait_until;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};

/// What `dig` printed, parsed.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    /// Answer records as `name type data`.
    pub answers: Vec<String>,
    /// Authority records as `name type data`.
    pub authority: Vec<String>,
    pub raw: String,
}

impl Dig {
    pub fn addrs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .answers
            .iter()
            .filter_map(|a| {
                let p: Vec<&str> = a.split_whitespace().collect();
                matches!(p.get(1), Some(&"A" | &"AAAA")).then(|| p[2].to_owned())
            })
            .collect();
        v.sort();
        v
    }

    pub fn authority_has_soa(&self) -> bool {
        self.authority.iter().any(|a| a.starts_with("vm. SOA "))
    }
}

/// Runs `dig @127.0.0.1 -p port <args>` and parses status, flags, answer and authority.
pub async fn dig(port: u16, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args([
            "+tries=1",
            "+time=2",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
        ])
        .args(args)
        .output()
        .await
        .expect("running dig (bind9-dnsutils)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        raw: raw.clone(),
        ..Dig::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or_default().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or_default();
            d.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(';') || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            // name ttl class type data...
            let p: Vec<&str> = line.split_whitespace().collect();
            if p.len() >= 5 {
                let rec = format!("{} {} {}", p[0], p[3], p[4..].join(" "));
                match section {
                    "answer" => d.answers.push(rec),
                    "authority" => d.authority.push(rec),
                    _ => {}
                }
            }
        }
    }
    d
}

/// Waits until `dig name A` over UDP answers `addrs` (sorted).
pub async fn wait_for_addrs(port: u16, name: &str, addrs: &[&str]) {
    let want: Vec<String> = addrs.iter().map(|s| (*s).to_owned()).collect();
    wait_until(
        &format!("{name} to resolve to {want:?}"),
        Duration::from_secs(20),
        || async { dig(port, &[name, "A"]).await.addrs() == want },
    )
    .await;
}

/// Waits until `dig name A` answers NXDOMAIN.
pub async fn wait_for_nxdomain(port: u16, name: &str) {
    wait_until(
        &format!("{name} to be NXDOMAIN"),
        Duration::from_secs(20),
        || async { dig(port, &[name, "A"]).await.status == "NXDOMAIN" },
    )
    .await;
}

/// Asks with hickory's client over UDP or TCP and returns the response code and the answers'
/// data.
pub async fn hickory_query(
    addr: SocketAddr,
    tcp: bool,
    name: &str,
    rtype: RecordType,
) -> (ResponseCode, Vec<String>, usize) {
    let provider = TokioRuntimeProvider::default();
    let name = Name::from_str(name).unwrap();
    let response = if tcp {
        let (future, sender) = TcpClientStream::new(addr, None, None, provider);
        let (mut client, bg) = Client::<TokioRuntimeProvider>::new(future.await.unwrap(), sender);
        let bg = tokio::spawn(bg);
        let r = client.query(name, DNSClass::IN, rtype).await.unwrap();
        bg.abort();
        r
    } else {
        let conn = UdpClientStream::builder(addr, provider).build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
        let bg = tokio::spawn(bg);
        let r = client.query(name, DNSClass::IN, rtype).await.unwrap();
        bg.abort();
        r
    };
    let mut data: Vec<String> = response
        .answers
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    data.sort();
    (
        response.metadata.response_code,
        data,
        response.authorities.len(),
    )
}

/// Decodes a raw reply.
pub fn decode(reply: &[u8]) -> Message {
    Message::from_vec(reply).unwrap()
}
