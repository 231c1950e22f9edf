//! The controller's errors: one enum per concern, shared by the operations, and the one place
//! an error becomes the wire's [`ApiError`].
//!
//! | error | what failed | codes |
//! | --- | --- | --- |
//! | [`LookupError`] | reading a VM's record | `not_found`, `internal` |
//! | [`RecordError`] | writing it (state machine, name index, a refused change) | `not_found`, `conflict`, `invalid_argument`, `internal` |
//! | [`StateError`] | the VM's state does not allow the operation | `conflict` |
//! | [`KillError`] | the forced stop of the hypervisor | `internal` |
//! | [`HaltError`] | a stop (records, state, kill) | the above |
//! | [`BootError`] | a step of a boot (stord, netd, the hypervisor) | the step's cause's |
//! | [`DepError`](crate::deps::DepError) | a request to a peer (stord, netd, the agent) | the peer's |
//!
//! Each operation's handler returns its own enum (`CreateError`, `StartError`, ... in
//! [`crate::ops`]) made of these, and names it in [`Handled`]. Every error says which step
//! failed and keeps its cause as `#[source]`; [`Coded::to_api`] turns it into the reply: the
//! code from the variant ([`Coded::code`]), the message from the whole chain (`step: cause:
//! cause`). A test checks that every variant of each operation's error carries a code the
//! operation declares in [`Operation::ERRORS`].

use std::path::PathBuf;

use banger_proto::op::{Operation, vm};
use banger_proto::vm::VmState;
use banger_proto::{ApiError, ErrorCode, HostId, VmId, VmName};

use crate::store::StoreError;
use crate::vmm::VmmError;

/// An error with a stable wire code.
pub trait Coded: std::error::Error + Send + 'static {
    /// The code a reply carries for this error.
    fn code(&self) -> ErrorCode;

    /// The reply error: [`Self::code`] and the whole cause chain as the message. The only
    /// conversion of a controller error to the wire.
    fn to_api(&self) -> ApiError
    where
        Self: Sized,
    {
        ApiError::new(self.code(), banger_bus::runtime::chain(self))
    }
}

/// The error type of each operation's handler.
pub trait Handled: Operation {
    /// What the handler returns on failure.
    type Error: Coded;
}

impl Handled for vm::Place {
    type Error = crate::ops::create::CreateError;
}
impl Handled for vm::Create {
    type Error = crate::ops::create::CreateError;
}
impl Handled for vm::List {
    type Error = crate::ops::get::ListError;
}
impl Handled for vm::Start {
    type Error = crate::ops::start::StartError;
}
impl Handled for vm::Restart {
    type Error = crate::ops::start::StartError;
}
impl Handled for vm::Stop {
    type Error = HaltError;
}
impl Handled for vm::Kill {
    type Error = HaltError;
}
impl Handled for vm::Delete {
    type Error = crate::ops::delete::DeleteError;
}
impl Handled for vm::Set {
    type Error = crate::ops::set::SetError;
}
impl Handled for vm::Get {
    type Error = LookupError;
}
impl Handled for vm::Health {
    type Error = crate::ops::health::HealthError;
}
impl Handled for vm::Logs {
    type Error = crate::ops::logs::LogsError;
}
impl Handled for vm::Stats {
    type Error = LookupError;
}
impl Handled for vm::Exec {
    type Error = crate::ops::exec::ExecError;
}
impl Handled for vm::Touch {
    type Error = RecordError;
}

/// Reading a VM's record failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No VM with that id on this host.
    #[error("no vm with id {id} on host {host}")]
    NotFound {
        /// The id asked for.
        id: VmId,
        /// This host.
        host: HostId,
    },
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
}

impl LookupError {
    /// A read's failure, naming `host` when the VM is not there.
    pub fn new(e: StoreError, host: &HostId) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NotFound {
                id,
                host: host.clone(),
            },
            e => Self::Store(e),
        }
    }
}

impl Coded for LookupError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Store(_) => ErrorCode::Internal,
        }
    }
}

/// Writing a VM's record failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No VM with that id on this host.
    #[error("no vm with id {id} on host {host}")]
    NotFound {
        /// The id.
        id: VmId,
        /// This host.
        host: HostId,
    },
    /// The name is taken on this host.
    #[error("a vm named {name} already exists on host {host}")]
    NameTaken {
        /// The name.
        name: VmName,
        /// This host.
        host: HostId,
    },
    /// The state machine forbids the move.
    #[error(transparent)]
    Transition(StoreError),
    /// The change was refused (the message says why).
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
}

impl RecordError {
    /// A write's failure, naming `host` where the message needs it.
    pub fn new(e: StoreError, host: &HostId) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NotFound {
                id,
                host: host.clone(),
            },
            StoreError::NameTaken(name) => Self::NameTaken {
                name,
                host: host.clone(),
            },
            e @ StoreError::BadTransition { .. } => Self::Transition(e),
            StoreError::Refused(why) => Self::Refused(why),
            e => Self::Store(e),
        }
    }
}

impl Coded for RecordError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::NameTaken { .. } | Self::Transition(_) => ErrorCode::Conflict,
            Self::Refused(_) => ErrorCode::InvalidArgument,
            Self::Store(_) => ErrorCode::Internal,
        }
    }
}

/// The VM's state does not allow the operation.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The operation is not possible in this state.
    #[error("vm {name} is {state} and cannot {what}")]
    Wrong {
        /// The VM.
        name: VmName,
        /// Its state.
        state: VmState,
        /// What was asked (`be started`).
        what: &'static str,
    },
    /// The operation needs a running VM.
    #[error(
        "vm {name} is {state}; {what} needs it running (banger vm start {name}){}",
        why_failed.as_ref().map(|r| format!("; why it failed: {r}")).unwrap_or_default()
    )]
    NotRunning {
        /// The VM.
        name: VmName,
        /// Its state.
        state: VmState,
        /// What was asked (`exec`).
        what: &'static str,
        /// Why a failed VM failed: what the user must fix before starting it again.
        why_failed: Option<String>,
    },
    /// The guest or its hypervisor died while the operation waited on it.
    #[error("vm {name} is {state}: {reason}")]
    Ended {
        /// The VM.
        name: VmName,
        /// The state it ended in.
        state: VmState,
        /// Why.
        reason: String,
    },
}

impl Coded for StateError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Wrong { .. } | Self::NotRunning { .. } | Self::Ended { .. } => {
                ErrorCode::Conflict
            }
        }
    }
}

/// The forced stop failed: a hypervisor process may still run.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// SIGKILL could not be sent.
    #[error("killing the hypervisor")]
    Signal(#[source] VmmError),
    /// The process did not exit after SIGKILL.
    #[error("the hypervisor process {pid} survived SIGKILL for {waited_ms} ms")]
    Survived {
        /// The process.
        pid: u32,
        /// How long it was given.
        waited_ms: u64,
    },
    /// Another process still holds the API socket after every round.
    #[error("process {pid} still holds {} after {rounds} kills", socket.display())]
    StillHeld {
        /// The process.
        pid: u32,
        /// The API socket.
        socket: PathBuf,
        /// How many rounds were tried.
        rounds: usize,
    },
}

impl Coded for KillError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Signal(_) | Self::Survived { .. } | Self::StillHeld { .. } => ErrorCode::Internal,
        }
    }
}

/// A stop (`stop`, `kill`, the stop inside `restart` and `delete`, reconcile's) failed.
#[derive(Debug, thiserror::Error)]
pub enum HaltError {
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Its state does not allow a stop.
    #[error(transparent)]
    State(#[from] StateError),
    /// The hypervisor could not be killed.
    #[error(transparent)]
    Kill(#[from] KillError),
    /// Its record could not be updated.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl Coded for HaltError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Lookup(e) => e.code(),
            Self::State(e) => e.code(),
            Self::Kill(e) => e.code(),
            Self::Record(e) => e.code(),
        }
    }
}

/// A boot (`create`, `start`, `restart`) failed at a step; what it did was undone.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// stord could not create (or return) the volumes.
    #[error("creating the volumes")]
    Volumes(#[source] crate::deps::DepError),
    /// stord could not grow the work disk (`vm set --disk`).
    #[error("growing the work disk")]
    GrowDisk(#[source] crate::deps::DepError),
    /// netd could not attach the network.
    #[error("attaching the network")]
    Network(#[source] crate::deps::DepError),
    /// The hypervisor could not be spawned.
    #[error("spawning the hypervisor")]
    Spawn(#[source] VmmError),
    /// The hypervisor could not be configured or started.
    #[error("configuring the hypervisor")]
    Configure(#[source] VmmError),
    /// The record could not be updated.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl Coded for BootError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Volumes(e) | Self::GrowDisk(e) | Self::Network(e) => e.code(),
            Self::Spawn(_) | Self::Configure(_) => ErrorCode::Internal,
            Self::Record(e) => e.code(),
        }
    }
}

/// One value of every variant of an error type, for the code tests.
#[cfg(test)]
pub(crate) trait Samples: Sized {
    /// One value per variant (per code a variant can carry, for a variant that passes a
    /// peer's code on).
    fn samples() -> Vec<Self>;
}

#[cfg(test)]
pub(crate) mod samples;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use banger_proto::op::{Operation, vm};

    use super::samples::codes;
    use super::*;

    /// Checks that every error `O`'s handler can return has a code `O` declares; returns the
    /// endpoint checked.
    fn check<O: Handled>() -> &'static str
    where
        O::Error: Samples,
    {
        let samples = codes::<O::Error>();
        assert!(!samples.is_empty(), "{} has no error samples", O::ENDPOINT);
        for (code, message) in samples {
            assert!(
                O::ERRORS.contains(&code),
                "{}: the error \"{message}\" has code {code}, which the operation does not \
                 declare in its ERRORS {:?}",
                std::any::type_name::<O>(),
                O::ERRORS
            );
        }
        O::ENDPOINT
    }

    #[test]
    fn every_error_of_every_operation_has_a_declared_code() {
        let checked: HashSet<&str> = [
            check::<vm::Place>(),
            check::<vm::List>(),
            check::<vm::Create>(),
            check::<vm::Start>(),
            check::<vm::Stop>(),
            check::<vm::Restart>(),
            check::<vm::Kill>(),
            check::<vm::Delete>(),
            check::<vm::Set>(),
            check::<vm::Get>(),
            check::<vm::Health>(),
            check::<vm::Logs>(),
            check::<vm::Stats>(),
            check::<vm::Exec>(),
            check::<vm::Touch>(),
        ]
        .into_iter()
        .collect();
        let all: HashSet<&str> = vm::ALL.iter().map(|o| o.endpoint).collect();
        assert_eq!(checked, all, "an operation of vm-controller is not checked");
    }

    #[test]
    fn a_variant_with_an_undeclared_code_is_caught() {
        // The check above must be able to fail: `vm.get` does not declare `conflict`.
        let conflict = RecordError::new(StoreError::NameTaken(samples::name()), &samples::host());
        assert!(!vm::Get::ERRORS.contains(&conflict.code()));
    }

    #[test]
    fn the_reply_carries_the_whole_chain_once() {
        let e = BootError::Spawn(samples::vmm_error());
        let api = e.to_api();
        assert_eq!(api.code, ErrorCode::Internal);
        assert_eq!(
            api.message,
            "spawning the hypervisor: the hypervisor's api socket /run/api.sock did not answer \
             within 1 ms"
        );
        let e = BootError::Volumes(crate::deps::DepError::new(
            "stord",
            "volume.create",
            ErrorCode::Exhausted,
            "no space left for the work disk",
        ));
        let api = e.to_api();
        assert_eq!(api.code, ErrorCode::Exhausted);
        assert_eq!(
            api.message,
            "creating the volumes: stord volume.create: no space left for the work disk"
        );
    }
}
