//! The parts of the kernel command line the simulated guest reads: the `ip=` argument
//! (`ip=<client>:<server>:<gw>:<netmask>:<hostname>:<dev>:<autoconf>`, the kernel's
//! `nfsroot.txt` format that banger uses for static guest addressing).

use std::net::Ipv4Addr;

/// The static address configuration from `ip=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpConfig {
    /// The guest's address.
    pub(crate) client: Ipv4Addr,
    /// The gateway, when given.
    pub(crate) gateway: Option<Ipv4Addr>,
    /// The netmask, when given.
    pub(crate) netmask: Option<Ipv4Addr>,
    /// The hostname, when given.
    pub(crate) hostname: Option<String>,
}

/// The `ip=` argument of `cmdline`, when it names a static client address. `ip=dhcp` and
/// friends give `None` (the simulator has no DHCP client).
pub(crate) fn ip_config(cmdline: &str) -> Option<IpConfig> {
    let value = cmdline
        .split_whitespace()
        .rev()
        .find_map(|arg| arg.strip_prefix("ip="))?;
    let mut fields = value.split(':');
    let client = fields.next()?.parse().ok()?;
    let _server = fields.next();
    let addr = |f: Option<&str>| f.and_then(|s| s.parse::<Ipv4Addr>().ok());
    let gateway = addr(fields.next());
    let netmask = addr(fields.next());
    let hostname = fields.next().filter(|h| !h.is_empty()).map(str::to_owned);
    Some(IpConfig {
        client,
        gateway,
        netmask,
        hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_ip_argument_parses() {
        let c = ip_config(
            "console=ttyS0 reboot=k panic=1 ip=172.16.0.2::172.16.0.1:255.255.255.0:web:eth0:off",
        )
        .unwrap();
        assert_eq!(c.client, Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(c.gateway, Some(Ipv4Addr::new(172, 16, 0, 1)));
        assert_eq!(c.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(c.hostname.as_deref(), Some("web"));
        assert_eq!(ip_config("console=ttyS0 ip=dhcp"), None);
        assert_eq!(ip_config("console=ttyS0"), None);
        assert_eq!(
            ip_config("ip=10.0.0.5").map(|c| c.client),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
    }
}
