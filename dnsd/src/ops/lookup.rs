//! `dns.lookup`: the records of one name, as a DNS query would answer them.
//!
//! Accepts `web`, `web.vm`, `web.vm.`, `web.lab1`, `web.lab1.vm` (any case); each label must be
//! a valid VM name or host id, so nonsense is an `invalid_argument` rather than an empty answer.

use banger_proto::dns::{LookupReply, LookupRequest, ZONE};
use banger_proto::{ApiError, HostId, VmName};

use crate::state::State;

/// The fully qualified, lowercase name `raw` refers to.
pub fn normalize(raw: &str) -> Result<String, ApiError> {
    let lower = raw.trim().to_ascii_lowercase();
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    let zone = ZONE.trim_end_matches('.');
    let bare = match bare.strip_suffix(zone) {
        Some("") => "",
        Some(rest) => rest.strip_suffix('.').unwrap_or(bare),
        None => bare,
    };
    let labels: Vec<&str> = bare.split('.').collect();
    let bad = |why: String| ApiError::invalid(format!("cannot look up {raw:?}: {why}"));
    match labels.as_slice() {
        [name] => {
            VmName::new(*name).map_err(|e| bad(e.to_string()))?;
        }
        [name, host] => {
            VmName::new(*name).map_err(|e| bad(e.to_string()))?;
            HostId::new(*host).map_err(|e| bad(e.to_string()))?;
        }
        _ => {
            return Err(bad(format!(
                "expected <name>.{zone} or <name>.<host>.{zone}"
            )));
        }
    }
    Ok(format!("{bare}.{ZONE}"))
}

/// Looks one name up in the served zone.
pub fn lookup(state: &State, req: LookupRequest) -> Result<LookupReply, ApiError> {
    let name = normalize(&req.name)?;
    let zone = state.store.snapshot();
    let records = zone.records_of(&name);
    Ok(LookupReply { name, records })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use banger_proto::event::EventKind;
    use banger_proto::vm::{VmInfo, VmNetwork, VmState};
    use banger_proto::{CpuCount, ErrorCode, ImageName, MemMib, VmId};
    use hickory_server::proto::rr::Name;

    use super::*;
    use crate::registry::ZoneStore;
    use crate::zone::ZoneSettings;

    pub(crate) fn state_with_web() -> Arc<State> {
        let store = ZoneStore::new(
            ZoneSettings {
                ttl: 5,
                negative_ttl: 5,
                ns_name: Name::from_ascii("localhost.").unwrap(),
            },
            1,
        )
        .unwrap();
        let vm = VmInfo {
            id: VmId::new("a".repeat(32)).unwrap(),
            name: VmName::new("web").unwrap(),
            host: HostId::new("h1").unwrap(),
            state: VmState::Running,
            image: ImageName::new("debian").unwrap(),
            cpus: CpuCount::new(1).unwrap(),
            memory_mib: MemMib::new(512).unwrap(),
            disk_mib: MemMib::new(1024).unwrap(),
            network: Some(VmNetwork {
                ip: "172.16.0.2".into(),
                mac: "06:00:ac:10:00:02".into(),
                tap: "tap0".into(),
            }),
            port_forwards: vec![],
            reason: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            started_at_ms: Some(1),
            touched_at_ms: None,
        };
        store.apply_event(EventKind::Started, 1, &vm).unwrap();
        State::new(store, vec!["127.0.0.1:42069".parse().unwrap()])
    }

    #[test]
    fn every_spelling_of_a_name_finds_its_records() {
        let s = state_with_web();
        for (raw, fqdn) in [
            ("web", "web.vm."),
            ("WEB.vm", "web.vm."),
            ("web.vm.", "web.vm."),
            ("web.h1", "web.h1.vm."),
            ("web.h1.vm.", "web.h1.vm."),
        ] {
            let r = lookup(&s, LookupRequest { name: raw.into() }).unwrap();
            assert_eq!(r.name, fqdn);
            assert_eq!(r.records.len(), 1, "{raw}");
            assert_eq!(r.records[0].addr, "172.16.0.2");
        }
        let none = lookup(&s, LookupRequest { name: "db".into() }).unwrap();
        assert!(none.records.is_empty());
        // A VM named "vm" is still a name, not the zone.
        assert_eq!(normalize("vm.vm").unwrap(), "vm.vm.");
    }

    #[test]
    fn nonsense_names_are_invalid_arguments() {
        let s = state_with_web();
        for bad in [
            "", ".", "vm", "a.b.c", "web_1", "-web", "web..vm", "a.b.c.vm",
        ] {
            let e = lookup(&s, LookupRequest { name: bad.into() }).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad:?}: {e}");
        }
    }
}
