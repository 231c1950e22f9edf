//! vm-controller's operations.

use crate::agent::ExecResult;
use crate::names::HostId;
use crate::op::Lab;
use crate::service::VM_CONTROLLER;
use crate::vm::{
    CreateVmRequest, ListVmsReply, ListVmsRequest, LogsReply, LogsRequest, SetVmRequest,
    VmExecRequest, VmInfo, VmOpReply, VmRefRequest, VmStats,
};

super::operations! {
    service: VM_CONTROLLER;
    module: "vm";
    /// Create a VM on whichever controller NATS picks (placement).
    Place { at: Lab, subject: "vm.create", endpoint: "place", delivery: Queue,
        request: CreateVmRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Exhausted, Unavailable, Timeout, Internal] }
    /// Every controller's VMs: each controller answers with its own.
    List { at: Lab, subject: "vm.list", endpoint: "list", delivery: Broadcast,
        request: ListVmsRequest, reply: ListVmsReply,
        errors: [InvalidArgument, Internal] }
    /// Create a VM on this host (targeted placement).
    Create { at: HostId, subject: "vm.create", endpoint: "create", delivery: Queue,
        request: CreateVmRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Exhausted, Unavailable, Timeout, Internal] }
    /// Start a stopped VM.
    Start { at: HostId, subject: "vm.start", endpoint: "start", delivery: Queue,
        request: VmRefRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Exhausted, Unavailable, Timeout, Internal] }
    /// Stop gracefully, then force.
    Stop { at: HostId, subject: "vm.stop", endpoint: "stop", delivery: Queue,
        request: VmRefRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Internal] }
    /// Stop then start.
    Restart { at: HostId, subject: "vm.restart", endpoint: "restart", delivery: Queue,
        request: VmRefRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Exhausted, Unavailable, Timeout, Internal] }
    /// Stop forcefully at once.
    Kill { at: HostId, subject: "vm.kill", endpoint: "kill", delivery: Queue,
        request: VmRefRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Internal] }
    /// Stop if needed and remove everything.
    Delete { at: HostId, subject: "vm.delete", endpoint: "delete", delivery: Queue,
        request: VmRefRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Unavailable, Timeout, Internal] }
    /// Change settings applied on next start.
    Set { at: HostId, subject: "vm.set", endpoint: "set", delivery: Queue,
        request: SetVmRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Internal] }
    /// Show one VM.
    Get { at: HostId, subject: "vm.get", endpoint: "get", delivery: Queue,
        request: VmRefRequest, reply: VmInfo,
        errors: [NotFound, InvalidArgument, Internal] }
    /// Ask the guest agent for health.
    Health { at: HostId, subject: "vm.health", endpoint: "health", delivery: Queue,
        request: VmRefRequest, reply: crate::agent::Health,
        errors: [NotFound, InvalidArgument, Conflict, PermissionDenied, Unavailable, Timeout, Internal] }
    /// Read logs.
    Logs { at: HostId, subject: "vm.logs", endpoint: "logs", delivery: Queue,
        request: LogsRequest, reply: LogsReply,
        errors: [NotFound, InvalidArgument, Internal] }
    /// Resource statistics.
    Stats { at: HostId, subject: "vm.stats", endpoint: "stats", delivery: Queue,
        request: VmRefRequest, reply: VmStats,
        errors: [NotFound, InvalidArgument, Internal] }
    /// Run a command in the guest.
    Exec { at: HostId, subject: "vm.exec", endpoint: "exec", delivery: Queue,
        request: VmExecRequest, reply: ExecResult,
        errors: [NotFound, InvalidArgument, Conflict, PermissionDenied, Unavailable, Timeout, Internal] }
    /// Mark a VM as used now.
    Touch { at: HostId, subject: "vm.touch", endpoint: "touch", delivery: Queue,
        request: VmRefRequest, reply: VmOpReply,
        errors: [NotFound, InvalidArgument, Conflict, Internal] }
}
