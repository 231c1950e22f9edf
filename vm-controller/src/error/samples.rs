//! One value of every variant of the controller's errors, for the test that checks each
//! operation's codes (`super::tests`): [`Samples`] for the shared errors, the values they are
//! built from, and every way a request to a peer can fail.

use banger_proto::vm::VmState;
use banger_proto::{ErrorCode, HostId, VmId, VmName};

use super::{
    BootError, HaltError, KillError, LookupError, Operation, RecordError, Samples, StateError,
    StoreError, VmmError,
};
use crate::error::Coded;

pub(crate) fn host() -> HostId {
    HostId::new("h1").unwrap()
}

pub(crate) fn id() -> VmId {
    VmId::new("0123456789abcdef0123456789abcdef").unwrap()
}

pub(crate) fn name() -> VmName {
    VmName::new("web").unwrap()
}

pub(crate) fn store_error() -> StoreError {
    StoreError::Decode {
        id: "x".into(),
        column: "state",
        value: "?".into(),
    }
}

pub(crate) fn vmm_error() -> VmmError {
    VmmError::ApiSocket {
        path: "/run/api.sock".into(),
        waited_ms: 1,
    }
}

pub(crate) fn io_error() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::PermissionDenied)
}

/// A task that was cancelled.
pub(crate) fn join_error() -> tokio::task::JoinError {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        task.await.unwrap_err()
    })
}

/// Every way a request to `O` can fail: each code `O` declares, and each transport failure.
pub(crate) fn dep_errors<O: Operation>() -> Vec<crate::deps::DepError> {
    use crate::deps::{DepError, PeerFailure};
    let subject = || "banger.host.h1.x".to_owned();
    let mut all: Vec<DepError> = O::ERRORS
        .iter()
        .map(|code| DepError::new(O::SERVICE, O::ENDPOINT, *code, "refused"))
        .collect();
    let transport = [
        banger_bus::RequestError::NoResponders { subject: subject() },
        banger_bus::RequestError::Timeout {
            subject: subject(),
            timeout_ms: 1,
        },
        banger_bus::RequestError::Transport {
            subject: subject(),
            message: "gone".into(),
        },
        banger_bus::RequestError::Decode {
            subject: subject(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        },
        banger_bus::RequestError::Encode {
            subject: subject(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        },
    ];
    all.extend(
        transport
            .into_iter()
            .map(|e| DepError::from_request(O::SERVICE, O::ENDPOINT, e)),
    );
    // Every variant of `PeerFailure` is reached above or below.
    for e in &all {
        match &e.cause {
            PeerFailure::Answered(_)
            | PeerFailure::NotRunning { .. }
            | PeerFailure::Request(_)
            | PeerFailure::Agent(_) => {}
        }
    }
    all
}

/// Every way a request to the guest agent can fail.
pub(crate) fn agent_errors() -> Vec<crate::deps::DepError> {
    use banger_agent_client::ClientError;
    use banger_proto::agent::AgentErrorCode;
    let refused = |code| ClientError::Agent {
        status: 400,
        code,
        message: "no".into(),
    };
    let mut all: Vec<ClientError> = [
        AgentErrorCode::InvalidArgument,
        AgentErrorCode::CommandNotFound,
        AgentErrorCode::BadWorkingDirectory,
        AgentErrorCode::TooLarge,
        AgentErrorCode::ExecDisabled,
        AgentErrorCode::NotFound,
        AgentErrorCode::MethodNotAllowed,
        AgentErrorCode::RequestTimeout,
        AgentErrorCode::SpawnFailed,
        AgentErrorCode::Internal,
        AgentErrorCode::ShuttingDown,
    ]
    .into_iter()
    .map(refused)
    .collect();
    all.push(ClientError::Timeout {
        op: "health",
        after: std::time::Duration::from_millis(1),
    });
    all.push(ClientError::Connect {
        path: "/run/v.sock".into(),
        source: io_error(),
    });
    all.into_iter()
        .map(|e| crate::deps::DepError::agent("health", e))
        .collect()
}

impl Samples for LookupError {
    fn samples() -> Vec<Self> {
        vec![
            Self::new(StoreError::NotFound(id()), &host()),
            Self::new(store_error(), &host()),
        ]
    }
}

impl Samples for RecordError {
    fn samples() -> Vec<Self> {
        [
            StoreError::NotFound(id()),
            StoreError::NameTaken(name()),
            StoreError::BadTransition {
                name: name(),
                from: VmState::Stopped,
                to: VmState::Stopping,
            },
            StoreError::Refused("no".into()),
            store_error(),
        ]
        .into_iter()
        .map(|e| Self::new(e, &host()))
        .collect()
    }
}

impl Samples for StateError {
    fn samples() -> Vec<Self> {
        vec![
            Self::Wrong {
                name: name(),
                state: VmState::Deleting,
                what: "be started",
            },
            Self::NotRunning {
                name: name(),
                state: VmState::Failed,
                what: "exec",
                why_failed: Some("boom".into()),
            },
            Self::Ended {
                name: name(),
                state: VmState::Failed,
                reason: "boom".into(),
            },
        ]
    }
}

impl Samples for KillError {
    fn samples() -> Vec<Self> {
        vec![
            Self::Signal(vmm_error()),
            Self::Survived {
                pid: 1,
                waited_ms: 1,
            },
            Self::StillHeld {
                pid: 1,
                socket: "/run/api.sock".into(),
                rounds: 3,
            },
        ]
    }
}

impl Samples for HaltError {
    fn samples() -> Vec<Self> {
        let mut all: Vec<Self> = Vec::new();
        all.extend(LookupError::samples().into_iter().map(Self::Lookup));
        all.extend(StateError::samples().into_iter().map(Self::State));
        all.extend(KillError::samples().into_iter().map(Self::Kill));
        all.extend(RecordError::samples().into_iter().map(Self::Record));
        all
    }
}

impl Samples for BootError {
    fn samples() -> Vec<Self> {
        use banger_proto::op::{net, store};
        let mut all: Vec<Self> = Vec::new();
        all.extend(
            dep_errors::<store::VolumeCreate>()
                .into_iter()
                .map(Self::Volumes),
        );
        all.extend(
            dep_errors::<store::VolumeResize>()
                .into_iter()
                .map(Self::GrowDisk),
        );
        all.extend(dep_errors::<net::Attach>().into_iter().map(Self::Network));
        all.push(Self::Spawn(vmm_error()));
        all.push(Self::Configure(vmm_error()));
        all.extend(RecordError::samples().into_iter().map(Self::Record));
        all
    }
}

/// The code of every sample of `E`, with its message (for failures).
pub(crate) fn codes<E: Coded + Samples>() -> Vec<(ErrorCode, String)> {
    E::samples()
        .iter()
        .map(|e| {
            let api = e.to_api();
            (api.code, api.message)
        })
        .collect()
}
