//! `banger vm create NAME NAME...`: one VM per name, the same settings, created at the same
//! time.
//!
//! The names were all checked before this runs ([`CreateArgs::checked_names`]). Placement is
//! decided once for the whole batch (`--host`, or the controller that answers discovery first),
//! then every `vm.create` is sent at once on the command's one connection, at most
//! [`FAN_OUT`] in flight. With `--wait`, each VM's `health` and `failed` events are subscribed
//! to before its create is sent, and each VM is waited for on its own. One line per name is
//! printed in the order given, like the other batch commands ([`super::batch`]); a failure is
//! reported in its place and does not stop the others.

use std::fmt::Write as _;

use banger_proto::vm::{CreateVmRequest, VmInfo};
use banger_proto::{ApiError, ErrorCode, VmName};
use futures::StreamExt as _;

use super::batch::{Outcome, api_error, exit_code, render_with, report_failures};
use super::create::{CreateArgs, call, place, placed};
use super::wait::{HealthEvents, wait_healthy};
use crate::{App, output};

/// Creates in flight at once: enough to keep every controller busy, few enough that a huge
/// batch does not open thousands of reply subscriptions (and, with `--wait`, event
/// subscriptions) at the same moment.
pub(crate) const FAN_OUT: usize = 128;

/// Creates a VM for each of `names` (checked, at least two) with `args`' settings.
pub(crate) async fn run(app: &App, args: &CreateArgs, names: Vec<VmName>) -> anyhow::Result<u8> {
    let host = match &args.host {
        Some(h) => Some(h.clone()),
        None => place(app).await?,
    };
    let requests: Vec<CreateVmRequest> = names
        .into_iter()
        .map(|name| CreateVmRequest {
            host: host.clone(),
            ..args.request(name)
        })
        .collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(requests)
        .map(|req| create_one(app, args, req))
        .buffered(FAN_OUT)
        .collect()
        .await;
    if app.json {
        output::print_json(&outcomes)?;
    } else {
        print!("{}", render(&outcomes));
    }
    report_failures(&outcomes);
    Ok(exit_code(&outcomes))
}

/// Creates one VM of the batch (and waits for it with `--wait`); never an error: a failure is
/// an [`Outcome`] that is not ok.
async fn create_one(app: &App, args: &CreateArgs, req: CreateVmRequest) -> Outcome {
    // Subscribed before the create is sent, so the guest's `health` event cannot be missed.
    let events = if args.wait {
        Some(HealthEvents::subscribe(app, req.host.as_ref()).await)
    } else {
        None
    };
    let name = req.name.to_string();
    let mut outcome = Outcome {
        reference: name.clone(),
        name: Some(name),
        ok: false,
        vm: None,
        note: None,
        error: None,
        health: None,
    };
    let reply = match call(app, &req).await {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(api_error(e));
            return outcome;
        }
    };
    outcome.note = reply.note;
    let vm = reply.vm;
    match events {
        None => outcome.ok = true,
        Some(events) => match wait_healthy(app, &vm, args.wait_timeout, events).await {
            Ok(h) => {
                outcome.ok = true;
                outcome.health = Some(h);
            }
            Err(e) => outcome.error = Some(wait_error(&e)),
        },
    }
    outcome.vm = Some(vm);
    outcome
}

/// The error of a wait that ended without a healthy agent.
fn wait_error(e: &anyhow::Error) -> ApiError {
    e.downcast_ref::<ApiError>().cloned().unwrap_or_else(|| {
        ApiError::new(ErrorCode::Internal, banger_bus::runtime::chain(e.as_ref()))
    })
}

/// One line per name, in the order given: where the VM was created (and that its agent
/// answered, with `--wait`), or why it failed.
pub(crate) fn render(outcomes: &[Outcome]) -> String {
    render_with(outcomes, |o| match (&o.error, &o.vm) {
        (Some(e), Some(vm)) => {
            format!("created {}; failed: {} ({})", placed(vm), e.message, e.code)
        }
        (Some(e), None) => format!("failed: {} ({})", e.message, e.code),
        (None, Some(vm)) => created(vm, o),
        (None, None) => "created".to_owned(),
    })
}

/// A success line's text after the name.
fn created(vm: &VmInfo, o: &Outcome) -> String {
    let mut what = format!("created {}", placed(vm));
    if let Some(h) = &o.health {
        let _ = write!(what, "; healthy: agent {} answered", h.agent_version);
    }
    if let Some(note) = &o.note {
        let _ = write!(what, "; {note}");
    }
    what
}

#[cfg(test)]
mod tests {
    use banger_proto::vm::{VmNetwork, VmState};

    use super::*;

    fn vm(name: &str, state: VmState, ip: Option<&str>) -> VmInfo {
        let mut vm = banger_proto::testing::vm_info(name, "aaaa1111000000000000000000000000", "h1");
        vm.state = state;
        vm.network = ip.map(|ip| VmNetwork {
            ip: ip.to_owned(),
            mac: "02:00:00:00:00:01".to_owned(),
            tap: "bgr1".to_owned(),
        });
        vm
    }

    fn outcome(name: &str, vm: Option<VmInfo>, error: Option<ApiError>) -> Outcome {
        Outcome {
            reference: name.into(),
            name: Some(name.into()),
            ok: error.is_none(),
            vm,
            note: None,
            error,
            health: None,
        }
    }

    #[test]
    fn one_line_per_name_in_order_with_each_failure_in_its_place() {
        let outcomes = [
            outcome(
                "web-1",
                Some(vm("web-1", VmState::Running, Some("10.0.0.2"))),
                None,
            ),
            outcome(
                "web-2",
                None,
                Some(ApiError::new(
                    ErrorCode::Conflict,
                    "a vm named web-2 already exists on host h1",
                )),
            ),
            outcome("web-10", Some(vm("web-10", VmState::Stopped, None)), None),
        ];
        let text = render(&outcomes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("web-1   created on h1: running"),
            "{text}"
        );
        assert!(lines[0].contains("10.0.0.2 (web-1.vm)"), "{text}");
        assert_eq!(
            lines[1],
            "web-2   failed: a vm named web-2 already exists on host h1 (conflict)"
        );
        assert!(
            lines[2].starts_with("web-10  created on h1: stopped"),
            "{text}"
        );
        assert_eq!(exit_code(&outcomes), crate::exit::PARTIAL);
    }
}
