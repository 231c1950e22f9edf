//! netd's operations, one netd per host.

use crate::names::HostId;
use crate::net::{
    AttachRequest, DetachReply, DetachRequest, Lease, NetListReply, NetListRequest, NetStatus,
    NetStatusRequest,
};
use crate::service::NETD;

super::operations! {
    service: NETD;
    module: "net";
    /// Allocate (or return) a VM's lease and create its tap.
    Attach { at: HostId, subject: "net.attach", endpoint: "attach", delivery: Queue,
        request: AttachRequest, reply: Lease,
        errors: [InvalidArgument, Conflict, Exhausted, Internal] }
    /// Remove the tap (and release the lease when asked).
    Detach { at: HostId, subject: "net.detach", endpoint: "detach", delivery: Queue,
        request: DetachRequest, reply: DetachReply,
        errors: [NotFound, InvalidArgument, Internal] }
    /// Leases with tap state.
    List { at: HostId, subject: "net.list", endpoint: "list", delivery: Queue,
        request: NetListRequest, reply: NetListReply,
        errors: [InvalidArgument, Internal] }
    /// Bridge, subnet and rules.
    Status { at: HostId, subject: "net.status", endpoint: "status", delivery: Queue,
        request: NetStatusRequest, reply: NetStatus,
        errors: [InvalidArgument, Internal] }
}
