//! One file per operation, each the same shape: validate, take the VM's lock, act, reply (the
//! events are published by the state changes themselves).
//!
//! | op | request | reply |
//! | --- | --- | --- |
//! | create | `CreateVmRequest` | `VmOpReply` |
//! | start, stop, restart, kill, delete, touch | `VmRefRequest` | `VmOpReply` |
//! | set | `SetVmRequest` | `VmOpReply` |
//! | get | `VmRefRequest` | `VmInfo` |
//! | list | `ListVmsRequest` | `ListVmsReply` |
//! | logs | `LogsRequest` | `LogsReply` |
//! | stats | `VmRefRequest` | `VmStats` |
//! | health | `VmRefRequest` | `agent::Health` |
//! | exec | `VmExecRequest` | `agent::ExecResult` |

pub mod create;
pub mod delete;
pub mod exec;
pub mod get;
pub mod health;
pub mod kill;
pub mod logs;
pub mod restart;
pub mod set;
pub mod start;
pub mod stats;
pub mod stop;
pub mod touch;

use banger_proto::vm::VmState;
use banger_proto::{ApiError, ErrorCode};

use crate::store::VmRecord;

/// A `conflict` naming the VM and its state.
pub(crate) fn wrong_state(rec: &VmRecord, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("vm {} is {} and cannot {what}", rec.info.name, rec.state()),
    )
}

/// A `conflict` for a VM that must be running.
pub(crate) fn require_running(rec: &VmRecord, what: &str) -> Result<(), ApiError> {
    if rec.state() == VmState::Running {
        Ok(())
    } else {
        // A failed VM says why: that is what the user needs to fix before starting it again.
        let why = match (&rec.info.reason, rec.state()) {
            (Some(reason), VmState::Failed) => format!("; why it failed: {reason}"),
            _ => String::new(),
        };
        Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "vm {} is {}; {what} needs it running (banger vm start {}){why}",
                rec.info.name,
                rec.state(),
                rec.info.name
            ),
        ))
    }
}
