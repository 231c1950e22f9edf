//! The banger bus contract.
//!
//! Every subject string, every request, reply and event body, every validated name and every
//! error code that crosses a service boundary is defined here and only here. Services and the
//! CLI import these types; a subject literal anywhere else is a bug.
//!
//! The crate depends on serde and thiserror only, so it can be used by anything (the guest
//! agent, a test, a third-party tool) without pulling an async runtime.
//!
//! Each request/reply operation is a type in [`op`] naming its subject, request and reply;
//! `banger-bus` calls and serves by that type.
//!
//! Wire format: JSON. Changing a wire type is a contract change: bump [`CONTRACT_VERSION`] and
//! say why in the commit.

pub mod agent;
pub mod dns;
pub mod error;
pub mod event;
pub mod names;
pub mod net;
pub mod op;
pub mod service;
pub mod store;
pub mod subject;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vm;

pub use error::{ApiError, ErrorCode};
pub use names::{CpuCount, HostId, ImageName, MemMib, NameError, VmId, VmName};
pub use subject::Subjects;

/// Expands to the contract version as a string literal, for `concat!` (clap's `--version`).
#[macro_export]
macro_rules! contract_version {
    () => {
        "2"
    };
}

/// Version of the bus contract. Shown by `banger --version` and in every service's metadata so
/// mismatched deployments are easy to spot.
pub const CONTRACT_VERSION: &str = contract_version!();
