//! The `vm.` zone: an immutable snapshot of what is served, and the hickory [`ZoneHandler`] that
//! answers from it.
//!
//! A [`Zone`] is built whole from the registry's entries and never changed afterwards; the
//! handler reads the current one through an [`ArcSwap`], so a query never waits for an update
//! and an update never waits for a query: the updater builds the next snapshot on the side and
//! swaps one pointer.
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

/// What one name holds. Both `None`: an empty non-terminal (`<host>.vm.`).
#[derive(Debug, Default)]
struct Node {
    a: Option<Arc<RecordSet>>,
    aaaa: Option<Arc<RecordSet>>,
}

/// An immutable snapshot of the zone.
#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    serial: u32,
    soa: Arc<RecordSet>,
    ns: Arc<RecordSet>,
    nodes: HashMap<LowerName, Node>,
    /// Every A/AAAA record, sorted by (name, type, address): what `dns.records` returns.
    records: Vec<DnsRecord>,
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

impl Zone {
    /// Builds a snapshot serving `entries`, with SOA serial `serial`.
    pub fn build<'a>(
        settings: &ZoneSettings,
        serial: u32,
        entries: impl IntoIterator<Item = &'a VmEntry>,
    ) -> Result<Self, ZoneError> {
        let origin_name = origin();
        let origin = LowerName::new(&origin_name);
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
            origin_name.clone(),
            settings.ttl,
            RData::NS(NS(settings.ns_name.clone())),
        );

        // Collect records per (name, type) first, then freeze each into a RecordSet.
        let mut sets: HashMap<(LowerName, RecordType), (Name, Vec<Record>)> = HashMap::new();
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let mut records = Vec::new();
        for e in entries {
            let (rtype, rdata) = match e.addr {
                IpAddr::V4(v4) => (RecordType::A, RData::A(A(v4))),
                IpAddr::V6(v6) => (RecordType::AAAA, RData::AAAA(AAAA(v6))),
            };
            let host_node = name(&format!("{}.{ZONE}", e.host))?;
            nodes.entry(LowerName::new(&host_node)).or_default();
            for fqdn in [
                format!("{}.{ZONE}", e.name),
                format!("{}.{}.{ZONE}", e.name, e.host),
            ] {
                let n = name(&fqdn)?;
                let key = (LowerName::new(&n), rtype);
                sets.entry(key)
                    .or_insert_with(|| (n.clone(), Vec::new()))
                    .1
                    .push(Record::from_rdata(n, settings.ttl, rdata.clone()));
                records.push(DnsRecord {
                    name: fqdn,
                    rtype: rtype.to_string(),
                    addr: e.addr.to_string(),
                    ttl: settings.ttl,
                    vm_id: e.id.clone(),
                    host: e.host.clone(),
                });
            }
        }
        for ((lower, rtype), (n, recs)) in sets {
            let mut set = RecordSet::with_ttl(n, rtype, settings.ttl);
            for r in recs {
                set.insert(r, serial);
            }
            let node = nodes.entry(lower).or_default();
            match rtype {
                RecordType::AAAA => node.aaaa = Some(Arc::new(set)),
                _ => node.a = Some(Arc::new(set)),
            }
        }
        records.sort();
        records.dedup();
        Ok(Self {
            origin,
            serial,
            soa: Arc::new(rrset(soa, serial)),
            ns: Arc::new(rrset(ns, serial)),
            nodes,
            records,
        })
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Every A/AAAA record served, sorted.
    pub fn records(&self) -> &[DnsRecord] {
        &self.records
    }

    /// The records of one fully qualified, lowercase name (e.g. `web.vm.`).
    pub fn records_of(&self, fqdn: &str) -> &[DnsRecord] {
        let start = self.records.partition_point(|r| r.name.as_str() < fqdn);
        let end = self.records.partition_point(|r| r.name.as_str() <= fqdn);
        &self.records[start..end]
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
}
