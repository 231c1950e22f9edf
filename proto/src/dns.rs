//! dnsd's requests and replies.
//!
//! dnsd is authoritative for the `vm.` zone: `<name>.vm.` and `<name>.<host>.vm.` for every
//! running VM that has an address. These types describe what it serves, over the bus, so
//! `banger dns records` / `banger status` need no DNS client.

use serde::{Deserialize, Serialize};

use crate::names::{HostId, VmId};

/// The zone dnsd serves, fully qualified.
pub const ZONE: &str = "vm.";

/// One served record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Fully qualified name, e.g. `web.vm.` or `web.lab1.vm.`.
    pub name: String,
    /// Record type: `A` or `AAAA`.
    pub rtype: String,
    /// Address.
    pub addr: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// The VM the record belongs to.
    pub vm_id: VmId,
    /// The host whose controller owns that VM.
    pub host: HostId,
}

/// `dns.records` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsRequest {}

/// `dns.records` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsReply {
    /// Every record served, sorted by name, type and address.
    pub records: Vec<DnsRecord>,
}

/// `dns.lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// A name, with or without the trailing `.vm` (and root dot): `web`, `web.vm`,
    /// `web.lab1`, `web.lab1.vm.`.
    pub name: String,
}

/// `dns.lookup` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReply {
    /// The fully qualified name that was looked up.
    #[serde(default)]
    pub name: String,
    /// Matching records (empty when unknown).
    pub records: Vec<DnsRecord>,
}

/// `dns.status` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsStatusRequest {}

/// `dns.status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// Listener addresses; each answers on both UDP and TCP.
    pub listeners: Vec<String>,
    /// Zone served.
    pub zone: String,
    /// Number of records (A and AAAA, both name forms counted).
    pub records: u32,
    /// Last rebuild from `vm.list`, milliseconds since the Unix epoch.
    pub last_rebuild_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_lookup_rejects_unknown_fields() {
        let r = DnsRecord {
            name: "web.vm.".into(),
            rtype: "A".into(),
            addr: "172.16.0.2".into(),
            ttl: 5,
            vm_id: VmId::new("0123456789abcdef0123456789abcdef").unwrap(),
            host: HostId::new("lab1").unwrap(),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["host"], "lab1");
        assert_eq!(serde_json::from_value::<DnsRecord>(json).unwrap(), r);
        assert!(serde_json::from_str::<LookupRequest>(r#"{"name":"web","x":1}"#).is_err());
        let reply: LookupReply = serde_json::from_str(r#"{"records":[]}"#).unwrap();
        assert!(reply.name.is_empty());
    }
}
