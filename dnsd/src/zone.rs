//! The `vm.` zone: an immutable snapshot of what is served, and the hickory [`ZoneHandler`] that
//! answers from it.
//!
//! A [`Zone`] is never changed once published; the handler reads the current one through an
//! [`ArcSwap`], so a query never waits for an update and an update never waits for a query: the
//! updater derives the next snapshot from the current one and a batch of [`Change`]s on the side
//! ([`Zone::apply`], sharing every untouched name, see [`Zone`]) and swaps one pointer.
//!
//! Answers, per RFC 1034/2308 for an authoritative server:
//! - `<name>.vm.` and `<name>.<host>.vm.`: A (and AAAA for IPv6 addresses) of running VMs.
//! - `vm.`: SOA and NS.
//! - a name that exists without the asked type (including `<host>.vm.`, an empty non-terminal
//!   when that host has VMs): NOERROR with no answer and the SOA in the authority section.
//! - a name that does not exist: NXDOMAIN with the SOA in the authority section (the catalog adds
//!   the SOA by looking up the origin's SOA here).
//! - classes other than IN, zone transfers (AXFR/IXFR) and names outside the zone: REFUSED.
//! - dynamic updates: NOTIMP (the trait's default); other opcodes: NOTIMP (the catalog).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use banger_proto::dns::{DnsRecord, ZONE};
use banger_proto::{HostId, VmId, VmName};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_server::proto::rr::{
    DNSClass, LowerName, Name, RData, Record, RecordSet, RecordType, TSigResponseContext,
};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneTransfer, ZoneType,
};
use rpds::HashTrieMapSync;

use crate::wire::{EncodedAnswers, wire_key};
use crate::wire_index::WireIndex;

/// SOA refresh: nothing replicates this zone; a conventional value keeps tools quiet.
const SOA_REFRESH: i32 = 3600;
/// SOA retry.
const SOA_RETRY: i32 = 600;
/// SOA expire.
const SOA_EXPIRE: i32 = 86_400;
/// The SOA's responsible-person mailbox: nobody, the zone is generated.
const SOA_RNAME: &str = "nobody.invalid.";

/// A running VM's address, as the zone serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    /// The VM.
    pub id: VmId,
    /// Its name: the first label of its records.
    pub name: VmName,
    /// Its host: the middle label of `<name>.<host>.vm.`.
    pub host: HostId,
    /// Its address: A for IPv4, AAAA for IPv6.
    pub addr: IpAddr,
}

/// Fixed properties of the zone, from the configuration.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    /// TTL of A/AAAA records, seconds.
    pub ttl: u32,
    /// TTL of the SOA and the negative-caching TTL (SOA minimum), seconds.
    pub negative_ttl: u32,
    /// The name server named by NS and the SOA's MNAME (fully qualified).
    pub ns_name: Name,
}

/// What one name holds: the VMs answering at it and, when it is a host's label (`<host>.vm.`),
/// how many served VMs that host runs. A name with neither does not exist (NXDOMAIN); a host
/// label with no VMs of its own is an empty non-terminal. Immutable once built: a change to the
/// name builds a new node and every other name keeps its node.
#[derive(Debug)]
struct Node {
    /// The name as listed by `dns.records` (`web.vm.`).
    fqdn: String,
    /// The name as served.
    name: Name,
    /// The VMs answering at this name, in the order they were added.
    vms: Vec<VmEntry>,
    /// Served VMs on the host whose label this name is.
    host_vms: usize,
    a: Option<Arc<RecordSet>>,
    aaaa: Option<Arc<RecordSet>>,
}

impl Node {
    fn new(ttl: u32, serial: u32, edit: Edit) -> Self {
        let mut a: Option<RecordSet> = None;
        let mut aaaa: Option<RecordSet> = None;
        for e in &edit.vms {
            let (set, rtype, rdata) = match e.addr {
                IpAddr::V4(v4) => (&mut a, RecordType::A, RData::A(A(v4))),
                IpAddr::V6(v6) => (&mut aaaa, RecordType::AAAA, RData::AAAA(AAAA(v6))),
            };
            set.get_or_insert_with(|| RecordSet::with_ttl(edit.name.clone(), rtype, ttl))
                .insert(Record::from_rdata(edit.name.clone(), ttl, rdata), serial);
        }
        Self {
            fqdn: edit.fqdn,
            name: edit.name,
            vms: edit.vms,
            host_vms: edit.host_vms,
            a: a.map(Arc::new),
            aaaa: aaaa.map(Arc::new),
        }
    }

    fn record(&self, ttl: u32, e: &VmEntry) -> DnsRecord {
        DnsRecord {
            name: self.fqdn.clone(),
            rtype: rtype_of(e.addr).to_string(),
            addr: e.addr.to_string(),
            ttl,
            vm_id: e.id.clone(),
            host: e.host.clone(),
        }
    }
}

/// A node being changed while a batch is applied: its new contents, and how many VMs it had.
struct Edit {
    fqdn: String,
    name: Name,
    vms: Vec<VmEntry>,
    host_vms: usize,
    vms_before: usize,
}

/// One change to the served VMs, as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Serve this VM.
    Add(VmEntry),
    /// Stop serving this VM (the entry exactly as it was added).
    Remove(VmEntry),
}

/// An immutable snapshot of the zone.
///
/// Layout decision: the names live in a persistent hash map (`rpds::HashTrieMapSync`, a hash
/// array mapped trie) of `Arc<Node>`. The next snapshot is [`Zone::apply`]: clone the map (one
/// reference count), rebuild only the nodes of the names a batch touched (a VM's two names and
/// its host's label) and insert them, which copies the O(log32 n) trie path above each. Every
/// other node, and most of the trie, is shared with the previous snapshot, so an event costs in
/// proportion to the change, not to the zone (the whole-zone rebuild it replaces took ~0.5–1 s
/// per event at 10,000 VMs). Readers are unaffected: they still load one snapshot through the
/// `ArcSwap` and never lock. rpds was chosen over `im`/`imbl` (well kept, fewer dependencies:
/// archery and triomphe) and over a hand-written `HashMap<_, Arc<Node>>` layout, whose clone
/// would still copy n pointers per snapshot. `dns.records` lists by walking the nodes and
/// sorting (O(n) per call, as copying the list was before); queries and `dns.lookup` touch
/// one node. The UDP fast path has its own index of the encoded answers ([`WireIndex`]:
/// sharded flat maps, copied per touched shard), because the trie's lookup cost it several
/// cache misses per level.
pub struct Zone {
    origin: LowerName,
    serial: u32,
    ttl: u32,
    soa: Arc<RecordSet>,
    ns: Arc<RecordSet>,
    nodes: HashTrieMapSync<LowerName, Arc<Node>>,
    /// The encoded answers of the same names by the lowercase wire form of the name, for the
    /// UDP fast path ([`WireIndex`]).
    by_wire: WireIndex,
    /// The SOA as an authority record, encoded for the fast path's NODATA answers.
    soa_wire: Arc<[u8]>,
    /// How many A/AAAA records are served (two per VM).
    record_count: usize,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("serial", &self.serial)
            .field("names", &self.nodes.size())
            .field("records", &self.record_count)
            .finish_non_exhaustive()
    }
}

/// Why a zone could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A name could not be formed (cannot happen with validated VM names and host ids).
    #[error("forming the DNS name {name}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: hickory_server::proto::ProtoError,
    },
}

/// The zone's origin, `vm.`.
pub fn origin() -> Name {
    // A constant, valid name: this cannot fail.
    Name::from_ascii(ZONE).unwrap_or_else(|_| Name::root())
}

fn name(s: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(s).map_err(|source| ZoneError::Name {
        name: s.to_owned(),
        source,
    })
}

fn rtype_of(addr: IpAddr) -> RecordType {
    match addr {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::AAAA,
    }
}

/// A name as text and as a DNS name.
fn named(fqdn: String) -> Result<(String, Name), ZoneError> {
    let n = name(&fqdn)?;
    Ok((fqdn, n))
}

impl Zone {
    /// A snapshot serving nothing, with SOA serial `serial`.
    fn empty(settings: &ZoneSettings, serial: u32) -> Result<Self, ZoneError> {
        let origin_name = origin();
        let (soa, ns) = apex(settings, serial)?;
        Ok(Self {
            origin: LowerName::new(&origin_name),
            serial,
            ttl: settings.ttl,
            soa,
            ns,
            nodes: HashTrieMapSync::new_sync(),
            by_wire: WireIndex::new(),
            soa_wire: soa_wire(settings, serial),
            record_count: 0,
        })
    }

    /// Builds a snapshot serving `entries`, with SOA serial `serial`.
    pub fn build<'a>(
        settings: &ZoneSettings,
        serial: u32,
        entries: impl IntoIterator<Item = &'a VmEntry>,
    ) -> Result<Self, ZoneError> {
        let adds: Vec<Change> = entries.into_iter().cloned().map(Change::Add).collect();
        Self::empty(settings, serial)?.apply(settings, serial, &adds)
    }

    /// The next snapshot: this one with `changes` applied in order, SOA serial `serial`. Costs
    /// in proportion to the names `changes` touch; everything else is shared with `self`.
    pub fn apply(
        &self,
        settings: &ZoneSettings,
        serial: u32,
        changes: &[Change],
    ) -> Result<Self, ZoneError> {
        let mut edits: HashMap<LowerName, Edit> = HashMap::new();
        for change in changes {
            let (e, add) = match change {
                Change::Add(e) => (e, true),
                Change::Remove(e) => (e, false),
            };
            for fqdn in [
                format!("{}.{ZONE}", e.name),
                format!("{}.{}.{ZONE}", e.name, e.host),
            ] {
                let edit = self.edit(&mut edits, named(fqdn)?);
                if add {
                    edit.vms.push(e.clone());
                } else if let Some(i) = edit.vms.iter().position(|v| v == e) {
                    edit.vms.remove(i);
                }
            }
            let edit = self.edit(&mut edits, named(format!("{}.{ZONE}", e.host))?);
            edit.host_vms = if add {
                edit.host_vms.saturating_add(1)
            } else {
                edit.host_vms.saturating_sub(1)
            };
        }
        let mut nodes = self.nodes.clone();
        let mut wire_changes = Vec::with_capacity(edits.len());
        let mut record_count = self.record_count;
        for (key, edit) in edits {
            record_count = record_count
                .saturating_sub(edit.vms_before)
                .saturating_add(edit.vms.len());
            let wire = wire_key(&edit.fqdn);
            if edit.vms.is_empty() && edit.host_vms == 0 {
                nodes.remove_mut(&key);
                wire_changes.push((wire, None));
            } else {
                let node = Arc::new(Node::new(settings.ttl, serial, edit));
                wire_changes.push((
                    wire,
                    Some(EncodedAnswers::new(
                        settings.ttl,
                        node.vms.iter().map(|e| &e.addr),
                    )),
                ));
                nodes.insert_mut(key, node);
            }
        }
        let (soa, ns) = apex(settings, serial)?;
        Ok(Self {
            origin: self.origin.clone(),
            serial,
            ttl: settings.ttl,
            soa,
            ns,
            nodes,
            by_wire: self.by_wire.with_changes(wire_changes),
            soa_wire: soa_wire(settings, serial),
            record_count,
        })
    }

    /// The pending edit of a name, started from its current node.
    fn edit<'e>(
        &self,
        edits: &'e mut HashMap<LowerName, Edit>,
        (fqdn, n): (String, Name),
    ) -> &'e mut Edit {
        let key = LowerName::new(&n);
        let current = self.nodes.get(&key);
        edits.entry(key).or_insert_with(|| match current {
            Some(node) => Edit {
                fqdn: node.fqdn.clone(),
                name: node.name.clone(),
                vms: node.vms.clone(),
                host_vms: node.host_vms,
                vms_before: node.vms.len(),
            },
            None => Edit {
                fqdn,
                name: n,
                vms: Vec::new(),
                host_vms: 0,
                vms_before: 0,
            },
        })
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// How many A/AAAA records are served.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Every A/AAAA record served, sorted by name, type and address (O(records)).
    pub fn records(&self) -> Vec<DnsRecord> {
        let mut out: Vec<DnsRecord> = self
            .nodes
            .values()
            .flat_map(|node| node.vms.iter().map(|e| node.record(self.ttl, e)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The records of one fully qualified, lowercase name (e.g. `web.vm.`), sorted.
    pub fn records_of(&self, fqdn: &str) -> Vec<DnsRecord> {
        let Ok(n) = Name::from_ascii(fqdn) else {
            return Vec::new();
        };
        let Some(node) = self.nodes.get(&LowerName::new(&n)) else {
            return Vec::new();
        };
        let mut out: Vec<DnsRecord> = node.vms.iter().map(|e| node.record(self.ttl, e)).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Everything a query or listing can see of this snapshot, one line per name, sorted; for
    /// tests comparing an incrementally maintained zone with one built whole.
    #[cfg(test)]
    pub(crate) fn shape(&self) -> Vec<String> {
        let rdata = |set: &Option<Arc<RecordSet>>| {
            let mut v: Vec<String> = set
                .iter()
                .flat_map(|s| s.records_without_rrsigs())
                .map(|r| format!("{} {}", r.ttl, r.data))
                .collect();
            v.sort();
            v.join(",")
        };
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .map(|(key, node)| {
                let mut vms: Vec<String> = node
                    .vms
                    .iter()
                    .map(|e| format!("{}={}", e.id, e.addr))
                    .collect();
                vms.sort();
                format!(
                    "{key} {} host_vms={} a=[{}] aaaa=[{}] vms=[{}]",
                    node.fqdn,
                    node.host_vms,
                    rdata(&node.a),
                    rdata(&node.aaaa),
                    vms.join(",")
                )
            })
            .collect();
        out.sort();
        out.push(format!("records={}", self.record_count));
        out
    }

    /// The names whose nodes this snapshot does not share with `prev` (added, removed or
    /// rebuilt), sorted; for tests.
    #[cfg(test)]
    fn unshared_with(&self, prev: &Zone) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .filter(|(key, node)| !prev.nodes.get(*key).is_some_and(|p| Arc::ptr_eq(p, node)))
            .map(|(key, _)| key.to_string())
            .chain(
                prev.nodes
                    .keys()
                    .filter(|key| !self.nodes.contains_key(*key))
                    .map(ToString::to_string),
            )
            .collect();
        out.sort();
        out
    }

    /// Answers `query` from the pre-encoded records into `out` (see [`crate::wire`]); `false`
    /// when the query is not the plain A/AAAA case of a name this snapshot holds, for hickory.
    pub fn answer_fast(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        let mut key = [0u8; 256];
        let Some(parsed) = crate::wire::parse(query, &mut key) else {
            return false;
        };
        let Some(answers) = self.by_wire.get(parsed.key) else {
            return false;
        };
        crate::wire::respond(query, &parsed, answers, &self.soa_wire, out)
    }

    /// Answers `name`/`rtype` from this snapshot.
    fn answer(
        &self,
        name: &LowerName,
        rtype: RecordType,
        opts: LookupOptions,
    ) -> Result<AuthLookup, LookupError> {
        if !self.origin.zone_of(name) {
            return Err(LookupError::from(ResponseCode::Refused));
        }
        let one =
            |set: &Arc<RecordSet>| Ok(AuthLookup::from(LookupRecords::new(opts, Arc::clone(set))));
        if *name == self.origin {
            return match rtype {
                RecordType::SOA => one(&self.soa),
                RecordType::NS => one(&self.ns),
                RecordType::ANY => Ok(AuthLookup::from(LookupRecords::many(
                    opts,
                    vec![Arc::clone(&self.soa), Arc::clone(&self.ns)],
                ))),
                _ => Err(LookupError::for_name_exists()),
            };
        }
        let Some(node) = self.nodes.get(name) else {
            return Err(LookupError::from(ResponseCode::NXDomain));
        };
        match rtype {
            RecordType::A => node.a.as_ref().map_or(Err(LookupError::NameExists), one),
            RecordType::AAAA => node.aaaa.as_ref().map_or(Err(LookupError::NameExists), one),
            RecordType::ANY => {
                let sets: Vec<_> = node.a.iter().chain(node.aaaa.iter()).cloned().collect();
                if sets.is_empty() {
                    Err(LookupError::NameExists)
                } else {
                    Ok(AuthLookup::from(LookupRecords::many(opts, sets)))
                }
            }
            _ => Err(LookupError::NameExists),
        }
    }
}

/// The SOA and NS of `vm.`, with SOA serial `serial`.
fn apex(
    settings: &ZoneSettings,
    serial: u32,
) -> Result<(Arc<RecordSet>, Arc<RecordSet>), ZoneError> {
    let origin_name = origin();
    let soa = Record::from_rdata(
        origin_name.clone(),
        settings.negative_ttl,
        RData::SOA(SOA::new(
            settings.ns_name.clone(),
            name(SOA_RNAME)?,
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            settings.negative_ttl,
        )),
    );
    let ns = Record::from_rdata(
        origin_name,
        settings.ttl,
        RData::NS(NS(settings.ns_name.clone())),
    );
    Ok((Arc::new(rrset(soa, serial)), Arc::new(rrset(ns, serial))))
}

/// The SOA with serial `serial`, encoded for the fast path (as [`apex`] makes it).
fn soa_wire(settings: &ZoneSettings, serial: u32) -> Arc<[u8]> {
    crate::wire::encode_soa(
        settings.negative_ttl,
        &settings.ns_name.to_ascii(),
        SOA_RNAME,
        serial,
        [SOA_REFRESH, SOA_RETRY, SOA_EXPIRE],
        settings.negative_ttl,
    )
    .into()
}

fn rrset(record: Record, serial: u32) -> RecordSet {
    let mut set = RecordSet::with_ttl(record.name.clone(), record.record_type(), record.ttl);
    set.insert(record, serial);
    set
}

/// The hickory zone handler for `vm.`, reading the current [`Zone`] snapshot.
pub struct VmZoneHandler {
    origin: LowerName,
    current: Arc<ArcSwap<Zone>>,
}

impl VmZoneHandler {
    /// A handler answering from whatever `current` holds at query time.
    pub fn new(current: Arc<ArcSwap<Zone>>) -> Self {
        Self {
            origin: LowerName::new(&origin()),
            current,
        }
    }
}

#[async_trait::async_trait]
impl ZoneHandler for VmZoneHandler {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Continue(self.current.load().answer(name, rtype, lookup_options))
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (LookupControlFlow<AuthLookup>, Option<TSigResponseContext>) {
        let info = match request.request_info() {
            Ok(info) => info,
            Err(e) => return (LookupControlFlow::Break(Err(e)), None),
        };
        let query = info.query;
        let refused = || {
            (
                LookupControlFlow::Break(Err(LookupError::from(ResponseCode::Refused))),
                None,
            )
        };
        // Only the Internet class is served; zone transfers are not offered.
        if query.query_class() != DNSClass::IN {
            return refused();
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return refused();
        }
        (
            self.lookup(
                query.name(),
                query.query_type(),
                Some(&info),
                lookup_options,
            )
            .await,
            None,
        )
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // The zone is not signed.
        LookupControlFlow::Continue(Ok(AuthLookup::default()))
    }

    async fn zone_transfer(
        &self,
        _request: &Request,
        _lookup_options: LookupOptions,
        _now: u64,
    ) -> Option<(
        Result<ZoneTransfer, LookupError>,
        Option<TSigResponseContext>,
    )> {
        // `dns.records` on the bus lists the zone; AXFR is refused.
        Some((Err(LookupError::from(ResponseCode::Refused)), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ZoneSettings {
        ZoneSettings {
            ttl: 5,
            negative_ttl: 7,
            ns_name: Name::from_ascii("localhost.").unwrap(),
        }
    }

    fn entry(id: char, name: &str, host: &str, addr: &str) -> VmEntry {
        VmEntry {
            id: VmId::new(id.to_string().repeat(32)).unwrap(),
            name: VmName::new(name).unwrap(),
            host: HostId::new(host).unwrap(),
            addr: addr.parse().unwrap(),
        }
    }

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    fn answers(z: &Zone, n: &str, t: RecordType) -> Result<Vec<String>, LookupError> {
        z.answer(&lower(n), t, LookupOptions::default()).map(|l| {
            let mut v: Vec<String> = l.iter().map(|r| r.data.to_string()).collect();
            v.sort();
            v
        })
    }

    #[test]
    fn both_name_forms_answer_with_the_vm_address() {
        let es = [
            entry('a', "web", "lab1", "172.16.0.2"),
            entry('b', "db", "lab2", "fd00::5"),
        ];
        let z = Zone::build(&settings(), 9, &es).unwrap();
        assert_eq!(
            answers(&z, "web.vm.", RecordType::A).unwrap(),
            ["172.16.0.2"]
        );
        assert_eq!(
            answers(&z, "WEB.Lab1.vm.", RecordType::A).unwrap(),
            ["172.16.0.2"]
        );
        assert_eq!(
            answers(&z, "db.lab2.vm.", RecordType::AAAA).unwrap(),
            ["fd00::5"]
        );
        assert_eq!(answers(&z, "web.vm.", RecordType::ANY).unwrap().len(), 1);
        assert_eq!(z.records().len(), 4);
        assert_eq!(z.records_of("web.vm.").len(), 1);
        assert_eq!(z.records_of("web.lab1.vm.")[0].host.as_str(), "lab1");
        assert!(z.records_of("nope.vm.").is_empty());
    }

    #[test]
    fn missing_names_are_nxdomain_and_missing_types_are_nodata() {
        let es = [entry('a', "web", "lab1", "172.16.0.2")];
        let z = Zone::build(&settings(), 1, &es).unwrap();
        assert!(
            answers(&z, "nope.vm.", RecordType::A)
                .unwrap_err()
                .is_nx_domain()
        );
        assert!(
            answers(&z, "x.web.vm.", RecordType::A)
                .unwrap_err()
                .is_nx_domain()
        );
        let nodata = answers(&z, "web.vm.", RecordType::AAAA).unwrap_err();
        assert!(matches!(nodata, LookupError::NameExists), "{nodata}");
        assert!(matches!(
            answers(&z, "web.vm.", RecordType::TXT).unwrap_err(),
            LookupError::NameExists
        ));
        // The host label is an empty non-terminal: it exists, with no data.
        assert!(matches!(
            answers(&z, "lab1.vm.", RecordType::A).unwrap_err(),
            LookupError::NameExists
        ));
        assert!(matches!(
            answers(&z, "example.com.", RecordType::A).unwrap_err(),
            LookupError::ResponseCode(ResponseCode::Refused)
        ));
    }

    #[test]
    fn apex_has_soa_and_ns_with_configured_ttls() {
        let z = Zone::build(&settings(), 42, []).unwrap();
        let soa = z
            .answer(&lower("vm."), RecordType::SOA, LookupOptions::default())
            .unwrap();
        let rec = soa.iter().next().unwrap();
        assert_eq!(rec.ttl, 7);
        let RData::SOA(soa) = &rec.data else {
            panic!("not a SOA: {rec}")
        };
        assert_eq!((soa.serial, soa.minimum), (42, 7));
        assert_eq!(answers(&z, "vm.", RecordType::NS).unwrap(), ["localhost."]);
        assert_eq!(answers(&z, "vm.", RecordType::ANY).unwrap().len(), 2);
        assert!(matches!(
            answers(&z, "vm.", RecordType::A).unwrap_err(),
            LookupError::NameExists
        ));
    }

    #[test]
    fn two_vms_with_one_name_on_two_hosts_share_the_short_name() {
        let es = [
            entry('a', "web", "lab1", "172.16.0.2"),
            entry('b', "web", "lab2", "172.16.1.2"),
        ];
        let z = Zone::build(&settings(), 1, &es).unwrap();
        assert_eq!(
            answers(&z, "web.vm.", RecordType::A).unwrap(),
            ["172.16.0.2", "172.16.1.2"]
        );
        assert_eq!(
            answers(&z, "web.lab2.vm.", RecordType::A).unwrap(),
            ["172.16.1.2"]
        );
    }

    /// One event's worth of change to a 10,000-VM zone rebuilds only the names it touches: the
    /// new snapshot shares every other node (the same allocation) with the previous one. A
    /// whole-zone rebuild would share none, and this fails.
    #[test]
    fn one_change_rebuilds_only_the_names_it_touches() {
        let vm = |i: u32, host: &str| VmEntry {
            id: VmId::new(format!("{i:032x}")).unwrap(),
            name: VmName::new(format!("vm-{i}")).unwrap(),
            host: HostId::new(host).unwrap(),
            addr: IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
        };
        let fleet: Vec<VmEntry> = (0..10_000).map(|i| vm(i, "lab1")).collect();
        let s = settings();
        let z0 = Zone::build(&s, 1, &fleet).unwrap();
        // 10,000 × (`vm-i.vm.`, `vm-i.lab1.vm.`) + `lab1.vm.`
        assert_eq!(z0.nodes.size(), 20_001);
        assert_eq!(z0.record_count(), 20_000);

        let started = vm(10_000, "lab2");
        let z1 = z0.apply(&s, 2, &[Change::Add(started)]).unwrap();
        let unshared = z1.unshared_with(&z0);
        assert_eq!(
            unshared.len(),
            3,
            "names rebuilt for one VM, first ones: {:?}",
            &unshared[..unshared.len().min(5)]
        );
        assert_eq!(unshared, ["lab2.vm.", "vm-10000.lab2.vm.", "vm-10000.vm."]);
        assert_eq!(
            answers(&z1, "vm-10000.vm.", RecordType::A).unwrap(),
            ["10.0.39.16"]
        );
        assert_eq!((z1.serial(), z1.record_count()), (2, 20_002));

        // A stop removes the VM's two names and rebuilds its host's label.
        let z2 = z1
            .apply(&s, 3, &[Change::Remove(fleet[7].clone())])
            .unwrap();
        assert_eq!(
            z2.unshared_with(&z1),
            ["lab1.vm.", "vm-7.lab1.vm.", "vm-7.vm."]
        );
        assert!(
            answers(&z2, "vm-7.vm.", RecordType::A)
                .unwrap_err()
                .is_nx_domain()
        );
        // The older snapshot is untouched.
        assert_eq!(
            answers(&z1, "vm-7.vm.", RecordType::A).unwrap(),
            ["10.0.0.7"]
        );
        assert_eq!(z2.record_count(), 20_000);
    }

    #[test]
    fn the_last_vm_of_a_host_takes_the_host_label_with_it() {
        let web1 = entry('a', "web", "lab1", "172.16.0.2");
        let web2 = entry('b', "web", "lab2", "fd00::2");
        let z = Zone::build(&settings(), 1, [&web1, &web2]).unwrap();
        let z = z.apply(&settings(), 2, &[Change::Remove(web2)]).unwrap();
        assert!(
            answers(&z, "lab2.vm.", RecordType::A)
                .unwrap_err()
                .is_nx_domain()
        );
        assert!(
            answers(&z, "web.lab2.vm.", RecordType::AAAA)
                .unwrap_err()
                .is_nx_domain()
        );
        // The short name keeps lab1's VM and loses only the AAAA.
        assert_eq!(
            answers(&z, "web.vm.", RecordType::A).unwrap(),
            ["172.16.0.2"]
        );
        assert!(matches!(
            answers(&z, "web.vm.", RecordType::AAAA).unwrap_err(),
            LookupError::NameExists
        ));
        assert_eq!(
            z.shape(),
            Zone::build(&settings(), 2, [&web1]).unwrap().shape()
        );
    }
}
