//! netd's configuration: the `[netd]` table of the config file, overridden by flags, validated
//! once at start-up into a [`NetConfig`].
//!
//! ```toml
//! [netd]
//! bridge = "banger0"            # the host bridge every VM tap joins
//! subnet = "172.16.0.0/24"      # VM addresses
//! gateway = "172.16.0.1"        # the bridge's address, the VMs' gateway [default: first host]
//! mtu = 1500                    # MTU of the bridge and of every tap
//! nft_table = "banger"          # the one nftables table (family ip) netd owns
//! reconcile_interval_secs = 30  # how often netd converges on the truth
//! reconcile_grace_secs = 10     # leases changed this recently are not judged by vm.list
//! uplinks = []                  # masquerade only towards these; empty: every other interface
//! teardown_group = 48879        # netdevice group used to delete many taps in one operation
//!
//! # lab mode (several hosts): see the crate README
//! lab_range = "10.77.0.0/16"    # every host's VM subnet lies here; not masqueraded between hosts
//! subnet_prefix = 24            # size of the subnet allocated from lab_range when subnet is unset
//! host_address = "192.0.2.11"   # where peers route this host's VM subnet [default: see README]
//! peer_interval_secs = 5        # how often the other hosts' netds are asked for their subnet
//! peer_expiry_secs = 60         # routes of a host silent this long are removed
//! route_protocol = 77           # rtnetlink protocol number marking netd's routes
//! subnet_bucket_replicas = 1    # replicas of the JetStream KV bucket holding subnet claims
//! ```

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::lease::TAP_PREFIX;

/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "banger0";
/// Default VM subnet: private, rarely used by home or office networks.
pub const DEFAULT_SUBNET: &str = "172.16.0.0/24";
/// Default MTU: plain Ethernet.
pub const DEFAULT_MTU: u32 = 1500;
/// Default nftables table name.
pub const DEFAULT_TABLE: &str = "banger";
/// Default reconcile period: events make reactions fast, this only catches what they missed.
pub const DEFAULT_RECONCILE_SECS: u64 = 30;
/// Default grace: a `vm.list` answer can be a few seconds older than a lease made meanwhile.
pub const DEFAULT_GRACE_SECS: u64 = 10;
/// Default netdevice group for taps about to be deleted together (0xbeef; group 0 is the
/// kernel's default group and can never be deleted by group).
pub const DEFAULT_TEARDOWN_GROUP: u32 = 0xbeef;
/// Default size of a subnet allocated from the lab range: 253 VMs per host.
pub const DEFAULT_SUBNET_PREFIX: u8 = 24;
/// Default period of peer discovery: a new host's VMs are reachable within seconds.
pub const DEFAULT_PEER_INTERVAL_SECS: u64 = 5;
/// Default time after which a silent peer's route goes: long enough to ride out a NATS
/// reconnect or a netd restart, short enough that a removed host does not linger.
pub const DEFAULT_PEER_EXPIRY_SECS: u64 = 60;
/// Default route protocol number of netd's routes (`ip route show proto 77`). 77 is not
/// assigned in iproute2's `rt_protos`; it only has to differ from what other daemons use.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 77;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// The `[netd]` table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetdFile {
    /// Bridge name.
    pub bridge: String,
    /// VM subnet (CIDR, the network address); `None`: allocated from `lab_range` when set,
    /// else [`DEFAULT_SUBNET`].
    pub subnet: Option<String>,
    /// The bridge's address inside the subnet; `None`: the subnet's first host.
    pub gateway: Option<String>,
    /// MTU of the bridge and taps.
    pub mtu: u32,
    /// nftables table name.
    pub nft_table: String,
    /// Seconds between reconciliations.
    pub reconcile_interval_secs: u64,
    /// Seconds during which a freshly attached or detached lease is not judged by reconciliation.
    pub reconcile_grace_secs: u64,
    /// Interfaces to masquerade towards; empty means every interface but the bridge.
    pub uplinks: Vec<String>,
    /// Netdevice group used for batch teardown.
    pub teardown_group: u32,
    /// Lab mode: the range every host's VM subnet lies in.
    pub lab_range: Option<String>,
    /// Prefix length of a subnet allocated from `lab_range`.
    pub subnet_prefix: u8,
    /// This host's address on the lab network.
    pub host_address: Option<String>,
    /// Seconds between peer discoveries.
    pub peer_interval_secs: u64,
    /// Seconds after which a silent peer's route is removed.
    pub peer_expiry_secs: u64,
    /// Route protocol number of netd's routes.
    pub route_protocol: u8,
    /// Replicas of the subnet-claim KV bucket (at most the cluster's size).
    pub subnet_bucket_replicas: usize,
    /// DNS servers handed to guests in the kernel `ip=` argument (at most two). `None`: the
    /// host's own non-loopback nameservers; `[]`: none.
    pub guest_dns: Option<Vec<String>>,
}

impl Default for NetdFile {
    fn default() -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: None,
            gateway: None,
            mtu: DEFAULT_MTU,
            nft_table: DEFAULT_TABLE.to_owned(),
            reconcile_interval_secs: DEFAULT_RECONCILE_SECS,
            reconcile_grace_secs: DEFAULT_GRACE_SECS,
            uplinks: Vec::new(),
            teardown_group: DEFAULT_TEARDOWN_GROUP,
            lab_range: None,
            subnet_prefix: DEFAULT_SUBNET_PREFIX,
            host_address: None,
            peer_interval_secs: DEFAULT_PEER_INTERVAL_SECS,
            peer_expiry_secs: DEFAULT_PEER_EXPIRY_SECS,
            route_protocol: DEFAULT_ROUTE_PROTOCOL,
            subnet_bucket_replicas: 1,
            guest_dns: None,
        }
    }
}

/// Why the configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The subnet is not a CIDR.
    #[error("[netd] subnet {value:?} is not an IPv4 CIDR such as 172.16.0.0/24")]
    SubnetSyntax {
        /// The value.
        value: String,
        /// The parse error.
        #[source]
        source: ipnet::AddrParseError,
    },
    /// The subnet is given by a host address rather than its network address.
    #[error("[netd] subnet {value} is not a network address (did you mean {network}?)")]
    SubnetNotNetwork {
        /// The value.
        value: Ipv4Net,
        /// Its network.
        network: Ipv4Net,
    },
    /// The gateway is not an address.
    #[error("[netd] gateway {value:?} is not an IPv4 address")]
    GatewaySyntax {
        /// The value.
        value: String,
        /// The parse error.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The gateway is not a host address of the subnet.
    #[error("[netd] gateway {gateway} is not a host address of subnet {subnet}")]
    GatewayOutside {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The subnet cannot hold a gateway and at least one VM.
    #[error("[netd] subnet {0} is too small: use a prefix of /30 or shorter")]
    SubnetTooSmall(Ipv4Net),
    /// An interface name is invalid.
    #[error("[netd] {what} {value:?} is not a valid interface name ({why})")]
    IfName {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// The MTU is out of range.
    #[error("[netd] mtu {0} is out of range (68..=65535)")]
    Mtu(u32),
    /// The table name is invalid.
    #[error("[netd] nft_table {0:?} must be 1 to 64 letters, digits, '_' or '-'")]
    Table(String),
    /// The reconcile interval is zero.
    #[error("[netd] reconcile_interval_secs must be at least 1")]
    Interval,
    /// The teardown group is the default group.
    #[error("[netd] teardown_group must not be 0 (the kernel's default group)")]
    Group,
    /// The lab range is not a network CIDR.
    #[error("[netd] lab_range {0:?} is not an IPv4 network in CIDR form such as 10.77.0.0/16")]
    LabRange(String),
    /// The allocation prefix does not fit the lab range.
    #[error("[netd] subnet_prefix {prefix} must be between lab_range's /{range_prefix} and /30")]
    SubnetPrefix {
        /// The prefix.
        prefix: u8,
        /// The lab range's prefix.
        range_prefix: u8,
    },
    /// The subnet lies outside the lab range.
    #[error("[netd] subnet {subnet} is not inside lab_range {range}")]
    SubnetOutsideLab {
        /// The subnet.
        subnet: Ipv4Net,
        /// The range.
        range: Ipv4Net,
    },
    /// The host address is not an address.
    #[error("[netd] host_address {0:?} is not a unicast IPv4 address")]
    HostAddress(String),
    /// A period is zero.
    #[error("[netd] peer_interval_secs and peer_expiry_secs must be at least 1")]
    PeerTiming,
    /// The route protocol is one the kernel or a common daemon uses.
    #[error("[netd] route_protocol {0} is reserved (0-4 belong to the kernel); pick e.g. 77")]
    RouteProtocol(u8),
    /// The bucket replicas are out of range.
    #[error("[netd] subnet_bucket_replicas must be 1 to 5")]
    Replicas,
    /// A guest DNS server is not an address, or there are more than two.
    #[error(
        "[netd] guest_dns {0:?}: give at most two unicast IPv4 addresses, e.g. [\"10.0.0.53\"]"
    )]
    GuestDns(Vec<String>),
    /// No subnet was given and none was allocated (a caller bug: allocate first).
    #[error("[netd] no subnet: set [netd] subnet, or lab_range to have one allocated")]
    SubnetUnallocated,
}

/// Lab-mode settings: subnets from a shared range, routes to the other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Every host's VM subnet lies here.
    pub range: Ipv4Net,
    /// Prefix length of an allocated subnet.
    pub subnet_prefix: u8,
    /// Replicas of the claim bucket.
    pub bucket_replicas: usize,
}

/// How netd finds and routes to the other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// This host's address on the lab network (published; peers route via it). `None`: no
    /// address known, so peers cannot route here, and routes are still installed towards them.
    pub host_address: Option<Ipv4Addr>,
    /// Discovery period.
    pub interval: Duration,
    /// A peer silent this long loses its route.
    pub expiry: Duration,
    /// Route protocol number marking netd's routes.
    pub route_protocol: u8,
}

impl LabConfig {
    /// Parses the lab settings of `file` (None when `lab_range` is unset).
    pub fn from_file(file: &NetdFile) -> Result<Option<Self>, ConfigError> {
        let Some(r) = &file.lab_range else {
            return Ok(None);
        };
        let range: Ipv4Net = r.parse().map_err(|_| ConfigError::LabRange(r.clone()))?;
        if range.trunc() != range {
            return Err(ConfigError::LabRange(r.clone()));
        }
        if file.subnet_prefix < range.prefix_len() || file.subnet_prefix > 30 {
            return Err(ConfigError::SubnetPrefix {
                prefix: file.subnet_prefix,
                range_prefix: range.prefix_len(),
            });
        }
        if !(1..=5).contains(&file.subnet_bucket_replicas) {
            return Err(ConfigError::Replicas);
        }
        Ok(Some(Self {
            range,
            subnet_prefix: file.subnet_prefix,
            bucket_replicas: file.subnet_bucket_replicas,
        }))
    }
}

/// Parses a configured host address.
pub fn parse_host_address(value: &str) -> Result<Ipv4Addr, ConfigError> {
    match value.parse::<Ipv4Addr>() {
        Ok(a) if !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast() => Ok(a),
        _ => Err(ConfigError::HostAddress(value.to_owned())),
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Bridge name.
    pub bridge: String,
    /// VM subnet.
    pub subnet: Ipv4Net,
    /// Gateway: the bridge's address, the subnet's first host.
    pub gateway: Ipv4Addr,
    /// MTU.
    pub mtu: u32,
    /// nftables table name (family `ip`).
    pub table: String,
    /// Reconcile period.
    pub reconcile_interval: Duration,
    /// Leases changed within this are left alone by reconciliation.
    pub reconcile_grace: Duration,
    /// Masquerade only towards these interfaces (empty: every interface but the bridge).
    pub uplinks: Vec<String>,
    /// Netdevice group for batch teardown.
    pub teardown_group: u32,
    /// Lab mode, when `lab_range` is set.
    pub lab: Option<LabConfig>,
    /// Peer discovery and routes.
    pub peers: PeerConfig,
    /// DNS servers guests are told about through `ip=` (at most two).
    pub guest_dns: Vec<Ipv4Addr>,
}

impl NetConfig {
    /// Validates the file table (with flag overrides already applied).
    pub fn from_file(file: NetdFile) -> Result<Self, ConfigError> {
        check_ifname("bridge", &file.bridge)?;
        if file.bridge.starts_with(TAP_PREFIX) {
            return Err(ConfigError::IfName {
                what: "bridge",
                value: file.bridge,
                why: "the bgr prefix is reserved for VM taps",
            });
        }
        for u in &file.uplinks {
            check_ifname("uplink", u)?;
        }
        let lab = LabConfig::from_file(&file)?;
        let subnet_text = match (&file.subnet, &lab) {
            (Some(s), _) => s.clone(),
            (None, None) => DEFAULT_SUBNET.to_owned(),
            (None, Some(_)) => return Err(ConfigError::SubnetUnallocated),
        };
        let subnet: Ipv4Net = subnet_text
            .parse()
            .map_err(|source| ConfigError::SubnetSyntax {
                value: subnet_text.clone(),
                source,
            })?;
        if subnet.trunc() != subnet {
            return Err(ConfigError::SubnetNotNetwork {
                value: subnet,
                network: subnet.trunc(),
            });
        }
        if subnet.prefix_len() > 30 {
            return Err(ConfigError::SubnetTooSmall(subnet));
        }
        let gateway = match &file.gateway {
            None => subnet
                .hosts()
                .next()
                .ok_or(ConfigError::SubnetTooSmall(subnet))?,
            Some(g) => {
                let gateway: Ipv4Addr = g.parse().map_err(|source| ConfigError::GatewaySyntax {
                    value: g.clone(),
                    source,
                })?;
                if !subnet.contains(&gateway)
                    || gateway == subnet.network()
                    || gateway == subnet.broadcast()
                {
                    return Err(ConfigError::GatewayOutside { gateway, subnet });
                }
                gateway
            }
        };
        if !(68..=65535).contains(&file.mtu) {
            return Err(ConfigError::Mtu(file.mtu));
        }
        let t = &file.nft_table;
        if t.is_empty()
            || t.len() > 64
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::Table(t.clone()));
        }
        if file.reconcile_interval_secs == 0 {
            return Err(ConfigError::Interval);
        }
        if file.teardown_group == 0 {
            return Err(ConfigError::Group);
        }
        if let Some(lab) = &lab
            && !lab.range.contains(&subnet)
        {
            return Err(ConfigError::SubnetOutsideLab {
                subnet,
                range: lab.range,
            });
        }
        let host_address = file
            .host_address
            .as_deref()
            .map(parse_host_address)
            .transpose()?;
        if file.peer_interval_secs == 0 || file.peer_expiry_secs == 0 {
            return Err(ConfigError::PeerTiming);
        }
        if file.route_protocol <= 4 {
            return Err(ConfigError::RouteProtocol(file.route_protocol));
        }
        let guest_dns = match &file.guest_dns {
            Some(list) => parse_guest_dns(list)?,
            None => host_nameservers(),
        };
        Ok(Self {
            bridge: file.bridge,
            subnet,
            gateway,
            mtu: file.mtu,
            table: file.nft_table,
            reconcile_interval: Duration::from_secs(file.reconcile_interval_secs),
            reconcile_grace: Duration::from_secs(file.reconcile_grace_secs),
            uplinks: file.uplinks,
            teardown_group: file.teardown_group,
            lab,
            peers: PeerConfig {
                host_address,
                interval: Duration::from_secs(file.peer_interval_secs),
                expiry: Duration::from_secs(file.peer_expiry_secs),
                route_protocol: file.route_protocol,
            },
            guest_dns,
        })
    }
}

/// Where the host's upstream nameservers are written: systemd-resolved's list of real
/// upstreams first (`/etc/resolv.conf` then only names its 127.0.0.53 stub), then the classic
/// file.
const RESOLV_CONF_PATHS: &[&str] = &["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"];

fn parse_guest_dns(list: &[String]) -> Result<Vec<Ipv4Addr>, ConfigError> {
    let bad = || ConfigError::GuestDns(list.to_vec());
    if list.len() > 2 {
        return Err(bad());
    }
    list.iter()
        .map(|a| match a.trim().parse::<Ipv4Addr>() {
            Ok(ip) if !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()) => Ok(ip),
            _ => Err(bad()),
        })
        .collect()
}

/// The host's nameservers a guest can reach through NAT: the first file of
/// [`RESOLV_CONF_PATHS`] that names any, loopback ones left out (a guest's loopback is its
/// own). Empty when there are none: guests then fall back to their gateway.
fn host_nameservers() -> Vec<Ipv4Addr> {
    RESOLV_CONF_PATHS
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| nameservers_in(&text))
        .find(|found| !found.is_empty())
        .unwrap_or_default()
}

/// The usable IPv4 `nameserver` lines of a resolv.conf, at most two.
pub fn nameservers_in(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .take(2)
        .collect()
}

fn check_ifname(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let why = if value.is_empty() {
        Some("empty")
    } else if value.len() > MAX_IFNAME {
        Some("longer than 15 characters")
    } else if value
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        Some("no '/', ':' or whitespace allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::IfName {
            what,
            value: value.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = NetConfig::from_file(NetdFile::default()).unwrap();
        assert_eq!(c.bridge, "banger0");
        assert_eq!(c.subnet.to_string(), "172.16.0.0/24");
        assert_eq!(c.gateway, Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(c.table, "banger");
        assert_eq!(c.mtu, 1500);
    }

    #[test]
    fn bad_values_are_rejected_with_the_setting_named() {
        let bad = |f: fn(&mut NetdFile)| {
            let mut file = NetdFile::default();
            f(&mut file);
            NetConfig::from_file(file).unwrap_err().to_string()
        };
        assert!(bad(|f| f.subnet = Some("172.16.0.5/24".into())).contains("172.16.0.0/24"));
        assert!(bad(|f| f.subnet = Some("nope".into())).contains("subnet"));
        assert!(bad(|f| f.subnet = Some("10.0.0.0/31".into())).contains("too small"));
        assert!(bad(|f| f.bridge = "a-very-long-bridge-name".into()).contains("15"));
        assert!(bad(|f| f.bridge = "bgr0".into()).contains("reserved"));
        assert!(bad(|f| f.mtu = 10).contains("mtu"));
        assert!(bad(|f| f.gateway = Some("x".into())).contains("gateway"));
        assert!(bad(|f| f.gateway = Some("172.16.1.1".into())).contains("not a host address"));
        assert!(bad(|f| f.gateway = Some("172.16.0.255".into())).contains("not a host address"));
        assert!(bad(|f| f.nft_table = "a b".into()).contains("nft_table"));
        assert!(bad(|f| f.reconcile_interval_secs = 0).contains("reconcile"));
        assert!(bad(|f| f.teardown_group = 0).contains("group"));
        assert!(bad(|f| f.guest_dns = Some(vec!["dns.example".into()])).contains("guest_dns"));
        assert!(bad(|f| f.guest_dns = Some(vec!["0.0.0.0".into()])).contains("guest_dns"));
        assert!(
            bad(|f| f.guest_dns = Some(vec!["1.1.1.1".into(), "8.8.8.8".into(), "9.9.9.9".into()]))
                .contains("at most two")
        );
    }

    #[test]
    fn guest_dns_is_what_the_file_says_or_nothing_when_told_so() {
        let with = |dns: Vec<&str>| {
            let file = NetdFile {
                guest_dns: Some(dns.into_iter().map(str::to_owned).collect()),
                ..NetdFile::default()
            };
            NetConfig::from_file(file).unwrap().guest_dns
        };
        assert_eq!(with(vec!["10.0.0.53"]), [Ipv4Addr::new(10, 0, 0, 53)]);
        assert_eq!(with(vec![]), Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn the_hosts_resolvers_are_read_without_loopback_ones() {
        let conf = "# generated\nsearch lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n\
                    nameserver fe80::1\nnameserver 10.0.0.53 # second\nnameserver 10.0.0.54\n";
        assert_eq!(
            nameservers_in(conf),
            [Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(10, 0, 0, 53)]
        );
        assert!(nameservers_in("nameserver 127.0.0.53\noptions edns0\n").is_empty());
        assert!(nameservers_in("").is_empty());
    }

    #[test]
    fn an_explicit_gateway_is_used_and_never_leased() {
        let file = NetdFile {
            subnet: Some("10.0.0.0/29".into()),
            gateway: Some("10.0.0.6".into()),
            ..NetdFile::default()
        };
        let c = NetConfig::from_file(file).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 0, 6));
        assert!(!crate::lease::is_leasable(c.subnet, c.gateway, c.gateway));
        assert!(crate::lease::is_leasable(
            c.subnet,
            c.gateway,
            Ipv4Addr::new(10, 0, 0, 1)
        ));
    }

    #[test]
    fn lab_settings_are_checked_against_each_other() {
        let lab = |f: fn(&mut NetdFile)| {
            let mut file = NetdFile {
                lab_range: Some("10.77.0.0/16".into()),
                subnet: Some("10.77.3.0/24".into()),
                ..NetdFile::default()
            };
            f(&mut file);
            NetConfig::from_file(file)
        };
        let ok = lab(|_| {}).unwrap();
        assert_eq!(
            ok.lab
                .as_ref()
                .map(|l| (l.range.to_string(), l.subnet_prefix)),
            Some(("10.77.0.0/16".to_owned(), 24))
        );
        assert_eq!(ok.peers.route_protocol, DEFAULT_ROUTE_PROTOCOL);
        let err = |f| lab(f).unwrap_err().to_string();
        assert!(err(|f| f.subnet = Some("10.78.0.0/24".into())).contains("not inside lab_range"));
        assert!(err(|f| f.lab_range = Some("10.77.1.0/16".into())).contains("lab_range"));
        assert!(err(|f| f.subnet_prefix = 8).contains("subnet_prefix"));
        assert!(err(|f| f.subnet_prefix = 31).contains("subnet_prefix"));
        assert!(err(|f| f.host_address = Some("0.0.0.0".into())).contains("host_address"));
        assert!(err(|f| f.route_protocol = 4).contains("route_protocol"));
        assert!(err(|f| f.peer_expiry_secs = 0).contains("peer_"));
        assert!(err(|f| f.subnet_bucket_replicas = 0).contains("replicas"));
        // A lab range without a subnet needs an allocation first.
        assert!(err(|f| f.subnet = None).contains("no subnet"));
        let addr = lab(|f| f.host_address = Some("192.0.2.11".into())).unwrap();
        assert_eq!(addr.peers.host_address, Some(Ipv4Addr::new(192, 0, 2, 11)));
    }

    #[test]
    fn the_file_table_is_strict() {
        let t: toml::Table = "bridge = 'x'\nsubnett = '10.0.0.0/24'".parse().unwrap();
        assert!(toml::Value::Table(t).try_into::<NetdFile>().is_err());
    }
}
