//! `banger status`: every service on every host (version, uptime, requests, errors, latency,
//! from the NATS service API), the NATS server, the DNS listener, each host's bridge and NAT
//! state, and VM counts by state. `--json` prints the same report as JSON.
//!
//! Nothing that fails to answer is dropped: a lab member (a host with a subnet claim) whose
//! vm-controller, netd or stord did not answer discovery, an instance that did not answer
//! `$SRV.STATS`, a netd or dnsd that did not answer its status request are all named, as is a
//! lab membership that could not be read; any of them makes the exit status 3.

use std::collections::BTreeMap;
use std::time::Duration;

use banger_proto::dns::{DnsStatus, DnsStatusRequest};
use banger_proto::net::{NetStatus, NetStatusRequest};
use banger_proto::op::{self, Lab};
use banger_proto::service::{SRV_STATS, VM_CONTROLLER};
use banger_proto::vm::ListVmsRequest;
use banger_proto::{HostId, service};
use serde::Serialize;

use crate::{App, exit, output};

/// The longest `status` waits for service-API answers (it returns shortly after the last).
const DISCOVERY_WINDOW: Duration = Duration::from_millis(1000);
/// Deadline of each per-service status request.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the lab's membership may take to read (a healthy read takes milliseconds).
const MEMBERS_WAIT: Duration = Duration::from_secs(3);

/// The services every lab member runs.
const PER_HOST_SERVICES: [&str; 3] = [VM_CONTROLLER, service::NETD, service::STORD];

/// Flags of `banger status`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every service answered, 3 when the report may be \
                        incomplete (a service or host did not answer, or the lab's membership \
                        could not be read: each named in the report), 4 when no banger service \
                        answered at all."
)]
pub struct StatusArgs {}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The NATS server this CLI is connected to.
    pub nats: NatsInfo,
    /// Every service instance that answered `$SRV.PING`.
    pub services: Vec<ServiceRow>,
    /// dnsd's listeners and record count, if a dnsd answered.
    pub dns: Option<DnsStatus>,
    /// Each host's bridge and NAT state.
    pub networks: BTreeMap<String, NetStatus>,
    /// VMs by state, over every host that answered.
    pub vms_by_state: BTreeMap<String, u32>,
    /// Controllers that were found but did not answer `vm.list`.
    pub unreachable_hosts: Vec<String>,
    /// Services that were expected but did not answer, and what they did not answer.
    pub silent: Vec<SilentService>,
    /// The lab's membership could not be read: a cut-off host's services cannot be named.
    pub membership_unknown: bool,
}

/// A service that was expected to answer and did not.
#[derive(Debug, Serialize)]
pub struct SilentService {
    /// Service name.
    pub name: String,
    /// Host id.
    pub host: String,
    /// What it did not answer (`$SRV.PING`: not found at all).
    pub missed: String,
}

impl StatusReport {
    /// Whether something that should have answered did not.
    pub fn is_partial(&self) -> bool {
        !self.unreachable_hosts.is_empty() || !self.silent.is_empty() || self.membership_unknown
    }
}

/// The NATS server.
#[derive(Debug, Serialize)]
pub struct NatsInfo {
    /// URL(s) used.
    pub urls: String,
    /// Server name.
    pub server_name: String,
    /// Server version.
    pub version: String,
    /// Other servers of the cluster the client was told about.
    pub cluster_urls: Vec<String>,
}

/// One service instance.
#[derive(Debug, Serialize)]
pub struct ServiceRow {
    /// Service name.
    pub name: String,
    /// Host id.
    pub host: String,
    /// Version.
    pub version: String,
    /// Instance id.
    pub id: String,
    /// Uptime in seconds.
    pub uptime_secs: Option<u64>,
    /// Requests served, over all endpoints.
    pub requests: u64,
    /// Errors replied, over all endpoints.
    pub errors: u64,
    /// Average processing time, microseconds.
    pub avg_latency_us: Option<u64>,
}

/// Runs `banger status`.
pub async fn run(app: &App, _args: StatusArgs) -> anyhow::Result<u8> {
    let report = collect(app).await?;
    if app.json {
        output::print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.services.is_empty() {
        exit::NOT_FOUND_OR_UNAVAILABLE
    } else if report.is_partial() {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

async fn collect(app: &App) -> anyhow::Result<StatusReport> {
    let bus = &app.bus;
    let info = bus.client().server_info();
    let nats = NatsInfo {
        urls: app.config.nats.urls.join(","),
        server_name: info.server_name.clone(),
        version: info.version.clone(),
        cluster_urls: info.connect_urls.clone(),
    };
    let (instances, members) = tokio::join!(
        bus.ping(None, DISCOVERY_WINDOW),
        banger_bus::lab::membership(bus, MEMBERS_WAIT)
    );
    let instances = instances?;
    crate::announce_simulated_controllers(&instances);
    let stats = bus
        .service_verb(SRV_STATS.to_owned(), DISCOVERY_WINDOW)
        .await?;
    let mut silent = Vec::new();
    let mut miss = |name: &str, host: &str, missed: &str| {
        silent.push(SilentService {
            name: name.to_owned(),
            host: host.to_owned(),
            missed: missed.to_owned(),
        });
    };
    for host in members.hosts() {
        for name in PER_HOST_SERVICES {
            if !instances
                .iter()
                .any(|i| i.name == name && i.host() == Some(host.as_str()))
            {
                miss(name, host, "$SRV.PING");
            }
        }
    }
    for i in &instances {
        if !stats.iter().any(|s| s["id"] == i.id.as_str()) {
            miss(&i.name, i.host().unwrap_or("?"), "$SRV.STATS");
        }
    }
    let now = banger_bus::now_ms();
    let mut services: Vec<ServiceRow> = instances
        .iter()
        .map(|i| {
            let st = stats.iter().find(|s| s["id"] == i.id.as_str());
            let endpoints = st
                .and_then(|s| s["endpoints"].as_array())
                .cloned()
                .unwrap_or_default();
            let sum = |k: &str| endpoints.iter().filter_map(|e| e[k].as_u64()).sum::<u64>();
            let requests = sum("num_requests");
            // Our own error count lives in each endpoint's data (see banger_bus::service).
            let errors: u64 = endpoints
                .iter()
                .map(|e| {
                    e["data"]["errors"]
                        .as_u64()
                        .unwrap_or(0)
                        .max(e["num_errors"].as_u64().unwrap_or(0))
                })
                .sum();
            let started = endpoints
                .iter()
                .find_map(|e| e["data"]["started_ms"].as_u64());
            ServiceRow {
                name: i.name.clone(),
                host: i.host().unwrap_or("?").to_owned(),
                version: i.version.clone(),
                id: i.id.clone(),
                uptime_secs: started.map(|s| now.saturating_sub(s) / 1000),
                requests,
                errors,
                avg_latency_us: (requests > 0).then(|| sum("processing_time") / requests / 1000),
            }
        })
        .collect();
    services.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));

    let dns = match services.iter().find(|s| s.name == service::DNSD) {
        Some(d) => {
            let answer = bus
                .call::<op::dns::Status>(&Lab, &DnsStatusRequest::default(), QUERY_TIMEOUT)
                .await
                .ok();
            if answer.is_none() {
                miss(&d.name, &d.host, "dns.status");
            }
            answer
        }
        None => None,
    };
    let mut networks = BTreeMap::new();
    for s in services.iter().filter(|s| s.name == service::NETD) {
        let Ok(host) = HostId::new(&s.host) else {
            continue;
        };
        match bus
            .call::<op::net::Status>(&host, &NetStatusRequest::default(), QUERY_TIMEOUT)
            .await
        {
            Ok(st) => {
                networks.insert(s.host.clone(), st);
            }
            Err(_) => miss(&s.name, &s.host, "net.status"),
        }
    }
    let controllers: Vec<&ServiceRow> = services
        .iter()
        .filter(|s| s.name == VM_CONTROLLER)
        .collect();
    let mut vms_by_state = BTreeMap::new();
    let mut answered = Vec::new();
    if !controllers.is_empty() {
        let replies = bus
            .gather::<op::vm::List>(
                &Lab,
                &ListVmsRequest::default(),
                Some(controllers.len()),
                app.timeout.min(QUERY_TIMEOUT),
            )
            .await?;
        for r in replies.into_iter().flatten() {
            answered.push(r.host.to_string());
            for vm in r.vms {
                *vms_by_state.entry(vm.state.to_string()).or_insert(0) += 1;
            }
        }
    }
    let unreachable_hosts = controllers
        .iter()
        .filter(|c| !answered.contains(&c.host))
        .map(|c| c.host.clone())
        .collect();
    silent.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
    Ok(StatusReport {
        nats,
        services,
        dns,
        networks,
        vms_by_state,
        unreachable_hosts,
        silent,
        membership_unknown: members.is_unknown(),
    })
}

/// The human rendering of a report.
pub fn render(r: &StatusReport) -> String {
    let mut out = format!(
        "NATS     {} ({} {})\n",
        r.nats.urls, r.nats.server_name, r.nats.version
    );
    if !r.nats.cluster_urls.is_empty() {
        out.push_str(&format!("cluster  {}\n", r.nats.cluster_urls.join(", ")));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.host.clone(),
                s.version.clone(),
                s.uptime_secs.map_or("-".into(), human_duration),
                s.requests.to_string(),
                s.errors.to_string(),
                s.avg_latency_us
                    .map_or("-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0)),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no banger service answered: is the stack running (`banger up`)?\n");
        return out;
    }
    let mut rows = rows;
    rows.extend(
        r.silent
            .iter()
            .filter(|s| s.missed == "$SRV.PING")
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.host.clone(),
                    "no answer".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                ]
            }),
    );
    out.push_str(&output::table(
        &[
            "SERVICE", "HOST", "VERSION", "UPTIME", "REQUESTS", "ERRORS", "AVG",
        ],
        &rows,
    ));
    out.push('\n');
    match &r.dns {
        Some(d) => out.push_str(&format!(
            "DNS      {} serving {} ({} records)\n",
            if d.listeners.is_empty() {
                "-".to_owned()
            } else {
                d.listeners.join(", ")
            },
            d.zone,
            d.records
        )),
        None => out.push_str("DNS      no dnsd answered\n"),
    }
    for (host, n) in &r.networks {
        out.push_str(&format!(
            "network  {host}: bridge {} {} {} gw {}, NAT table {}, {} leases, {} taps\n",
            if n.bridge.is_empty() { "-" } else { &n.bridge },
            if n.bridge_up { "up" } else { "down" },
            if n.subnet.is_empty() { "-" } else { &n.subnet },
            if n.gateway.is_empty() {
                "-"
            } else {
                &n.gateway
            },
            if n.nat_table_present {
                "present"
            } else {
                "absent"
            },
            n.leases,
            n.taps
        ));
    }
    let counts: Vec<String> = r
        .vms_by_state
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    out.push_str(&format!(
        "VMs      {}\n",
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    ));
    for h in &r.unreachable_hosts {
        out.push_str(&format!("warning: host {h} did not answer vm.list\n"));
    }
    for s in &r.silent {
        out.push_str(&format!(
            "warning: {} on {} did not answer {}\n",
            s.name, s.host, s.missed
        ));
    }
    if r.membership_unknown {
        out.push_str(
            "warning: lab membership unknown (its JetStream bucket could not be read): the \
             services of a host that answers nothing at all are not named\n",
        );
    }
    out
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        let svc = |name: &str, host: &str, req: u64, err: u64| ServiceRow {
            name: name.into(),
            host: host.into(),
            version: "0.1.0".into(),
            id: format!("{name}-{host}"),
            uptime_secs: Some(3725),
            requests: req,
            errors: err,
            avg_latency_us: (req > 0).then_some(1500),
        };
        StatusReport {
            nats: NatsInfo {
                urls: "nats://127.0.0.1:4222".into(),
                server_name: "NDXYZ".into(),
                version: "2.9.10".into(),
                cluster_urls: vec![],
            },
            services: vec![
                svc("dnsd", "lab1", 3, 0),
                svc("netd", "lab1", 12, 1),
                svc("stord", "lab1", 0, 0),
                svc("vm-controller", "lab1", 40, 2),
            ],
            dns: Some(DnsStatus {
                listeners: vec!["127.0.0.1:42069/udp".into(), "127.0.0.1:42069/tcp".into()],
                zone: "vm.".into(),
                records: 4,
                last_rebuild_ms: None,
            }),
            networks: BTreeMap::from([(
                "lab1".to_owned(),
                NetStatus {
                    bridge: "banger0".into(),
                    bridge_up: true,
                    subnet: "172.16.0.0/24".into(),
                    gateway: "172.16.0.1".into(),
                    nat_table_present: true,
                    leases: 2,
                    taps: 1,
                },
            )]),
            vms_by_state: BTreeMap::from([("running".to_owned(), 1), ("stopped".to_owned(), 1)]),
            unreachable_hosts: vec!["lab3".into()],
            silent: vec![SilentService {
                name: "stord".into(),
                host: "lab3".into(),
                missed: "$SRV.PING".into(),
            }],
            membership_unknown: false,
        }
    }

    #[test]
    fn status_renders_for_people() {
        insta::assert_snapshot!(render(&report()));
    }

    #[test]
    fn status_without_services_says_how_to_start_them() {
        let mut r = report();
        r.services.clear();
        assert!(render(&r).contains("`banger up`"));
    }

    #[test]
    fn an_unknown_membership_is_said_and_partial() {
        let mut r = report();
        r.silent.clear();
        r.unreachable_hosts.clear();
        assert!(!r.is_partial());
        r.membership_unknown = true;
        assert!(r.is_partial());
        assert!(render(&r).contains("lab membership unknown"));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(12), "12s");
        assert_eq!(human_duration(250), "4m10s");
        assert_eq!(human_duration(7500), "2h5m");
        assert_eq!(human_duration(273_600), "3d4h");
    }
}
