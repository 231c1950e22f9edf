//! vm-controller: owns the VM records and Firecracker processes of one host.
//!
//! Answers `<p>.vm.create` (queue group: placement), `<p>.vm.list` (every controller answers)
//! and `<p>.host.<host>.vm.<op>`; publishes lifecycle events on
//! `<p>.events.<host>.vm.<id>.<kind>`.
//!
//! The pieces: [`store`] (SQLite records, the only writer of a VM's state), [`locks`] (one lock
//! per VM), [`deps`] (stord, netd, the agent, the other controllers and the event sink behind
//! small traits), [`vmm`] (the hypervisor behind the [`vmm::Vmm`] trait), [`boot`] and [`halt`]
//! (the shared halves of the lifecycle), [`ops`] (one file per operation), [`presence`] (the
//! heartbeat, and the live controllers and lab members `vm.list` reports), [`reconcile`],
//! [`watch`] and [`postmortem`] (a dead guest or hypervisor reported at once, with the reason),
//! [`error`] (the errors, each with its code, and their one mapping to the wire) and
//! [`endpoints`]. [`run`] wires them to the bus; tests build a [`Controller`] from doubles and
//! call [`serve`].

pub mod boot;
pub mod config;
pub mod controller;
pub mod deps;
pub mod endpoints;
pub mod error;
pub mod exit;
pub mod halt;
pub mod ids;
pub mod locks;
pub mod names;
pub mod ops;
pub mod postmortem;
pub mod presence;
pub mod probe;
pub mod reconcile;
pub mod store;
pub mod vmm;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::CommonArgs;
use banger_bus::runtime::Context;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::service;

pub use controller::{Controller, ControllerParts};

use crate::config::{ControllerConfig, Dirs};
use crate::deps::{BusEvents, BusLab, BusNet, BusStore, VsockAgent};
use crate::store::Store;
use crate::vmm::firecracker::ProcessVmm;

/// How long the lab-wide name check waits for the other controllers' `vm.list` answers.
const LAB_LIST_DEADLINE: Duration = Duration::from_secs(2);

/// How long a `$SRV.PING` for the other controllers collects answers.
const PING_WAIT: Duration = Duration::from_millis(300);

/// Command-line flags of `banger-vm-controller`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "banger-vm-controller",
    version,
    about = "banger's per-host VM controller: VM records and Firecracker processes",
    long_about = "banger's per-host VM controller. It owns the VM records of this host and the \
                  Firecracker processes that run them, answers the `vm` requests of the banger \
                  CLI over NATS, and publishes lifecycle events. Run one per host."
)]
pub struct Args {
    /// Shared flags: NATS connection, host id, directories.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Hypervisor: firecracker, or sim (the Firecracker simulator) [default: the config file's
    /// `[vm-controller] vmm`, else firecracker]
    #[arg(long, env = "BANGER_VMM")]
    pub vmm: Option<config::VmmKind>,

    /// Stop every running VM (as `vm stop` does: taps, rules and DNS records follow) before
    /// exiting on SIGTERM. For containers (compose.yaml), where the VMs' processes die with the
    /// controller's container anyway [default: the config file's `[vm-controller]
    /// stop_vms_on_exit`, else false: VMs outlive a controller restart]
    #[arg(long, env = "BANGER_STOP_VMS_ON_EXIT")]
    pub stop_vms_on_exit: bool,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] banger_bus::BusError),
    /// The VM database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Runs the controller until `shutdown` is cancelled: reads `[vm-controller]`, opens the
/// database, builds the bus peers and the hypervisor, and serves.
pub async fn run(ctx: Context, args: Args, shutdown: CancellationToken) -> Result<(), RunError> {
    let mut config: ControllerConfig = ctx.config.section(service::VM_CONTROLLER)?;
    if let Some(vmm) = args.vmm {
        config.vmm = vmm;
    }
    config.stop_vms_on_exit |= args.stop_vms_on_exit;
    let host = ctx.config.host.clone();
    let dirs = Dirs {
        state: ctx.config.service_state_dir(service::VM_CONTROLLER),
        runtime: ctx.config.runtime_dir.join(service::VM_CONTROLLER),
    };
    let db = Store::open(&dirs.db(), host.clone())?;
    let bus = ctx.bus.clone();
    let controllers = Arc::new(AtomicUsize::new(1));
    let vmm = ProcessVmm::new(
        config.vmm,
        config.vmm_bin(),
        config.vmm_log_level.clone(),
        Duration::from_millis(config.api_socket_timeout_ms),
        Duration::from_millis(config.api_timeout_ms),
    );
    tracing::info!(vmm = %config.vmm, bin = %config.vmm_bin().display(), "hypervisor");
    let parts = ControllerParts {
        host: host.clone(),
        dirs,
        db,
        vmm: Arc::new(vmm),
        stord: Arc::new(BusStore {
            bus: bus.clone(),
            host: host.clone(),
            timeout: config.peer_timeout(),
        }),
        netd: Arc::new(BusNet {
            bus: bus.clone(),
            host: host.clone(),
            timeout: config.peer_timeout(),
        }),
        agent: Arc::new(VsockAgent),
        lab: Arc::new(BusLab::new(
            bus.clone(),
            host.clone(),
            controllers.clone(),
            LAB_LIST_DEADLINE,
        )),
        events: Arc::new(BusEvents {
            bus: bus.clone(),
            host: host.clone(),
        }),
        config,
    };
    serve(Controller::new(parts), &bus, Some(controllers), shutdown).await
}

/// Serves `ctl` on `bus` until `shutdown` is cancelled: reconciles once, registers the
/// endpoints, then reconciles periodically (refreshing `controllers`, the number of
/// controllers in the lab, when given).
pub async fn serve(
    ctl: Controller,
    bus: &Bus,
    controllers: Option<Arc<AtomicUsize>>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // Before answering anything: re-adopt what still runs, mark what died.
    let report = ctl.reconcile().await;
    tracing::info!(?report, "start-up reconcile");
    let spec = ServiceSpec::new(
        service::VM_CONTROLLER,
        "VM records and Firecracker processes",
        ctl.host(),
    )
    .with_meta(service::META_VMM, ctl.config().vmm.as_str());
    let mut host = ServiceHost::start(bus, spec).await?;
    let presence = presence::Presence::default();
    endpoints::register(&mut host, &ctl, &presence).await?;
    host.spawn(presence::run(
        bus.clone(),
        ctl.host().clone(),
        ctl.config().vmm.as_str(),
        presence,
        shutdown.clone(),
    ));
    let loop_ctl = ctl.clone();
    let loop_bus = bus.clone();
    let stop = shutdown.clone();
    host.spawn(async move {
        reconcile_loop(loop_ctl, loop_bus, controllers, stop).await;
    });
    host.spawn(watch::watch_loop(ctl.clone(), shutdown.clone()));
    host.run(shutdown).await;
    if ctl.config().stop_vms_on_exit {
        ctl.stop_all_on_exit().await;
    }
    Ok(())
}

/// The periodic reconcile, until `shutdown`.
async fn reconcile_loop(
    ctl: Controller,
    bus: Bus,
    controllers: Option<Arc<AtomicUsize>>,
    shutdown: CancellationToken,
) {
    let interval = ctl.config().reconcile_interval();
    loop {
        if let Some(count) = &controllers {
            match bus.ping(Some(service::VM_CONTROLLER), PING_WAIT).await {
                Ok(found) => count.store(found.len().max(1), Ordering::Relaxed),
                Err(e) => tracing::debug!(error = %e, "pinging the other controllers"),
            }
        }
        ctl.sync_names().await;
        let Some(interval) = interval else {
            return;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        ctl.reconcile().await;
    }
}
