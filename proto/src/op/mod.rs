//! Typed operations: every request/reply operation of the bus is one type here that names its
//! subject, its request, its reply, the service that answers it and how (one instance of a
//! queue group, or every instance). `banger-bus` calls, gathers and serves by that type, so a
//! caller and a server that disagree on a type do not compile.
//!
//! | module | operations of | subject |
//! | --- | --- | --- |
//! | [`vm`] | vm-controller | `<p>.vm.create`, `<p>.vm.list`, `<p>.host.<host>.vm.<op>` |
//! | [`net`] | netd | `<p>.host.<host>.net.<op>` |
//! | [`store`] | stord | `<p>.host.<host>.store.<op>` |
//! | [`dns`] | dnsd | `<p>.dns.<op>` |
//!
//! Adding an operation is one declaration in the service's module (see `proto/README.md`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ErrorCode;
use crate::names::HostId;
use crate::subject::Subjects;

pub mod dns;
pub mod net;
pub mod store;
pub mod vm;
#[cfg(test)]
mod wire_tests;

/// Where an operation is addressed: the whole lab ([`Lab`]) or one host ([`HostId`]).
pub trait Scope: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The subject template before the operation's tokens, as the docs write it.
    const TEMPLATE: &'static str;

    /// The full subject of `tokens` under `subjects`' prefix, addressed to `self`.
    fn subject(&self, subjects: &Subjects, tokens: &str) -> String;
}

/// An operation addressed to the lab as a whole: `<p>.<tokens>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lab;

impl Scope for Lab {
    const TEMPLATE: &'static str = "<p>.";

    fn subject(&self, subjects: &Subjects, tokens: &str) -> String {
        format!("{}.{tokens}", subjects.prefix())
    }
}

/// An operation addressed to one host: `<p>.host.<host>.<tokens>`.
impl Scope for HostId {
    const TEMPLATE: &'static str = "<p>.host.<host>.";

    fn subject(&self, subjects: &Subjects, tokens: &str) -> String {
        format!("{}.host.{self}.{tokens}", subjects.prefix())
    }
}

/// Who answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// One instance answers (a queue group shared by every instance): most operations, and
    /// `vm.create`, which NATS load-balances across the lab's controllers (placement).
    Queue,
    /// Every instance answers (scatter-gather, a queue group per instance): `vm.list`.
    Broadcast,
}

/// One request/reply operation of the bus.
pub trait Operation: Default + Send + Sync + 'static {
    /// What the caller sends.
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What the service answers (or an `error::ErrorReply`).
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Where it is addressed: [`Lab`] or a [`HostId`].
    type At: Scope;
    /// The service that answers it (a name in [`crate::service`]).
    const SERVICE: &'static str;
    /// The endpoint's name in the NATS service API (`$SRV.INFO`, `$SRV.STATS`).
    const ENDPOINT: &'static str;
    /// The subject's tokens after the scope (`vm.health`, `store.image.list`).
    const TOKENS: &'static str;
    /// Who answers.
    const DELIVERY: Delivery;
    /// The error codes an answer may carry: the handler's own, those of the peers it calls
    /// that it passes on, and [`RUNTIME_ERRORS`] (which the serving runtime may answer for any
    /// operation). A caller can rely on no other code from a service of this contract; the
    /// service's tests check that every error its handler can return has a code listed here.
    const ERRORS: &'static [ErrorCode];

    /// The subject of this operation at `at`.
    fn subject(subjects: &Subjects, at: &Self::At) -> String {
        at.subject(subjects, Self::TOKENS)
    }
}

/// The codes the serving runtime may answer for any operation, before or after its handler:
/// `invalid_argument` for a request body that does not decode, `internal` for a reply that does
/// not encode. Every operation's [`Operation::ERRORS`] lists them.
pub const RUNTIME_ERRORS: &[ErrorCode] = &[ErrorCode::InvalidArgument, ErrorCode::Internal];

/// What the docs and tools need to know of an operation, without its types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The Rust path of the operation's type (`vm::Health`).
    pub name: &'static str,
    /// [`Operation::SERVICE`].
    pub service: &'static str,
    /// [`Operation::ENDPOINT`].
    pub endpoint: &'static str,
    /// The subject template: `<p>.host.<host>.vm.health`.
    pub subject: &'static str,
    /// [`Operation::DELIVERY`].
    pub delivery: Delivery,
    /// [`Operation::ERRORS`].
    pub errors: &'static [ErrorCode],
}

/// Something done for every operation, with its types: see [`visit_all`].
pub trait Visitor {
    /// Called once per operation.
    fn visit<O: Operation>(&mut self, info: OpInfo);
}

/// Calls `v` for every operation of every service.
pub fn visit_all(v: &mut impl Visitor) {
    vm::visit(v);
    net::visit(v);
    store::visit(v);
    dns::visit(v);
}

/// Every operation of every service.
pub fn all() -> Vec<OpInfo> {
    [vm::ALL, net::ALL, store::ALL, dns::ALL].concat()
}

/// Declares a service's operations: one unit struct per operation implementing
/// [`Operation`], plus the module's `ALL` (every [`OpInfo`]) and `visit`.
macro_rules! operations {
    (
        service: $service:expr;
        module: $module:literal;
        $(
            $(#[$doc:meta])*
            $name:ident {
                at: $at:ident,
                subject: $tokens:literal,
                endpoint: $endpoint:literal,
                delivery: $delivery:ident,
                request: $req:ty,
                reply: $reply:ty,
                errors: [$($code:ident),* $(,)?] $(,)?
            }
        )*
    ) => {
        $(
            $(#[$doc])*
            ///
            #[doc = concat!("Error codes ([`ERRORS`](crate::op::Operation::ERRORS)): ",
                stringify!($($code),*), ".")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
            pub struct $name;

            impl $crate::op::Operation for $name {
                type Request = $req;
                type Reply = $reply;
                type At = $at;
                const SERVICE: &'static str = $service;
                const ENDPOINT: &'static str = $endpoint;
                const TOKENS: &'static str = $tokens;
                const DELIVERY: $crate::op::Delivery = $crate::op::Delivery::$delivery;
                const ERRORS: &'static [$crate::error::ErrorCode] =
                    &[$($crate::error::ErrorCode::$code),*];
            }
        )*

        /// Every operation of this service, in documentation order.
        pub const ALL: &[$crate::op::OpInfo] = &[$(
            $crate::op::OpInfo {
                name: concat!($module, "::", stringify!($name)),
                service: $service,
                endpoint: $endpoint,
                subject: concat!(
                    $crate::op::operations!(@template $at),
                    $tokens
                ),
                delivery: $crate::op::Delivery::$delivery,
                errors: &[$($crate::error::ErrorCode::$code),*],
            }
        ),*];

        /// Calls `v` for every operation of this service.
        pub fn visit(v: &mut impl $crate::op::Visitor) {
            let mut infos = ALL.iter().copied();
            $(
                if let Some(info) = infos.next() {
                    v.visit::<$name>(info);
                }
            )*
        }
    };
    (@template Lab) => { "<p>." };
    (@template HostId) => { "<p>.host.<host>." };
}
pub(crate) use operations;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn subjects_and_endpoint_names_are_unique() {
        let all = all();
        assert_eq!(all.len(), 31);
        let mut subjects = HashSet::new();
        let mut endpoints = HashSet::new();
        for info in &all {
            assert!(subjects.insert(info.subject), "{} twice", info.subject);
            assert!(
                endpoints.insert((info.service, info.endpoint)),
                "{}/{} twice",
                info.service,
                info.endpoint
            );
        }
    }

    /// Every operation declares the codes the serving runtime may answer, and no code twice.
    #[test]
    fn every_operation_declares_the_runtime_codes() {
        for info in all() {
            for code in RUNTIME_ERRORS {
                assert!(
                    info.errors.contains(code),
                    "{} does not declare {code}",
                    info.name
                );
            }
            let unique: HashSet<_> = info.errors.iter().collect();
            assert_eq!(
                unique.len(),
                info.errors.len(),
                "{} lists a code twice",
                info.name
            );
        }
    }

    /// Every variant of the runtime operation enum (`VmOp`) names the subject of an operation
    /// type (an operation needs no variant unless code picks it at run time).
    #[test]
    fn the_operation_enum_names_operation_types() {
        use crate::subject::VmOp;
        let typed: HashSet<&str> = all().iter().map(|o| o.subject).collect();
        for op in VmOp::ALL {
            let subject = format!("<p>.host.<host>.vm.{op}");
            assert!(
                typed.contains(subject.as_str()),
                "{subject} has no operation type"
            );
        }
    }
}
