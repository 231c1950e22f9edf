//! dnsd's settings: the `[dnsd]` table of the config file, overridden by flags.
//!
//! ```toml
//! [dnsd]
//! listen = ["127.0.0.1:42069"]   # each address answers on UDP and TCP
//! ttl_secs = 5                   # A/AAAA TTL
//! negative_ttl_secs = 5          # SOA TTL and minimum: how long NXDOMAIN is cached
//! rebuild_interval_secs = 30     # how often the zone is rebuilt from vm.list
//! gather_timeout_ms = 2000       # how long a rebuild waits for every controller
//! ns_name = "localhost."         # the name server named by NS and the SOA
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hickory_server::proto::rr::Name;
use serde::Deserialize;

use crate::zone::ZoneSettings;

/// 42069: the port the earlier bangerd served `.vm` on; kept so existing resolver
/// configurations (systemd-resolved drop-ins, dnsmasq lines) keep working.
pub const DEFAULT_PORT: u16 = 42069;

/// The default listener: loopback only, since it serves the host's own resolver.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_PORT));

/// Default A/AAAA TTL: short, so a stopped VM's name stops resolving within seconds even in a
/// caching resolver.
pub const DEFAULT_TTL_SECS: u32 = 5;

/// Default rebuild period: a missed event or a restart converges within this.
pub const DEFAULT_REBUILD_INTERVAL_SECS: u64 = 30;

/// Default gather deadline for `vm.list`: a controller slower than this keeps its records
/// until the next rebuild.
pub const DEFAULT_GATHER_TIMEOUT_MS: u64 = 2000;

/// The longest TTL accepted: a day. Longer makes stale answers outlive VMs for too long.
pub const MAX_TTL_SECS: u32 = 86_400;

/// Default NS target: outside the zone, so no VM name can collide with it, and it needs no
/// glue: the zone is served to the local resolver only.
pub const DEFAULT_NS_NAME: &str = "localhost.";

/// The `[dnsd]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsdConfig {
    /// Addresses to answer on (UDP and TCP each).
    pub listen: Vec<SocketAddr>,
    /// A/AAAA TTL, seconds.
    pub ttl_secs: u32,
    /// SOA TTL and negative-caching TTL, seconds.
    pub negative_ttl_secs: u32,
    /// Period of the rebuild from `vm.list`, seconds.
    pub rebuild_interval_secs: u64,
    /// Deadline of one `vm.list` gather, milliseconds.
    pub gather_timeout_ms: u64,
    /// The NS target and SOA MNAME.
    pub ns_name: String,
}

impl Default for DnsdConfig {
    fn default() -> Self {
        Self {
            listen: vec![DEFAULT_LISTEN],
            ttl_secs: DEFAULT_TTL_SECS,
            negative_ttl_secs: DEFAULT_TTL_SECS,
            rebuild_interval_secs: DEFAULT_REBUILD_INTERVAL_SECS,
            gather_timeout_ms: DEFAULT_GATHER_TIMEOUT_MS,
            ns_name: DEFAULT_NS_NAME.to_owned(),
        }
    }
}

/// A setting that makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No listener.
    #[error("[dnsd] listen must name at least one address")]
    NoListener,
    /// A TTL out of range.
    #[error("[dnsd] {key} must be between 0 and {MAX_TTL_SECS}, got {value}")]
    Ttl {
        /// Which key.
        key: &'static str,
        /// The value.
        value: u32,
    },
    /// A zero period or deadline.
    #[error("[dnsd] {key} must be greater than 0")]
    Zero {
        /// Which key.
        key: &'static str,
    },
    /// The NS name does not parse.
    #[error("[dnsd] ns_name {value:?} is not a domain name")]
    NsName {
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: hickory_server::proto::ProtoError,
    },
}

/// Settings after validation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to answer on, deduplicated, in the given order.
    pub listen: Vec<SocketAddr>,
    /// Zone properties.
    pub zone: ZoneSettings,
    /// Rebuild period.
    pub rebuild_interval: Duration,
    /// Gather deadline.
    pub gather_timeout: Duration,
}

impl DnsdConfig {
    /// Applies `--listen` (replacing the file's list when given) and validates.
    pub fn resolve(mut self, listen_flags: &[SocketAddr]) -> Result<Settings, ConfigError> {
        if !listen_flags.is_empty() {
            self.listen = listen_flags.to_vec();
        }
        let mut listen = Vec::new();
        for a in self.listen {
            if !listen.contains(&a) {
                listen.push(a);
            }
        }
        if listen.is_empty() {
            return Err(ConfigError::NoListener);
        }
        for (key, value) in [
            ("ttl_secs", self.ttl_secs),
            ("negative_ttl_secs", self.negative_ttl_secs),
        ] {
            if value > MAX_TTL_SECS {
                return Err(ConfigError::Ttl { key, value });
            }
        }
        if self.rebuild_interval_secs == 0 {
            return Err(ConfigError::Zero {
                key: "rebuild_interval_secs",
            });
        }
        if self.gather_timeout_ms == 0 {
            return Err(ConfigError::Zero {
                key: "gather_timeout_ms",
            });
        }
        let mut ns_name =
            Name::from_ascii(&self.ns_name).map_err(|source| ConfigError::NsName {
                value: self.ns_name.clone(),
                source,
            })?;
        ns_name.set_fqdn(true);
        Ok(Settings {
            listen,
            zone: ZoneSettings {
                ttl: self.ttl_secs,
                negative_ttl: self.negative_ttl_secs,
                ns_name,
            },
            rebuild_interval: Duration::from_secs(self.rebuild_interval_secs),
            gather_timeout: Duration::from_millis(self.gather_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DnsdConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn defaults_listen_on_loopback_42069() {
        let s = DnsdConfig::default().resolve(&[]).unwrap();
        assert_eq!(s.listen, vec!["127.0.0.1:42069".parse().unwrap()]);
        assert_eq!((s.zone.ttl, s.zone.negative_ttl), (5, 5));
        assert_eq!(s.rebuild_interval, Duration::from_secs(30));
        assert_eq!(s.zone.ns_name.to_ascii(), "localhost.");
    }

    #[test]
    fn several_listeners_from_the_file_and_flags_replace_them() {
        let c = parse("listen = ['127.0.0.1:5353', '[::1]:5353', '127.0.0.1:5353']\nttl_secs = 1")
            .unwrap();
        let s = c.clone().resolve(&[]).unwrap();
        assert_eq!(s.listen.len(), 2, "duplicates are dropped");
        assert_eq!(s.zone.ttl, 1);
        let flag: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(c.resolve(&[flag]).unwrap().listen, vec![flag]);
    }

    #[test]
    fn bad_settings_are_rejected_with_the_key_named() {
        assert!(parse("lisen = []").is_err());
        assert!(parse("listen = ['localhost']").is_err());
        let err = parse("listen = []").unwrap().resolve(&[]).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = parse("ttl_secs = 100000")
            .unwrap()
            .resolve(&[])
            .unwrap_err();
        assert!(err.to_string().contains("ttl_secs"), "{err}");
        let err = parse("rebuild_interval_secs = 0")
            .unwrap()
            .resolve(&[])
            .unwrap_err();
        assert!(err.to_string().contains("rebuild_interval_secs"), "{err}");
        let err = parse("ns_name = 'a..b'").unwrap().resolve(&[]).unwrap_err();
        assert!(err.to_string().contains("ns_name"), "{err}");
    }
}
