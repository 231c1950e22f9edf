//! dnsd's requests and replies.

use serde::{Deserialize, Serialize};

/// One served record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Fully qualified name, e.g. `web.vm.` or `web.lab1.vm.`.
    pub name: String,
    /// Record type: `A` or `AAAA`.
    pub rtype: String,
    /// Address.
    pub addr: String,
    /// TTL in seconds.
    pub ttl: u32,
}

/// `dns.records` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsRequest {}

/// `dns.records` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsReply {
    /// Every record served.
    pub records: Vec<DnsRecord>,
}

/// `dns.lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// A name, with or without the trailing `.vm`.
    pub name: String,
}

/// `dns.lookup` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReply {
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
    /// Listener addresses (UDP and TCP).
    pub listeners: Vec<String>,
    /// Zone served.
    pub zone: String,
    /// Number of records.
    pub records: u32,
    /// Last rebuild from `vm.list`, milliseconds since the Unix epoch.
    pub last_rebuild_ms: Option<u64>,
}
