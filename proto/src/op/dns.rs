//! dnsd's operations.

use crate::dns::{
    DnsStatus, DnsStatusRequest, LookupReply, LookupRequest, RecordsReply, RecordsRequest,
};
use crate::op::Lab;
use crate::service::DNSD;

super::operations! {
    service: DNSD;
    module: "dns";
    /// Every record served.
    Records { at: Lab, subject: "dns.records", endpoint: "records", delivery: Queue,
        request: RecordsRequest, reply: RecordsReply,
        errors: [InvalidArgument, Internal] }
    /// Look one name up.
    Lookup { at: Lab, subject: "dns.lookup", endpoint: "lookup", delivery: Queue,
        request: LookupRequest, reply: LookupReply,
        errors: [InvalidArgument, Internal] }
    /// Listener addresses and counts.
    Status { at: Lab, subject: "dns.status", endpoint: "status", delivery: Queue,
        request: DnsStatusRequest, reply: DnsStatus,
        errors: [InvalidArgument, Internal] }
}
