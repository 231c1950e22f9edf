//! One file per operation, each the same shape: validate, take the VM's lock, act, reply (the
//! events are published by the state changes themselves). Each handler returns its own error
//! type (named for the operation in [`crate::error::Handled`]), built from the shared ones of
//! [`crate::error`]; the endpoint turns it into the reply.
//!
//! | op | request | reply | error |
//! | --- | --- | --- | --- |
//! | create | `CreateVmRequest` | `VmOpReply` | [`create::CreateError`] |
//! | start, restart | `VmRefRequest` | `VmOpReply` | [`start::StartError`] |
//! | stop, kill | `VmRefRequest` | `VmOpReply` | [`HaltError`](crate::error::HaltError) |
//! | delete | `VmRefRequest` | `VmOpReply` | [`delete::DeleteError`] |
//! | touch | `VmRefRequest` | `VmOpReply` | [`RecordError`](crate::error::RecordError) |
//! | set | `SetVmRequest` | `VmOpReply` | [`set::SetError`] |
//! | get | `VmRefRequest` | `VmInfo` | [`LookupError`](crate::error::LookupError) |
//! | list | `ListVmsRequest` | `ListVmsReply` | [`get::ListError`] |
//! | logs | `LogsRequest` | `LogsReply` | [`logs::LogsError`] |
//! | stats | `VmRefRequest` | `VmStats` | [`LookupError`](crate::error::LookupError) |
//! | health | `VmRefRequest` | `agent::Health` | [`health::HealthError`] |
//! | exec | `VmExecRequest` | `agent::ExecResult` | [`exec::ExecError`] |

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

use crate::error::StateError;
use crate::store::VmRecord;

/// A `conflict` naming the VM and its state.
pub(crate) fn wrong_state(rec: &VmRecord, what: &'static str) -> StateError {
    StateError::Wrong {
        name: rec.info.name.clone(),
        state: rec.state(),
        what,
    }
}

/// A `conflict` for a VM that must be running.
pub(crate) fn require_running(rec: &VmRecord, what: &'static str) -> Result<(), StateError> {
    if rec.state() == VmState::Running {
        Ok(())
    } else {
        // A failed VM says why: that is what the user needs to fix before starting it again.
        let why_failed = match rec.state() {
            VmState::Failed => rec.info.reason.clone(),
            _ => None,
        };
        Err(StateError::NotRunning {
            name: rec.info.name.clone(),
            state: rec.state(),
            what,
            why_failed,
        })
    }
}
