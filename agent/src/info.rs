//! `GET /v1/info`: what the guest is — OS release, kernel, network addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use banger_proto::agent::{Info, InterfaceAddress, KernelInfo, OsRelease};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage};

use crate::health::{HealthError, hostname};

/// The OS release file; `/usr/lib/os-release` is the fallback the spec names.
const OS_RELEASE: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// Gathering the guest information failed.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// The hostname could not be read.
    #[error("reading the hostname")]
    Hostname(#[source] HealthError),
    /// `uname` failed.
    #[error("uname")]
    Uname(#[source] nix::Error),
    /// `getifaddrs` failed.
    #[error("listing interface addresses")]
    Ifaddrs(#[source] nix::Error),
}

/// Gathers an [`Info`] from the running system (blocking).
pub fn gather(exec_enabled: bool) -> Result<Info, InfoError> {
    let uts = nix::sys::utsname::uname().map_err(InfoError::Uname)?;
    let lossy = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
    let os = OS_RELEASE
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_os_release(&text))
        .unwrap_or_default();
    Ok(Info {
        hostname: hostname().map_err(InfoError::Hostname)?,
        agent_version: crate::VERSION.to_owned(),
        exec_enabled,
        os,
        kernel: KernelInfo {
            sysname: lossy(uts.sysname()),
            release: lossy(uts.release()),
            version: lossy(uts.version()),
            machine: lossy(uts.machine()),
        },
        addresses: addresses()?,
    })
}

fn addresses() -> Result<Vec<InterfaceAddress>, InfoError> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(InfoError::Ifaddrs)? {
        let Some(address) = ifa.address.as_ref().and_then(ip_of) else {
            continue; // link-layer (AF_PACKET) entries and interfaces without an address
        };
        let prefix_len = ifa.netmask.as_ref().and_then(ip_of).map(prefix_of);
        out.push(InterfaceAddress {
            interface: ifa.interface_name,
            address,
            prefix_len,
        });
    }
    Ok(out)
}

fn ip_of(sa: &SockaddrStorage) -> Option<IpAddr> {
    match sa.family()? {
        AddressFamily::Inet => sa.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())),
        AddressFamily::Inet6 => sa.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())),
        _ => None,
    }
}

/// Prefix length of a netmask: its count of one bits (a netmask is contiguous ones).
fn prefix_of(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).count_ones(),
        IpAddr::V6(m) => u128::from(m).count_ones(),
    };
    // count_ones of a u128 is at most 128.
    u8::try_from(ones).unwrap_or(u8::MAX)
}

/// Parses os-release(5): `KEY=value` lines, values optionally quoted, `#` comments.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        fields.insert(key.trim().to_owned(), unquote(value.trim()));
    }
    OsRelease {
        id: fields.get("ID").cloned(),
        version_id: fields.get("VERSION_ID").cloned(),
        pretty_name: fields.get("PRETTY_NAME").cloned(),
        fields,
    }
}

fn unquote(v: &str) -> String {
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
        .unwrap_or(v);
    // Shell-style escapes the spec allows inside double quotes.
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_parses_quoted_and_bare_values() {
        let os = parse_os_release(
            "# comment\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n\
             VERSION_ID='12'\nNAME=\"a \\\"b\\\"\"\nbogus line\n",
        );
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os.fields["NAME"], "a \"b\"");
        assert_eq!(os.fields.len(), 4);
    }

    #[test]
    fn netmasks_become_prefix_lengths() {
        assert_eq!(prefix_of("255.255.255.0".parse().unwrap()), 24);
        assert_eq!(prefix_of("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
    }

    #[test]
    fn gather_lists_loopback() {
        let info = gather(false).unwrap();
        assert_eq!(info.kernel.sysname, "Linux");
        assert!(
            info.addresses
                .iter()
                .any(|a| a.address == IpAddr::from([127, 0, 0, 1]) && a.prefix_len == Some(8)),
            "{:?}",
            info.addresses
        );
    }
}
