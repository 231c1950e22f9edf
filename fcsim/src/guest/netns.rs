//! The guest's network namespace, and the thread that lives in it.
//!
//! `InstanceStart` starts one OS thread that calls `unshare(CLONE_NEWNET | CLONE_NEWUTS)`:
//! from then on that thread (and every process it spawns) is in a new, anonymous network
//! namespace — the guest's — and has a hostname of its own (the `ip=` hostname, else the VM
//! id). There it brings `lo` up, creates the guest's tap `eth0` (`TUNSETIFF` on a name
//! that does not exist, then `TUNSETPERSIST`, see below), gives it the guest MAC,
//! the `ip=` address, and a default route via the `ip=` gateway (rtnetlink, on a netlink
//! socket opened in that thread, hence in that namespace). Then it waits for jobs: the agent is
//! spawned by this thread, so it runs in the guest namespace, and its `PR_SET_PDEATHSIG` parent
//! is this thread, which lives until the guest shuts down.
//!
//! The namespace has no name and no bind mount: it is held only by the eth0 fd, the agent and
//! this thread. When the simulator exits — even on SIGKILL — all three go, and the kernel
//! removes the namespace and eth0. Nothing can leak.
//!
//! eth0 is persistent although it needs no persistence: a non-persistent tap is unregistered
//! when its fd closes, and that waits for an RCU grace period (15–30 ms on this machine kind)
//! inside the exiting simulator, so every `vm stop` waited for it — a cost no real
//! Firecracker guest has (its NIC is inside the guest). A persistent eth0 goes with its
//! namespace instead, which the kernel dismantles in the background (`cleanup_net`), batched
//! with other dying namespaces.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::thread;

use nix::net::if_::if_nametoindex;
use nix::sched::{CloneFlags, unshare};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use tokio::sync::oneshot;

use super::net::{GuestIface, Tap, mac_string};
use crate::log;

/// The guest's interface name.
pub(crate) const GUEST_IFACE: &str = "eth0";

type Job = Box<dyn FnOnce() + Send>;

/// The guest thread; dropping this ends it (after the job it is running, if any).
#[derive(Debug)]
pub(crate) struct GuestNetns {
    jobs: mpsc::Sender<Job>,
    isolated: bool,
}

impl GuestNetns {
    /// Starts the guest thread in a new network and UTS namespace with `hostname` and, with
    /// `iface`, creates and configures eth0 there (returned: its fd keeps it alive). Without
    /// root no namespace can be made: that is an error when the guest has a network interface,
    /// and a warning (the guest shares the simulator's namespaces) when it has none.
    pub(crate) async fn create(
        iface: Option<GuestIface>,
        hostname: String,
    ) -> io::Result<(Self, Option<Tap>)> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("fcsim-guest".to_owned())
            .spawn(move || {
                let setup = enter(iface, &hostname);
                let ok = setup.is_ok();
                if ready_tx.send(setup).is_err() || !ok {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        let (isolated, eth0) = ready_rx
            .await
            .map_err(|_| io::Error::other("the guest thread died while starting"))??;
        Ok((Self { jobs, isolated }, eth0))
    }

    /// Whether the guest has a network namespace of its own.
    pub(crate) fn isolated(&self) -> bool {
        self.isolated
    }

    /// Runs `f` on the guest thread — in the guest's network namespace, inside this runtime's
    /// context (so it may spawn `tokio::process` children) — and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ctx = runtime.enter();
            let _ = tx.send(f());
        });
        let gone = || io::Error::other("the guest thread is gone");
        self.jobs.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

/// On the guest thread: leaves the simulator's network and UTS namespaces and sets the
/// guest's up. Returns whether namespaces were made, and eth0.
fn enter(iface: Option<GuestIface>, hostname: &str) -> io::Result<(bool, Option<Tap>)> {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS) {
        if iface.is_some() {
            return Err(io::Error::other(format!(
                "creating the guest network namespace: unshare(CLONE_NEWNET): {e} (needs root)"
            )));
        }
        log::warn(&format!(
            "cannot create the guest network namespace ({e}); the guest has no network \
             interface, so it shares the simulator's network namespace and hostname"
        ));
        return Ok((false, None));
    }
    if let Err(e) = nix::unistd::sethostname(hostname) {
        log::warn(&format!("setting the guest hostname {hostname:?}: {e}"));
    }
    let eth0 = iface
        .map(|_| {
            let tap = Tap::open(GUEST_IFACE).map_err(|e| {
                io::Error::other(format!("creating the guest tap {GUEST_IFACE}: {e}"))
            })?;
            // This namespace is the simulator's own, so a persistent eth0 cannot outlive it.
            tap.persist().map_err(|e| {
                io::Error::other(format!(
                    "making the guest tap {GUEST_IFACE} persistent: {e}"
                ))
            })?;
            Ok::<Tap, io::Error>(tap)
        })
        .transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(configure(iface))?;
    if let Some(i) = iface {
        log::info(&format!(
            "guest network namespace: {GUEST_IFACE} {} {}/{}{}",
            mac_string(i.mac),
            i.ip,
            i.prefix_len,
            i.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        ));
    } else {
        log::info("guest network namespace: lo only (no network interface)");
    }
    Ok((true, eth0))
}

/// Brings `lo` up and, with `iface`, configures eth0 like the kernel's `ip=` does.
async fn configure(iface: Option<GuestIface>) -> io::Result<()> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(conn);
    let result = configure_links(&handle, iface).await;
    conn.abort();
    result
}

async fn configure_links(handle: &Handle, iface: Option<GuestIface>) -> io::Result<()> {
    let nl =
        |what: &'static str| move |e: rtnetlink::Error| io::Error::other(format!("{what}: {e}"));
    let lo = if_nametoindex("lo")?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(nl("bringing lo up"))?;
    let Some(iface) = iface else {
        return Ok(());
    };
    let eth0 = if_nametoindex(GUEST_IFACE)?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(eth0)
                .address(iface.mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(nl("setting the guest MAC on eth0"))?;
    handle
        .address()
        .add(eth0, IpAddr::V4(iface.ip), iface.prefix_len)
        .execute()
        .await
        .map_err(nl("adding the guest address to eth0"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(nl("bringing eth0 up"))?;
    if let Some(gw) = iface.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(eth0)
            .build();
        // As with the kernel's ip=, an unreachable gateway leaves the guest without a default
        // route; it is not fatal.
        if let Err(e) = handle.route().add(route).execute().await {
            log::warn(&format!("guest default route via {gw}: {e}"));
        }
    }
    Ok(())
}
