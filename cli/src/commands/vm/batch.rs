//! The batch commands: `vm start|stop|restart|kill|delete|set REF...`.
//!
//! Every reference is resolved from one `vm.list` snapshot (see [`super::resolve`]); the
//! resolved VMs get their request at the same time, each on its own host's subject
//! (`<p>.host.<host>.vm.<op>`); one line per target is printed in the order the user typed,
//! whatever order the answers arrive in. Targets that did not resolve are reported in their
//! place and do not stop the others.

use banger_proto::agent::Health;
use banger_proto::op::vm;
use banger_proto::subject::VmOp;
use banger_proto::vm::{SetVmRequest, VmInfo, VmRefRequest};
use banger_proto::{ApiError, CpuCount, ErrorCode, MemMib};
use serde::Serialize;

use super::resolve::Target;
use super::snapshot;
use super::units::{format_mib, parse_cpus, parse_disk, parse_memory};
use crate::{App, exit, output};

/// The exit status text shared by every batch command's help.
const BATCH_HELP: &str =
    "Each REF is a VM name, a full VM id or a unique prefix of one. All refs are \
resolved from one listing of every host; a ref given twice (or two refs naming the same VM) acts \
once. The VMs are handled at the same time and one line per ref is printed in the order given. A \
ref that matches no VM, or more than one, is reported in its place and the other VMs are still \
handled.

Exit status: 0 when every VM succeeded; 3 when some succeeded and some failed; 4 when none \
succeeded and every failure was a VM not found or a host not answering; 1 when none succeeded \
for another reason (an ambiguous ref, an operation the VM's state does not allow, ...).";

/// Flags of `vm start|stop|restart|kill|delete`.
#[derive(Debug, clap::Args)]
#[command(after_help = BATCH_HELP)]
pub struct BatchArgs {
    /// The VMs: names, ids or unique id prefixes
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

/// Flags of `vm set`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = BATCH_HELP,
    group(clap::ArgGroup::new("change").required(true).multiple(true).args(["cpus", "memory", "disk"]))
)]
pub struct SetArgs {
    /// The VMs: names, ids or unique id prefixes
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    /// New number of vCPUs, 1 to 32
    #[arg(long, value_name = "N", value_parser = parse_cpus, allow_negative_numbers = true)]
    pub cpus: Option<CpuCount>,
    /// New memory size: MiB (1024) or a size with a unit (512M, 2G)
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, allow_hyphen_values = true)]
    pub memory: Option<MemMib>,
    /// New work disk size (it can only grow): MiB or a size with a unit (8G)
    #[arg(long, value_name = "SIZE", value_parser = parse_disk, allow_hyphen_values = true)]
    pub disk: Option<MemMib>,
}

/// What a batch does to each VM.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    /// start, stop, restart, kill or delete.
    Lifecycle(VmOp),
    /// Change settings applied at the next start.
    Set {
        cpus: Option<CpuCount>,
        memory: Option<MemMib>,
        disk: Option<MemMib>,
    },
}

impl Action {
    /// What a success line says.
    pub(crate) fn done(self) -> String {
        match self {
            Self::Lifecycle(VmOp::Start) => "started".into(),
            Self::Lifecycle(VmOp::Stop) => "stopped".into(),
            Self::Lifecycle(VmOp::Restart) => "restarted".into(),
            Self::Lifecycle(VmOp::Kill) => "killed".into(),
            Self::Lifecycle(VmOp::Delete) => "deleted".into(),
            Self::Lifecycle(op) => format!("{op} done"),
            Self::Set { cpus, memory, disk } => {
                let mut parts = Vec::new();
                if let Some(c) = cpus {
                    parts.push(format!("cpus {c}"));
                }
                if let Some(m) = memory {
                    parts.push(format!("memory {}", format_mib(m)));
                }
                if let Some(d) = disk {
                    parts.push(format!("disk {}", format_mib(d)));
                }
                // The controller's note says when it takes effect (at once for a stopped VM,
                // at the next start for a running one).
                format!("set {}", parts.join(", "))
            }
        }
    }
}

/// The result for one target, in typed order.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    /// The reference as typed.
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    /// The VM's name, when the reference resolved.
    pub(crate) name: Option<String>,
    /// Whether the operation succeeded.
    pub(crate) ok: bool,
    /// The VM after the operation, when the controller returned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vm: Option<VmInfo>,
    /// The controller's note (for example: stopped by force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ApiError>,
    /// The guest agent's answer, when the command waited for it (`vm create --wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) health: Option<Health>,
}

/// Runs a batch command.
pub(crate) async fn run(app: &App, refs: &[String], action: Action) -> anyhow::Result<u8> {
    let snap = snapshot::fetch(app, refs).await?;
    for e in &snap.bad_replies {
        eprintln!("warning: unreadable vm.list answer: {e}");
    }
    let targets = snap.resolve_all(refs);
    let outcomes =
        futures::future::join_all(targets.into_iter().map(|t| apply(app, t, action))).await;
    if app.json {
        output::print_json(&outcomes)?;
    } else {
        print!("{}", render(&outcomes, action));
    }
    report_failures(&outcomes);
    Ok(exit_code(&outcomes))
}

/// `error: F of N targets failed` on stderr when any failed.
pub(crate) fn report_failures(outcomes: &[Outcome]) {
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} {} failed",
            outcomes.len(),
            if outcomes.len() == 1 {
                "target"
            } else {
                "targets"
            }
        );
    }
}

/// Applies `action` to one target and says how it went (never an error: a failure is an
/// [`Outcome`] that is not ok).
pub(crate) async fn apply(app: &App, target: Target, action: Action) -> Outcome {
    let vm = match target.vm {
        Ok(vm) => vm,
        Err(e) => {
            return Outcome {
                reference: target.reference,
                name: None,
                ok: false,
                vm: None,
                note: None,
                error: Some(e.to_api()),
                health: None,
            };
        }
    };
    let (host, t) = (&vm.host, app.timeout);
    let id = VmRefRequest { id: vm.id.clone() };
    let reply = match action {
        Action::Lifecycle(VmOp::Start) => app.bus.call::<vm::Start>(host, &id, t).await,
        Action::Lifecycle(VmOp::Stop) => app.bus.call::<vm::Stop>(host, &id, t).await,
        Action::Lifecycle(VmOp::Restart) => app.bus.call::<vm::Restart>(host, &id, t).await,
        Action::Lifecycle(VmOp::Kill) => app.bus.call::<vm::Kill>(host, &id, t).await,
        Action::Lifecycle(VmOp::Delete) => app.bus.call::<vm::Delete>(host, &id, t).await,
        Action::Lifecycle(VmOp::Touch) => app.bus.call::<vm::Touch>(host, &id, t).await,
        Action::Lifecycle(other) => {
            return Outcome {
                reference: target.reference,
                name: Some(vm.name.to_string()),
                ok: false,
                vm: None,
                note: None,
                error: Some(ApiError::invalid(format!(
                    "vm {other} is not a batch operation"
                ))),
                health: None,
            };
        }
        Action::Set { cpus, memory, disk } => {
            let req = SetVmRequest {
                id: vm.id.clone(),
                cpus,
                memory_mib: memory,
                disk_mib: disk,
            };
            app.bus.call::<vm::Set>(host, &req, t).await
        }
    };
    let name = Some(vm.name.to_string());
    match reply {
        Ok(r) => Outcome {
            reference: target.reference,
            name,
            ok: true,
            vm: Some(r.vm),
            note: r.note,
            error: None,
            health: None,
        },
        Err(e) => Outcome {
            reference: target.reference,
            name,
            ok: false,
            vm: None,
            note: None,
            error: Some(api_error(e)),
            health: None,
        },
    }
}

/// The error a failed request reports: the controller's own, or what went wrong on the way.
pub(crate) fn api_error(e: banger_bus::RequestError) -> ApiError {
    match e {
        banger_bus::RequestError::Remote(api) => api,
        other => ApiError::new(other.code(), other.to_string()),
    }
}

/// One line per target: the VM's name (or the reference when it did not resolve), then what
/// happened.
pub(crate) fn render(outcomes: &[Outcome], action: Action) -> String {
    render_with(outcomes, |o| match (&o.error, &o.note) {
        (Some(e), _) => format!("failed: {} ({})", e.message, e.code),
        (None, Some(note)) => format!("{}; {note}", action.done()),
        (None, None) => action.done(),
    })
}

/// One line per outcome: its label (the VM's name, or the reference when it did not resolve),
/// padded to the longest, then `what` says of it.
pub(crate) fn render_with(outcomes: &[Outcome], what: impl Fn(&Outcome) -> String) -> String {
    let label = |o: &Outcome| o.name.clone().unwrap_or_else(|| o.reference.clone());
    let width = outcomes
        .iter()
        .map(|o| label(o).chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for o in outcomes {
        out.push_str(&format!("{:<width$}  {}\n", label(o), what(o)));
    }
    out
}

/// 0 all succeeded, 3 some, 4 none and all not-found/unavailable, 1 none otherwise.
pub(crate) fn exit_code(outcomes: &[Outcome]) -> u8 {
    let failures: Vec<ErrorCode> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.error.as_ref().map_or(ErrorCode::Internal, |e| e.code))
        .collect();
    if failures.is_empty() {
        exit::OK
    } else if failures.len() < outcomes.len() {
        exit::PARTIAL
    } else if failures.iter().all(|c| {
        matches!(
            c,
            ErrorCode::NotFound | ErrorCode::Unavailable | ErrorCode::Timeout
        )
    }) {
        exit::NOT_FOUND_OR_UNAVAILABLE
    } else {
        exit::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str, note: Option<&str>) -> Outcome {
        Outcome {
            reference: name.into(),
            name: Some(name.into()),
            ok: true,
            vm: None,
            note: note.map(Into::into),
            error: None,
            health: None,
        }
    }

    fn failed(reference: &str, code: ErrorCode, message: &str) -> Outcome {
        Outcome {
            reference: reference.into(),
            name: None,
            ok: false,
            vm: None,
            note: None,
            error: Some(ApiError::new(code, message)),
            health: None,
        }
    }

    #[test]
    fn batch_results_render_one_line_per_target_in_order() {
        let outcomes = [
            ok("web", None),
            ok(
                "database",
                Some("the guest ignored CtrlAltDel for 10s; it was stopped by force"),
            ),
            failed(
                "missing",
                ErrorCode::NotFound,
                "no VM is named \"missing\" or has an id starting with it",
            ),
            failed(
                "aaaa",
                ErrorCode::Ambiguous,
                "\"aaaa\" matches 2 VMs: a (aaaa11110000) on h1, c (aaaa22220000) on h1; use \
                 the name or more of the id",
            ),
        ];
        insta::assert_snapshot!(render(&outcomes, Action::Lifecycle(VmOp::Stop)));
    }

    #[test]
    fn set_lines_say_what_changed() {
        let action = Action::Set {
            cpus: Some(CpuCount::new(4).unwrap()),
            memory: Some(MemMib::new(2048).unwrap()),
            disk: None,
        };
        assert_eq!(
            render(&[ok("web", None)], action),
            "web  set cpus 4, memory 2G\n"
        );
    }

    #[test]
    fn exit_codes_tell_all_some_and_none_apart() {
        let nf = || failed("x", ErrorCode::NotFound, "gone");
        let conflict = || failed("y", ErrorCode::Conflict, "running");
        assert_eq!(exit_code(&[ok("a", None), ok("b", None)]), exit::OK);
        assert_eq!(exit_code(&[ok("a", None), nf()]), exit::PARTIAL);
        assert_eq!(exit_code(&[nf(), nf()]), exit::NOT_FOUND_OR_UNAVAILABLE);
        assert_eq!(exit_code(&[nf(), conflict()]), exit::FAILURE);
        assert_eq!(
            exit_code(&[failed("aaaa", ErrorCode::Ambiguous, "two")]),
            exit::FAILURE
        );
    }
}
