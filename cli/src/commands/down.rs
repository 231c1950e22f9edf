//! `banger down`: stop what `banger up` started, in reverse order, leaving no process behind.
//!
//! Running VMs of this host are stopped first (through the controller, so their taps, rules
//! and DNS records follow), then the services newest first, then the nats-server if `up`
//! started it. The stack file is kept, so the next `up` reuses the same credentials.

use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::CommonConfig;
use banger_procid::Termination;
use banger_proto::op::{Lab, vm};
use banger_proto::vm::{ListVmsRequest, VmRefRequest, VmState};

use crate::exit;
use crate::progress::Progress;
use crate::stack::{self, NATS, SERVICES, StackPaths};

/// How long a service may take to drain after SIGTERM before it is killed.
const SERVICE_GRACE: Duration = Duration::from_secs(20);

/// Flags of `banger down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Leave running VMs alone (their processes keep running; a later `up` re-adopts them)
    #[arg(long)]
    pub keep_vms: bool,
}

/// Runs `banger down`.
pub async fn run(config: &CommonConfig, args: DownArgs) -> anyhow::Result<u8> {
    let paths = StackPaths {
        state: config.state_dir.clone(),
        runtime: config.runtime_dir.clone(),
    };
    let mut stopped_any = false;
    let progress = Progress::start("stopping banger");

    if !args.keep_vms
        && stack::running_pid(&paths, "vm-controller", "banger-vm-controller").is_some()
    {
        progress.set_message("stopping the VMs of this host");
        stop_vms(config, &progress).await;
    }
    for svc in SERVICES.iter().rev() {
        if let Some(id) = stack::running_pid(&paths, svc, &format!("banger-{svc}")) {
            progress.set_message(format!("stopping {svc}"));
            let how = stack::stop_process(id, SERVICE_GRACE);
            progress.println(format_args!("stopped {svc}{}", termination_note(how)));
            stopped_any = true;
        }
        let _ = std::fs::remove_file(paths.pid_file(svc));
    }
    // VMs the controller could not stop (the bus or the controller was already gone) would
    // outlive the stack: stop their hypervisor processes directly. Their records, leases and
    // volumes stay; the next `up` reconciles them to `stopped`.
    if !args.keep_vms {
        let leftovers = stack::hypervisors(&config.runtime_dir.join("vm-controller"));
        if !leftovers.is_empty() {
            progress.set_message("stopping VM processes the controller did not stop");
        }
        for vmm in &leftovers {
            vmm.terminate(Duration::from_secs(10));
        }
        if !leftovers.is_empty() {
            progress.println(format_args!(
                "stopped {} VM process(es) the controller did not stop",
                leftovers.len()
            ));
        }
    }
    if let Some(id) = stack::running_pid(&paths, NATS, NATS) {
        progress.set_message("stopping nats-server");
        let how = stack::stop_process(id, SERVICE_GRACE);
        progress.println(format_args!("stopped nats-server{}", termination_note(how)));
        stopped_any = true;
    }
    let _ = std::fs::remove_file(paths.pid_file(NATS));
    let _ = std::fs::remove_dir(paths.pid_dir());
    progress.finish_and_clear();
    if !stopped_any {
        println!("banger is not running");
    }
    Ok(exit::OK)
}

/// What `down` adds to "stopped X" when the stop was not a plain exit.
fn termination_note(how: Termination) -> &'static str {
    match how {
        Termination::Killed => " (killed after the grace period)",
        Termination::Survived => " (still exiting: it survived SIGKILL for 5 s)",
        Termination::AlreadyGone | Termination::Exited => "",
    }
}

/// Stops every running VM of this host; failures are reported, not fatal (the services are
/// stopped regardless).
async fn stop_vms(config: &CommonConfig, progress: &Progress) {
    let Ok(Ok(client)) = tokio::time::timeout(
        Duration::from_secs(2),
        banger_bus::connect::connect(&config.nats, false),
    )
    .await
    else {
        progress.eprintln("warning: cannot reach the bus; VMs were not stopped");
        return;
    };
    let bus = Bus::new(client, config.subjects.clone());
    let replies = match bus
        .gather::<vm::List>(
            &Lab,
            &ListVmsRequest::default(),
            None,
            Duration::from_secs(1),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            progress.eprintln(format_args!("warning: listing VMs: {e}"));
            return;
        }
    };
    let mine: Vec<_> = replies
        .into_iter()
        .filter_map(Result::ok)
        .filter(|r| r.host == config.host)
        .flat_map(|r| r.vms)
        .filter(|v| matches!(v.state, VmState::Running | VmState::Starting))
        .collect();
    let stops = mine.iter().map(|vm| {
        let bus = bus.clone();
        async move {
            let req = VmRefRequest { id: vm.id.clone() };
            let r = bus
                .call::<vm::Stop>(&config.host, &req, Duration::from_secs(60))
                .await;
            match r {
                Ok(_) => progress.println(format_args!("stopped VM {}", vm.name)),
                Err(e) => progress.eprintln(format_args!("warning: stopping VM {}: {e}", vm.name)),
            }
        }
    });
    futures::future::join_all(stops).await;
}
