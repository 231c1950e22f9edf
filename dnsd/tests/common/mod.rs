//! Helpers shared by dnsd's integration tests: a dnsd (in-process or the real binary) on its own
//! NATS server and port, full lifecycle events, a stand-in vm-controller answering `vm.list`,
//! `dig` and hickory clients, and raw DNS packets.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "shared test helpers; not every test file uses every helper; a panic is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::{CommonArgs, CommonConfig};
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::vm::{ListVmsReply, ListVmsRequest, VmInfo, VmNetwork, VmState};
use banger_proto::{CpuCount, HostId, ImageName, MemMib, Subjects, VmId, VmName};
use banger_testkit::{NatsServer, Process, bin_path, free_port, wait_until};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};

/// The host id dnsd itself runs as in tests.
pub const DNSD_HOST: &str = "dnshost";

/// A VM snapshot as a controller would publish it.
pub fn vm(n: u32, name: &str, host: &str, state: VmState, ip: Option<&str>) -> VmInfo {
    let now = banger_bus::now_ms();
    VmInfo {
        id: VmId::new(format!("{n:032x}")).unwrap(),
        name: VmName::new(name).unwrap(),
        host: HostId::new(host).unwrap(),
        state,
        image: ImageName::new("debian").unwrap(),
        cpus: CpuCount::new(1).unwrap(),
        memory_mib: MemMib::new(512).unwrap(),
        disk_mib: MemMib::new(1024).unwrap(),
        network: ip.map(|ip| VmNetwork {
            ip: ip.to_owned(),
            mac: "06:00:ac:10:00:02".into(),
            tap: format!("bgr{n:x}"),
        }),
        port_forwards: vec![],
        reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        started_at_ms: Some(now),
        touched_at_ms: None,
    }
}

/// A running VM with an address.
pub fn running(n: u32, name: &str, host: &str, ip: &str) -> VmInfo {
    vm(n, name, host, VmState::Running, Some(ip))
}

/// Publishes a lifecycle event for `vm` as its controller would.
pub async fn publish(bus: &Bus, kind: EventKind, seq: u64, vm: &VmInfo) {
    let mut vm = vm.clone();
    vm.updated_at_ms = banger_bus::now_ms();
    let event = VmEvent {
        kind,
        at_ms: vm.updated_at_ms,
        seq,
        vm: vm.clone(),
    };
    bus.publish_event(&vm.host, &event).await.unwrap();
    bus.client().flush().await.unwrap();
}

/// A plain bus client for the test itself.
pub async fn bus(nats: &NatsServer) -> Bus {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Bus::new(client, Subjects::default())
}

/// A `[dnsd]`-only config file in `dir`, so no system config is read.
pub fn config_file(dir: &Path, dnsd_table: &str) -> std::path::PathBuf {
    let p = dir.join("banger.toml");
    std::fs::write(&p, format!("[dnsd]\n{dnsd_table}\n")).unwrap();
    p
}

/// dnsd running in this process.
pub struct InProcess {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), banger_dnsd::RunError>>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts dnsd on a free port with `dnsd_table` as its config, and waits until it answers
    /// DNS (after its start-up rebuild).
    pub async fn start(nats: &NatsServer, dnsd_table: &str) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Self::start_on(nats, dnsd_table, &[addr]).await
    }

    /// Starts dnsd answering on `listen`.
    pub async fn start_on(nats: &NatsServer, dnsd_table: &str, listen: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_file(dir.path(), dnsd_table);
        let common = CommonArgs {
            config: Some(cfg),
            nats_urls: vec![nats.url()],
            host_id: Some(DNSD_HOST.into()),
            state_dir: Some(dir.path().join("state")),
            runtime_dir: Some(dir.path().join("run")),
            ..Default::default()
        };
        let config = CommonConfig::resolve(&common, "dnsd").unwrap();
        let ctx = Context::connect(config).await.unwrap();
        let args = banger_dnsd::Args {
            listen: listen.to_vec(),
            common,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(banger_dnsd::run(ctx, args, shutdown.clone()));
        let addr = listen[0];
        wait_until("dnsd to answer DNS", Duration::from_secs(20), || async {
            raw_udp(
                addr,
                &query_packet(1, "vm.", 6, 1, 0),
                Duration::from_millis(200),
            )
            .await
            .is_some()
        })
        .await;
        Self {
            addr,
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Shuts dnsd down and returns its result.
    pub async fn stop(mut self) -> Result<(), banger_dnsd::RunError> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("dnsd stops within 15 s")
            .unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real `banger-dnsd` binary, answering on 127.0.0.1:`port`.
pub fn start_binary(nats: &NatsServer, dir: &Path, port: u16, dnsd_table: &str) -> Process {
    let cfg = config_file(dir, dnsd_table);
    let mut cmd = Command::new(bin_path("banger-dnsd"));
    cmd.arg("--config")
        .arg(cfg)
        .args(["--nats-url", &nats.url(), "--host-id", DNSD_HOST])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .env("RUST_LOG", "warn");
    Process::spawn("banger-dnsd", cmd)
}

/// A stand-in vm-controller for host `host`: registered under the service API as
/// `vm-controller` (so `$SRV.PING` finds it) and, when `answers` is true, answering `vm.list`
/// with whatever `vms` holds at the time.
pub struct FakeController {
    pub vms: Arc<Mutex<Vec<VmInfo>>>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeController {
    pub async fn start(nats: &NatsServer, host: &str, vms: Vec<VmInfo>, answers: bool) -> Self {
        let bus = bus(nats).await;
        let host_id = HostId::new(host).unwrap();
        let spec = ServiceSpec::new(
            banger_proto::service::VM_CONTROLLER,
            "test stand-in",
            &host_id,
        );
        let mut svc = ServiceHost::start(&bus, spec).await.unwrap();
        let vms = Arc::new(Mutex::new(vms));
        if answers {
            let list = vms.clone();
            svc.broadcast_endpoint(
                "list",
                bus.subjects().vm_list(),
                move |_: ListVmsRequest| {
                    let reply = ListVmsReply {
                        host: host_id.clone(),
                        vms: list.lock().unwrap().clone(),
                    };
                    async move { Ok(reply) }
                },
            )
            .await
            .unwrap();
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(svc.run(shutdown.clone()));
        Self {
            vms,
            shutdown,
            task: Some(task),
        }
    }

    pub fn set(&self, vms: Vec<VmInfo>) {
        *self.vms.lock().unwrap() = vms;
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

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

/// Decodes a raw reply.
pub fn decode(reply: &[u8]) -> Message {
    Message::from_vec(reply).unwrap()
}

/// rcodes by name.
pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;
