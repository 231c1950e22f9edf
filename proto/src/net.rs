//! netd's requests and replies: leases, taps, port forwards.

use serde::{Deserialize, Serialize};

use crate::names::{VmId, VmName};

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A forward from a host port to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// Port on the host (1..=65535).
    pub host_port: u16,
    /// Port in the guest (1..=65535).
    pub guest_port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl PortForward {
    /// Parses `HOST:GUEST[/tcp|/udp]`, for example `8080:80` or `5353:53/udp`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ports, proto) = match s.split_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, other)) => return Err(format!("unknown protocol {other:?}, use tcp or udp")),
            None => (s, Protocol::Tcp),
        };
        let (h, g) = ports
            .split_once(':')
            .ok_or_else(|| format!("port forward {s:?} must look like HOST:GUEST[/tcp|udp]"))?;
        let port = |v: &str| -> Result<u16, String> {
            match v.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("{v:?} is not a port between 1 and 65535")),
            }
        };
        Ok(Self {
            host_port: port(h)?,
            guest_port: port(g)?,
            protocol: proto,
        })
    }

    /// Checks the ports are non-zero (a deserialised value bypasses [`PortForward::parse`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.host_port == 0 || self.guest_port == 0 {
            return Err("port forward ports must be between 1 and 65535".into());
        }
        Ok(())
    }
}

/// `net.attach`: give a VM its lease and tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// The VM.
    pub vm_id: VmId,
    /// Its name (for logs and `net list`).
    pub vm_name: VmName,
    /// Port forwards to install.
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
}

/// A VM's lease and tap, as `net.attach` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The VM.
    pub vm_id: VmId,
    /// Its name.
    pub vm_name: VmName,
    /// Host tap device.
    pub tap: String,
    /// Guest MAC (stable, locally administered).
    pub mac: String,
    /// Guest IPv4 address.
    pub ip: String,
    /// Prefix length of the VM subnet.
    pub prefix_len: u8,
    /// Gateway (the bridge address).
    pub gateway: String,
    /// The kernel `ip=` boot argument for the guest.
    pub kernel_ip_arg: String,
    /// Port forwards installed for it.
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
    /// Whether the tap currently exists.
    #[serde(default)]
    pub tap_present: bool,
}

/// `net.detach`: remove a VM's tap and rules; release its lease when `release` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    /// The VM.
    pub vm_id: VmId,
    /// Release the lease too (on delete).
    #[serde(default)]
    pub release: bool,
}

/// `net.detach` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReply {
    /// Whether a tap was removed.
    pub tap_removed: bool,
    /// Whether the lease was released.
    pub released: bool,
}

/// `net.list` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetListRequest {}

/// `net.list` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetListReply {
    /// Every lease with its tap state.
    pub leases: Vec<Lease>,
}

/// `net.status` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetStatusRequest {}

/// `net.status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStatus {
    /// Bridge name.
    pub bridge: String,
    /// Whether the bridge exists and is up.
    pub bridge_up: bool,
    /// VM subnet, CIDR.
    pub subnet: String,
    /// Gateway address.
    pub gateway: String,
    /// Whether banger's nftables table is installed.
    pub nat_table_present: bool,
    /// Number of leases.
    pub leases: u32,
    /// Number of taps present.
    pub taps: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forwards_parse() {
        let pf = PortForward::parse("8080:80").unwrap();
        assert_eq!(
            (pf.host_port, pf.guest_port, pf.protocol),
            (8080, 80, Protocol::Tcp)
        );
        assert_eq!(
            PortForward::parse("53:53/udp").unwrap().protocol,
            Protocol::Udp
        );
        for bad in ["80", "0:80", "80:0", "a:b", "70000:1", "1:2/sctp"] {
            assert!(PortForward::parse(bad).is_err(), "{bad}");
        }
    }
}

/// The JetStream key-value bucket in which the hosts of a lab claim their VM subnets (netd's
/// `lab_range` mode): `banger` -> `BANGER_NETD_SUBNETS`. Key: the subnet with `/` written `_`
/// (`10.77.3.0_24`); value: the host id holding it. Every host with a claim is a member of the
/// lab, so the CLI can name a member that does not answer instead of not knowing it exists.
pub fn subnet_bucket(prefix: &str) -> String {
    crate::subject::jetstream_name(prefix, "NETD_SUBNETS")
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    #[test]
    fn the_subnet_bucket_name_is_valid_for_any_prefix() {
        assert_eq!(subnet_bucket("banger"), "BANGER_NETD_SUBNETS");
        assert_eq!(subnet_bucket("lab.a-1"), "LAB_A_1_NETD_SUBNETS");
    }
}
