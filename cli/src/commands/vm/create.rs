//! `banger vm create NAME...`: validate the settings and every name here, send one `vm.create`
//! per name, optionally wait for the guest agent to answer its health check (by its `health`
//! event: [`super::wait`]). Several names are created at the same time by [`super::create_many`].

use std::time::Duration;

use anyhow::Context as _;
use banger_bus::RequestError;
use banger_proto::net::PortForward;
use banger_proto::op::{Lab, vm};
use banger_proto::vm::{CreateVmRequest, VmInfo, VmOpReply, VmState};
use banger_proto::{ApiError, CpuCount, HostId, ImageName, MemMib, VmName, service};

use super::units::{format_mib, parse_cpus, parse_disk, parse_memory, parse_seconds};
use super::wait::{HealthEvents, wait_healthy};
use crate::{App, exit, output};

/// Flags of `banger vm create`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  banger vm create web                      # defaults: the default image, its CPU and memory
  banger vm create db --cpus 2 --memory 2G --disk 20G
  banger vm create api --host lab2 -p 8080:80 --wait
  banger vm create web-{1..100} --no-start   # 100 VMs, same settings, created at the same time

Several names create one VM each, with the same settings, at the same time (on the same host: \
--host, or the controller that answers first). Every name is checked before anything is sent: \
one invalid or repeated name refuses the whole command (exit 2). One line per VM is printed in \
the order given; a VM that fails (name taken, ...) is reported in its place and the others are \
still created; --wait waits for every VM. --publish cannot be given with several names (a host \
port forwards to one VM).

Sizes are MiB when given as a plain number (1024), or take a unit: 512M, 2G, 1T. Zero or \
negative cpus and sizes are refused before anything is sent.

Exit status: 0 created (and healthy with --wait), 2 invalid flags or names, 4 not found or \
unavailable (the image is not registered on the host that took the VM, no controller answered, \
or --wait timed out), 1 any other failure (name taken, ...). With several names: 0 when every \
VM succeeded, 3 when some did and some failed, otherwise 4 or 1 as above. Images are registered per host: \
`banger image register NAME ... --host HOST` on every host that may run the VM.")]
pub struct CreateArgs {
    /// Names of the new VMs: lowercase letters, digits and '-'; each VM is reachable as
    /// NAME.vm. Several names create several VMs with the same settings, at the same time
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Image to boot [default: the controller's default image]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<ImageName>,
    /// Number of vCPUs, 1 to 32 [default: the controller's]
    #[arg(long, value_name = "N", value_parser = parse_cpus, allow_negative_numbers = true)]
    pub cpus: Option<CpuCount>,
    /// Memory: MiB (1024) or a size with a unit (512M, 2G) [default: the controller's]
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, allow_hyphen_values = true)]
    pub memory: Option<MemMib>,
    /// Size of the persistent work disk mounted at /root: MiB or with a unit (8G)
    /// [default: the image's]
    #[arg(long, value_name = "SIZE", value_parser = parse_disk, allow_hyphen_values = true)]
    pub disk: Option<MemMib>,
    /// Create the VM on this host [default: whichever host's controller answers first]
    #[arg(long, value_name = "HOST")]
    pub host: Option<HostId>,
    /// Forward a host port to a guest port while the VM runs: HOST:GUEST[/tcp|/udp];
    /// repeatable
    #[arg(short = 'p', long = "publish", value_name = "HOST:GUEST", value_parser = PortForward::parse)]
    pub publish: Vec<PortForward>,
    /// Only create the VM; start it later with `banger vm start NAME`
    #[arg(long, conflicts_with = "wait")]
    pub no_start: bool,
    /// Wait until the guest agent answers its health check before returning (the controller
    /// announces it with a `health` event); a guest that dies (its init exits: a kernel panic
    /// on the console) ends the wait at once, with why
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: seconds (90, 90s) or minutes (5m)
    #[arg(long, value_name = "TIME", requires = "wait", value_parser = parse_seconds, default_value = "120")]
    pub wait_timeout: Duration,
}

impl CreateArgs {
    /// The request for VM `name` with these settings.
    pub(crate) fn request(&self, name: VmName) -> CreateVmRequest {
        CreateVmRequest {
            name,
            image: self.image.clone(),
            cpus: self.cpus,
            memory_mib: self.memory,
            disk_mib: self.disk,
            host: self.host.clone(),
            start: !self.no_start,
            port_forwards: self.publish.clone(),
        }
    }

    /// Every name, checked: all of them valid and none given twice, or an `invalid_argument`
    /// error naming each bad one (nothing is sent then).
    pub(crate) fn checked_names(&self) -> Result<Vec<VmName>, ApiError> {
        let mut names = Vec::with_capacity(self.names.len());
        let mut bad = Vec::new();
        for raw in &self.names {
            match VmName::new(raw.as_str()) {
                Ok(n) if names.contains(&n) => bad.push(format!("{raw:?} is given twice")),
                Ok(n) => names.push(n),
                Err(e) => bad.push(e.to_string()),
            }
        }
        if !bad.is_empty() {
            return Err(ApiError::invalid(format!(
                "{} of {} names refused, nothing was created: {}",
                bad.len(),
                self.names.len(),
                bad.join("; ")
            )));
        }
        if names.len() > 1 && !self.publish.is_empty() {
            return Err(ApiError::invalid(
                "--publish forwards a host port to one VM: give one name with it",
            ));
        }
        Ok(names)
    }
}

/// Runs `banger vm create`.
pub(crate) async fn run(app: &App, args: CreateArgs) -> anyhow::Result<u8> {
    let names = args.checked_names()?;
    match names.as_slice() {
        [name] => run_one(app, &args, name.clone()).await,
        _ => super::create_many::run(app, &args, names).await,
    }
}

/// Creates one VM (the output and exit status of a create before names could be several).
async fn run_one(app: &App, args: &CreateArgs, name: VmName) -> anyhow::Result<u8> {
    // Subscribed before the create is sent, so the guest's `health` event cannot be missed.
    let events = if args.wait {
        Some(HealthEvents::subscribe(app, args.host.as_ref()).await)
    } else {
        None
    };
    let reply = send(app, &args.request(name)).await?;
    let vm = reply.vm;
    if app.json && !args.wait {
        output::print_json(&serde_json::json!({ "vm": vm, "note": reply.note }))?;
    } else if !app.json {
        println!("{}", describe(&vm));
        if let Some(note) = &reply.note {
            println!("note: {note}");
        }
    }
    let Some(events) = events else {
        return Ok(exit::OK);
    };
    let health = wait_healthy(app, &vm, args.wait_timeout, events).await?;
    if app.json {
        output::print_json(&serde_json::json!({ "vm": vm, "note": reply.note, "health": health }))?;
    } else {
        println!(
            "{} is healthy: agent {} answered after boot",
            vm.name, health.agent_version
        );
    }
    Ok(exit::OK)
}

/// The longest placement waits for a controller's discovery answer (it returns with the first
/// one, and at once when there is none).
const PLACEMENT_WINDOW: Duration = Duration::from_secs(5);

/// Sends one validated `vm.create` and returns the controller's answer.
///
/// A named host gets the request on its own subject. Otherwise the VM goes to the controller
/// that answers discovery first: only live controllers answer, so a host that is cut off (or
/// whose controller stopped) leaves placement at once. The controllers' queue group
/// (`vm.create`) would still offer requests to a lost host until its NATS node drops the
/// route, and such a request waits out its whole deadline. When discovery finds no
/// controller, the queue group gets the request (and says nobody answers).
pub(crate) async fn send(app: &App, req: &CreateVmRequest) -> anyhow::Result<VmOpReply> {
    let mut req = req.clone();
    if req.host.is_none() {
        req.host = place(app).await?;
    }
    call(app, &req)
        .await
        .with_context(|| format!("creating VM {}", req.name))
}

/// The host of the first live controller to answer discovery: one round trip, not the stall
/// window that waiting for every answer costs. `None` when no controller answered.
pub(crate) async fn place(app: &App) -> anyhow::Result<Option<HostId>> {
    let first = app
        .bus
        .ping_first(service::VM_CONTROLLER, app.timeout.min(PLACEMENT_WINDOW))
        .await?;
    if let Some(c) = &first {
        crate::announce_simulated_controllers(std::slice::from_ref(c));
    }
    Ok(first.and_then(|c| c.host().and_then(|h| HostId::new(h).ok())))
}

/// Sends `req` to the host it names, or to the controllers' queue group when it names none.
/// Says SIMULATED when the answering controller runs the simulator (a create that named its
/// host ran no discovery that could have said it).
pub(crate) async fn call(app: &App, req: &CreateVmRequest) -> Result<VmOpReply, RequestError> {
    let reply = match &req.host {
        Some(h) => app.bus.call::<vm::Create>(h, req, app.timeout).await,
        None => app.bus.call::<vm::Place>(&Lab, req, app.timeout).await,
    }?;
    if reply.vmm.as_deref() == Some("sim") {
        crate::announce_simulated();
    }
    Ok(reply)
}

/// The line printed after a create.
pub(crate) fn describe(vm: &VmInfo) -> String {
    format!("created {} {}", vm.name, placed(vm))
}

/// Where and how a new VM runs: `on HOST: STATE, N vCPU, ...`.
pub(crate) fn placed(vm: &VmInfo) -> String {
    let mut line = format!(
        "on {}: {}, {} vCPU, {} memory, {} disk",
        vm.host,
        vm.state,
        vm.cpus,
        format_mib(vm.memory_mib),
        format_mib(vm.disk_mib)
    );
    match &vm.network {
        Some(n) => line.push_str(&format!(", {} ({}.vm)", n.ip, vm.name)),
        None if vm.state == VmState::Stopped => {
            line.push_str(&format!("; start it with `banger vm start {}`", vm.name))
        }
        None => {}
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Harness {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn parse(argv: &[&str]) -> Result<CreateArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("create").chain(argv.iter().copied()))
            .map(|h| h.args)
    }

    #[test]
    fn flags_become_the_create_request() {
        let req = parse(&[
            "web",
            "--cpus",
            "2",
            "--memory",
            "1G",
            "--disk",
            "8G",
            "--image",
            "void",
            "--host",
            "lab2",
            "-p",
            "8080:80",
            "--no-start",
        ])
        .unwrap()
        .request(VmName::new("web").unwrap());
        assert_eq!(req.name.as_str(), "web");
        assert_eq!(req.cpus.map(CpuCount::get), Some(2));
        assert_eq!(req.memory_mib.map(MemMib::get), Some(1024));
        assert_eq!(req.disk_mib.map(MemMib::get), Some(8192));
        assert_eq!(req.image.as_ref().map(ImageName::as_str), Some("void"));
        assert_eq!(req.host.as_ref().map(HostId::as_str), Some("lab2"));
        assert_eq!(req.port_forwards.len(), 1);
        assert!(!req.start);
    }

    #[test]
    fn omitted_settings_stay_omitted_so_the_controller_defaults_apply() {
        let req = parse(&["web"])
            .unwrap()
            .request(VmName::new("web").unwrap());
        assert!(req.cpus.is_none() && req.memory_mib.is_none() && req.disk_mib.is_none());
        assert!(req.start);
    }

    #[test]
    fn zero_or_negative_cpus_and_memory_are_usage_errors() {
        for argv in [
            &["web", "--cpus", "0"][..],
            &["web", "--cpus", "-1"],
            &["web", "--cpus=-1"],
            &["web", "--memory", "0"],
            &["web", "--memory", "-1"],
            &["web", "--memory", "-2G"],
            &["web", "--disk", "0"],
        ] {
            let err = parse(argv).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{argv:?}"
            );
            assert!(
                err.to_string().contains("greater than 0"),
                "{argv:?}: {err}"
            );
        }
    }

    #[test]
    fn every_bad_name_is_named_before_anything_is_sent() {
        let names = parse(&["web-1", "web-2", "web-3"])
            .unwrap()
            .checked_names()
            .unwrap();
        assert_eq!(names.len(), 3);
        let err = parse(&["web-1", "Web", "web-1", "a_b"])
            .unwrap()
            .checked_names()
            .unwrap_err();
        assert_eq!(err.code, banger_proto::ErrorCode::InvalidArgument);
        assert!(err.message.starts_with("3 of 4 names refused"), "{err}");
        for bad in ["\"Web\"", "\"web-1\" is given twice", "\"a_b\""] {
            assert!(err.message.contains(bad), "{bad} in {err}");
        }
        assert_eq!(crate::exit::for_code(err.code), crate::exit::USAGE);
        let err = parse(&["a", "b", "-p", "8080:80"])
            .unwrap()
            .checked_names()
            .unwrap_err();
        assert!(err.message.contains("--publish"), "{err}");
        assert!(
            parse(&["a", "-p", "8080:80"])
                .unwrap()
                .checked_names()
                .is_ok()
        );
    }

    #[test]
    fn invalid_names_and_flag_combinations_are_refused() {
        assert!(parse(&["Web"]).unwrap().checked_names().is_err());
        assert!(parse(&[]).is_err(), "a name is required");
        assert!(parse(&["web", "--no-start", "--wait"]).is_err());
        assert!(parse(&["web", "--wait-timeout", "10"]).is_err());
        assert_eq!(
            parse(&["web", "--wait", "--wait-timeout", "2m"])
                .unwrap()
                .wait_timeout
                .as_secs(),
            120
        );
    }

    #[test]
    fn a_cpus_error_reads_clearly() {
        let err = parse(&["web", "--cpus", "0"]).unwrap_err().to_string();
        insta::assert_snapshot!(err.lines().next().unwrap_or_default(), @r#"error: invalid value '0' for '--cpus <N>': cpus must be a whole number greater than 0, got "0""#);
    }
}
