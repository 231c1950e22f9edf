//! What a lease is made of, derived without side effects: the tap name, the guest MAC, the next
//! free address of the subnet and the kernel `ip=` boot argument.
//!
//! Names and MACs are derived from the VM id so they are stable across restarts and readable
//! (`bgr<first 12 hex digits of the id>`). Ids that share their first 12 digits (time-ordered
//! ids created in the same millisecond) fall back to a hash of the whole id, so two VMs never
//! share a tap or a MAC; the chosen values are stored with the lease and never recomputed.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use banger_proto::VmId;
use ipnet::Ipv4Net;

/// Prefix of every tap netd creates; reconciliation only ever removes interfaces with it.
pub const TAP_PREFIX: &str = "bgr";

/// How many alternatives to try for a name or MAC before giving up (a collision even on the
/// first alternative needs a 48-bit hash collision).
const MAX_ATTEMPTS: u32 = 16;

/// FNV-1a 64 over the id and the attempt number: stable, dependency-free, well spread.
fn hash(id: &VmId, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_str().bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The tap name of attempt `attempt`: `bgr<short id>` first, then hash-derived names.
pub fn tap_name(id: &VmId, attempt: u32) -> String {
    if attempt == 0 {
        format!("{TAP_PREFIX}{}", id.short())
    } else {
        format!("{TAP_PREFIX}{:012x}", hash(id, attempt) & 0xffff_ffff_ffff)
    }
}

/// The guest MAC of attempt `attempt`: `06:` (locally administered, unicast) and five bytes of
/// a hash of the id.
pub fn mac(id: &VmId, attempt: u32) -> String {
    let b = hash(id, attempt).to_be_bytes();
    format!(
        "06:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The first value of `candidates(attempt)` not in `used`.
pub fn first_unused(used: &HashSet<String>, candidate: impl Fn(u32) -> String) -> Option<String> {
    (0..MAX_ATTEMPTS).map(candidate).find(|c| !used.contains(c))
}

/// The lowest address of `subnet` that is not the network, the gateway, the broadcast address
/// or in `used`.
pub fn first_free_ip(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: &HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    subnet
        .hosts()
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// Whether `ip` may be leased in `subnet`.
pub fn is_leasable(subnet: Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != gateway && ip != subnet.network() && ip != subnet.broadcast()
}

/// The kernel's `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>` argument.
/// The hostname is the VM's name (a DNS label, so it never holds a `:`): the kernel sets it at
/// boot, and guests built by `banger image build` read it too. `dns` (at most two) become the
/// `<dns0>:<dns1>` fields that follow, the guest's resolvers.
pub fn kernel_ip_arg(
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
    hostname: &str,
    dns: &[Ipv4Addr],
) -> String {
    let mut arg = format!(
        "ip={ip}::{gateway}:{}:{hostname}:eth0:off",
        subnet.netmask()
    );
    for server in dns.iter().take(2) {
        arg.push_str(&format!(":{server}"));
    }
    arg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> VmId {
        VmId::new(s).unwrap()
    }

    #[test]
    fn tap_names_are_readable_then_hashed_and_fit_ifnamsiz() {
        let a = id("0123456789abcdef0123456789abcdef");
        assert_eq!(tap_name(&a, 0), "bgr0123456789ab");
        assert_ne!(tap_name(&a, 1), tap_name(&a, 0));
        for n in 0..MAX_ATTEMPTS {
            assert_eq!(tap_name(&a, n).len(), 15);
            assert!(tap_name(&a, n).starts_with(TAP_PREFIX));
        }
    }

    #[test]
    fn ids_sharing_a_prefix_get_distinct_taps_and_macs() {
        let a = id("0123456789ab00000000000000000001");
        let b = id("0123456789ab00000000000000000002");
        let mut used = HashSet::new();
        used.insert(first_unused(&used, |n| tap_name(&a, n)).unwrap());
        let tb = first_unused(&used, |n| tap_name(&b, n)).unwrap();
        assert!(!used.contains(&tb));
        assert_ne!(mac(&a, 0), mac(&b, 0));
    }

    #[test]
    fn macs_are_stable_locally_administered_unicast() {
        let a = id("0123456789abcdef0123456789abcdef");
        assert_eq!(mac(&a, 0), mac(&a, 0));
        let first = u8::from_str_radix(&mac(&a, 0)[..2], 16).unwrap();
        assert_eq!(first & 0b10, 0b10, "locally administered");
        assert_eq!(first & 0b01, 0, "unicast");
        assert_eq!(mac(&a, 0).len(), 17);
    }

    #[test]
    fn allocation_skips_network_gateway_and_broadcast() {
        let subnet: Ipv4Net = "10.9.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = first_free_ip(subnet, gw, &used) {
            used.insert(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, [2, 3, 4, 5, 6]);
        assert!(!is_leasable(subnet, gw, Ipv4Addr::new(10, 9, 0, 7)));
        assert!(!is_leasable(subnet, gw, Ipv4Addr::new(10, 9, 0, 1)));
        assert!(!is_leasable(subnet, gw, Ipv4Addr::new(10, 9, 1, 2)));
        assert!(is_leasable(subnet, gw, Ipv4Addr::new(10, 9, 0, 6)));
    }

    #[test]
    fn kernel_argument_has_the_documented_shape() {
        let subnet: Ipv4Net = "172.16.0.0/24".parse().unwrap();
        assert_eq!(
            kernel_ip_arg(
                Ipv4Addr::new(172, 16, 0, 2),
                Ipv4Addr::new(172, 16, 0, 1),
                subnet,
                "web",
                &[]
            ),
            "ip=172.16.0.2::172.16.0.1:255.255.255.0:web:eth0:off"
        );
        // Resolvers follow as <dns0>:<dns1>; a third is never written.
        let dns = [
            Ipv4Addr::new(10, 0, 0, 53),
            Ipv4Addr::new(10, 0, 0, 54),
            Ipv4Addr::new(10, 0, 0, 55),
        ];
        let arg = |dns: &[Ipv4Addr]| {
            kernel_ip_arg(
                Ipv4Addr::new(172, 16, 0, 2),
                Ipv4Addr::new(172, 16, 0, 1),
                subnet,
                "web",
                dns,
            )
        };
        assert!(arg(&dns[..1]).ends_with(":web:eth0:off:10.0.0.53"));
        assert!(arg(&dns).ends_with(":web:eth0:off:10.0.0.53:10.0.0.54"));
    }
}
