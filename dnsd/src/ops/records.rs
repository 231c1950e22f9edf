//! `dns.records`: every record served right now.

use banger_proto::ApiError;
use banger_proto::dns::{RecordsReply, RecordsRequest};

use crate::state::State;

/// Lists the served records, sorted by name, type and address.
pub fn records(state: &State, _req: RecordsRequest) -> Result<RecordsReply, ApiError> {
    Ok(RecordsReply {
        records: state.store.snapshot().records(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lookup::tests::state_with_web;

    #[test]
    fn records_lists_both_name_forms() {
        let s = state_with_web();
        let names: Vec<String> = records(&s, RecordsRequest {})
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["web.h1.vm.", "web.vm."]);
    }
}
