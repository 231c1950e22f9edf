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

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// The `[netd]` table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetdFile {
    /// Bridge name.
    pub bridge: String,
    /// VM subnet (CIDR, the network address).
    pub subnet: String,
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
}

impl Default for NetdFile {
    fn default() -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: DEFAULT_SUBNET.to_owned(),
            gateway: None,
            mtu: DEFAULT_MTU,
            nft_table: DEFAULT_TABLE.to_owned(),
            reconcile_interval_secs: DEFAULT_RECONCILE_SECS,
            reconcile_grace_secs: DEFAULT_GRACE_SECS,
            uplinks: Vec::new(),
            teardown_group: DEFAULT_TEARDOWN_GROUP,
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
        let subnet: Ipv4Net = file
            .subnet
            .parse()
            .map_err(|source| ConfigError::SubnetSyntax {
                value: file.subnet.clone(),
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
        })
    }
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
        assert!(bad(|f| f.subnet = "172.16.0.5/24".into()).contains("172.16.0.0/24"));
        assert!(bad(|f| f.subnet = "nope".into()).contains("subnet"));
        assert!(bad(|f| f.subnet = "10.0.0.0/31".into()).contains("too small"));
        assert!(bad(|f| f.bridge = "a-very-long-bridge-name".into()).contains("15"));
        assert!(bad(|f| f.bridge = "bgr0".into()).contains("reserved"));
        assert!(bad(|f| f.mtu = 10).contains("mtu"));
        assert!(bad(|f| f.gateway = Some("x".into())).contains("gateway"));
        assert!(bad(|f| f.gateway = Some("172.16.1.1".into())).contains("not a host address"));
        assert!(bad(|f| f.gateway = Some("172.16.0.255".into())).contains("not a host address"));
        assert!(bad(|f| f.nft_table = "a b".into()).contains("nft_table"));
        assert!(bad(|f| f.reconcile_interval_secs = 0).contains("reconcile"));
        assert!(bad(|f| f.teardown_group = 0).contains("group"));
    }

    #[test]
    fn an_explicit_gateway_is_used_and_never_leased() {
        let file = NetdFile {
            subnet: "10.0.0.0/29".into(),
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
    fn the_file_table_is_strict() {
        let t: toml::Table = "bridge = 'x'\nsubnett = '10.0.0.0/24'".parse().unwrap();
        assert!(toml::Value::Table(t).try_into::<NetdFile>().is_err());
    }
}
