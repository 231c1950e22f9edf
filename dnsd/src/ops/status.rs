//! `dns.status`: listeners, record count and last rebuild, for `banger status`.

use banger_proto::ApiError;
use banger_proto::dns::{DnsStatus, DnsStatusRequest, ZONE};

use crate::state::State;

/// Reports what dnsd serves and where.
pub fn status(state: &State, _req: DnsStatusRequest) -> Result<DnsStatus, ApiError> {
    let zone = state.store.snapshot();
    Ok(DnsStatus {
        listeners: state.listeners.iter().map(ToString::to_string).collect(),
        zone: ZONE.to_owned(),
        records: u32::try_from(zone.record_count()).unwrap_or(u32::MAX),
        last_rebuild_ms: state.last_rebuild_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lookup::tests::state_with_web;

    #[test]
    fn status_counts_records_and_shows_listeners() {
        let s = state_with_web();
        let st = status(&s, DnsStatusRequest {}).unwrap();
        assert_eq!(st.records, 2);
        assert_eq!(st.listeners, ["127.0.0.1:42069"]);
        assert_eq!(st.zone, "vm.");
        assert_eq!(st.last_rebuild_ms, None);
        s.rebuilt_at(7);
        assert_eq!(
            status(&s, DnsStatusRequest {}).unwrap().last_rebuild_ms,
            Some(7)
        );
    }
}
