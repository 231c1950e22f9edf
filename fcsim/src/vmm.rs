//! The simulated VMM: the microVM configuration the API builds up, the instance state, and
//! what each API operation does to them. Replies and error messages follow Firecracker's
//! (`204` for a successful PUT/PATCH, `200` + JSON for a GET, `400` +
//! `{"fault_message": ...}` for bad input and wrong-state actions).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banger_firecracker::models::{
    ActionType, BootSource, Drive, InstanceActionInfo, InstanceInfo, InstanceState, Logger,
    MachineConfiguration, Metrics, NetworkInterface, Vm, VmState, Vsock,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bootargs;
use crate::faults::{Fault, Faults};
use crate::guest::net::{GuestIface, NetCounters, Tap, parse_mac, prefix_len};
use crate::guest::vsock::{self, GuestPorts};
use crate::guest::{BootPlan, Guest};
use crate::log::{self, Level};

/// `vmm_version` and `firecracker_version`: says what this is.
pub(crate) const VMM_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "-banger-fcsim (SIMULATOR, not Firecracker)"
);

/// Firecracker's message for a pre-boot-only request after `InstanceStart`.
pub(crate) const NOT_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
/// Firecracker's message for a post-boot-only request before `InstanceStart`.
pub(crate) const NOT_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The guest shut down after Ctrl+Alt+Del (Firecracker with `reboot=k` exits 0).
    CtrlAltDel,
    /// The guest rebooted after a kernel panic (`panic=N`): Firecracker exits on a guest
    /// reboot.
    GuestReboot,
}

/// An API reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
}

impl Reply {
    pub(crate) fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    pub(crate) fn json(body: Value) -> Self {
        Self {
            status: 200,
            body: Some(body),
        }
    }

    /// `400 {"fault_message": msg}`.
    pub(crate) fn fault(msg: impl Into<String>) -> Self {
        Self {
            status: 400,
            body: Some(json!({ "fault_message": msg.into() })),
        }
    }
}

/// One network interface: its config and the tap opened for it.
#[derive(Debug)]
struct Nic {
    config: NetworkInterface,
    tap: Option<Tap>,
}

/// The configured vsock device and its listener.
#[derive(Debug)]
struct VsockDev {
    config: Vsock,
    task: JoinHandle<()>,
}

/// Everything the simulator knows about its one microVM.
#[derive(Debug)]
pub(crate) struct Vmm {
    id: String,
    faults: Faults,
    agent_bin: PathBuf,
    machine: MachineConfiguration,
    boot_source: Option<BootSource>,
    drives: Vec<Drive>,
    nics: Vec<Nic>,
    vsock: Option<VsockDev>,
    logger: Option<Logger>,
    metrics: Option<Metrics>,
    state: InstanceState,
    guest: Option<Guest>,
    ports: Arc<GuestPorts>,
    counters: Arc<NetCounters>,
    requests: u64,
    exit: mpsc::UnboundedSender<Exit>,
}

impl Vmm {
    pub(crate) fn new(
        id: String,
        faults: Faults,
        agent_bin: PathBuf,
        exit: mpsc::UnboundedSender<Exit>,
    ) -> Self {
        Self {
            id,
            faults,
            agent_bin,
            // Firecracker's defaults.
            machine: MachineConfiguration::new(1, 128),
            boot_source: None,
            drives: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            logger: None,
            metrics: None,
            state: InstanceState::NotStarted,
            guest: None,
            ports: Arc::new(GuestPorts::default()),
            counters: Arc::new(NetCounters::default()),
            requests: 0,
            exit,
        }
    }

    fn started(&self) -> bool {
        self.state != InstanceState::NotStarted
    }

    /// Handles one request whose body already validated against `template`'s definition.
    pub(crate) async fn dispatch(
        &mut self,
        method: &str,
        template: &str,
        param: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.requests += 1;
        if is_pre_boot_only(method, template) && self.started() {
            return Reply::fault(NOT_AFTER_START);
        }
        let result = match (method, template) {
            ("GET", "/") => Ok(Reply::json(json!(self.instance_info()))),
            ("GET", "/version") => Ok(Reply::json(json!({ "firecracker_version": VMM_VERSION }))),
            ("GET", "/machine-config") => Ok(Reply::json(json!(self.machine))),
            ("GET", "/vm/config") => Ok(Reply::json(self.full_config())),
            ("PUT", "/machine-config") => parse(body).map(|m| {
                self.machine = m;
                Reply::no_content()
            }),
            ("PATCH", "/machine-config") => self.patch_machine_config(body),
            ("PUT", "/boot-source") => parse(body).and_then(|b| self.put_boot_source(b)),
            ("PUT", "/drives/{drive_id}") => {
                parse(body).and_then(|d| self.put_drive(param.unwrap_or_default(), d))
            }
            ("PATCH", "/drives/{drive_id}") => self.patch_existing("drive", param, |s, id| {
                s.drives.iter().any(|d| d.drive_id == id)
            }),
            ("PUT", "/network-interfaces/{iface_id}") => {
                parse(body).and_then(|n| self.put_network_interface(param.unwrap_or_default(), n))
            }
            ("PATCH", "/network-interfaces/{iface_id}") => {
                self.patch_existing("network interface", param, |s, id| {
                    s.nics.iter().any(|n| n.config.iface_id == id)
                })
            }
            ("PUT", "/vsock") => parse(body).and_then(|v| self.put_vsock(v)),
            ("PUT", "/logger") => parse(body).and_then(|l| self.put_logger(l)),
            ("PUT", "/metrics") => parse(body).and_then(|m| self.put_metrics(m)),
            ("PUT", "/actions") => match parse::<InstanceActionInfo>(body) {
                Ok(a) => Ok(self.action(a.action_type).await),
                Err(e) => Err(e),
            },
            ("PATCH", "/vm") => match parse::<Vm>(body) {
                Ok(vm) => Ok(self.patch_vm(vm.state).await),
                Err(e) => Err(e),
            },
            ("PUT", "/snapshot/create") => Ok(Reply::fault(
                "Snapshot create is not supported by the simulator (banger-fcsim).",
            )),
            ("PUT", "/snapshot/load") => Ok(Reply::fault(
                "Snapshot load is not supported by the simulator (banger-fcsim).",
            )),
            ("GET", other) => Ok(Reply::fault(format!(
                "GET {other} is not supported by the simulator (banger-fcsim)."
            ))),
            (m, other) => {
                log::warn(&format!(
                    "{m} {other}: accepted, but the simulator does nothing with it"
                ));
                Ok(Reply::no_content())
            }
        };
        match result {
            Ok(r) => r,
            Err(r) => r,
        }
    }

    fn instance_info(&self) -> InstanceInfo {
        InstanceInfo {
            // Kept as Firecracker's for compatibility; vmm_version says what this is.
            app_name: "Firecracker".to_owned(),
            id: self.id.clone(),
            state: self.state,
            vmm_version: VMM_VERSION.to_owned(),
        }
    }

    /// `GET /vm/config` (definition `FullVmConfiguration`): absent parts are omitted, not null.
    fn full_config(&self) -> Value {
        let mut v = json!({
            "machine-config": self.machine,
            "boot-source": self.boot_source,
            "drives": self.drives,
            "network-interfaces": self.nics.iter().map(|n| &n.config).collect::<Vec<_>>(),
            "vsock": self.vsock.as_ref().map(|v| &v.config),
            "logger": self.logger,
            "metrics": self.metrics,
        });
        if let Value::Object(m) = &mut v {
            m.retain(|_, v| !v.is_null());
        }
        v
    }

    fn patch_machine_config(&mut self, body: Option<Value>) -> Result<Reply, Reply> {
        let mut current = serde_json::to_value(&self.machine)
            .map_err(|e| Reply::fault(format!("internal: {e}")))?;
        if let (Value::Object(cur), Some(Value::Object(patch))) = (&mut current, body) {
            cur.extend(patch);
        }
        self.machine = parse(Some(current))?;
        Ok(Reply::no_content())
    }

    fn put_boot_source(&mut self, b: BootSource) -> Result<Reply, Reply> {
        readable(&b.kernel_image_path)
            .map_err(|e| Reply::fault(format!("The kernel file cannot be opened: {e}")))?;
        if let Some(initrd) = &b.initrd_path {
            readable(initrd).map_err(|e| {
                Reply::fault(format!(
                    "The initrd file cannot be opened due to invalid path or invalid permissions. {e}"
                ))
            })?;
        }
        self.boot_source = Some(b);
        Ok(Reply::no_content())
    }

    fn put_drive(&mut self, id: &str, d: Drive) -> Result<Reply, Reply> {
        if d.drive_id != id {
            return Err(Reply::fault(
                "The id from the path does not match the id from the body!",
            ));
        }
        if d.is_root_device
            && self
                .drives
                .iter()
                .any(|o| o.is_root_device && o.drive_id != d.drive_id)
        {
            return Err(Reply::fault("A root block device already exists!"));
        }
        match &d.path_on_host {
            Some(path) => {
                let read_only = d.is_read_only.unwrap_or(false);
                OpenOptions::new()
                    .read(true)
                    .write(!read_only)
                    .open(path)
                    .map_err(|e| {
                        Reply::fault(format!(
                            "Unable to create the virtio block device: cannot open backing file {}: {e}",
                            path.display()
                        ))
                    })?;
            }
            None => {
                return Err(Reply::fault(
                    "Unable to create the block device: vhost-user-block drives (`socket`) are \
                     not supported by the simulator (banger-fcsim).",
                ));
            }
        }
        match self.drives.iter_mut().find(|o| o.drive_id == d.drive_id) {
            Some(old) => *old = d,
            None => self.drives.push(d),
        }
        Ok(Reply::no_content())
    }

    fn patch_existing(
        &self,
        what: &str,
        id: Option<&str>,
        exists: impl Fn(&Self, &str) -> bool,
    ) -> Result<Reply, Reply> {
        let id = id.unwrap_or_default();
        if !exists(self, id) {
            return Err(Reply::fault(format!("Invalid {what} ID: {id}")));
        }
        log::warn(&format!("PATCH of {what} {id}: accepted, not simulated"));
        Ok(Reply::no_content())
    }

    fn put_network_interface(&mut self, id: &str, n: NetworkInterface) -> Result<Reply, Reply> {
        if n.iface_id != id {
            return Err(Reply::fault(
                "The id from the path does not match the id from the body!",
            ));
        }
        if let Some(mac) = &n.guest_mac
            && parse_mac(mac).is_none()
        {
            return Err(Reply::fault(format!("Invalid guest MAC address: {mac}")));
        }
        if self
            .nics
            .iter()
            .any(|o| o.config.host_dev_name == n.host_dev_name && o.config.iface_id != n.iface_id)
        {
            return Err(Reply::fault(format!(
                "Could not create the network device: the host device name {} is already in use",
                n.host_dev_name
            )));
        }
        // Drop the old tap of this interface first, so re-opening the same tap works.
        self.nics.retain(|o| o.config.iface_id != n.iface_id);
        let tap = Tap::open(&n.host_dev_name).map_err(|e| {
            Reply::fault(format!(
                "Could not create the network device: Open tap device {} failed: {e}",
                n.host_dev_name
            ))
        })?;
        log::info(&format!(
            "network interface {id}: host tap {} opened",
            n.host_dev_name
        ));
        self.nics.push(Nic {
            config: n,
            tap: Some(tap),
        });
        Ok(Reply::no_content())
    }

    fn put_vsock(&mut self, v: Vsock) -> Result<Reply, Reply> {
        if let Some(old) = self.vsock.take() {
            old.task.abort();
            let _ = std::fs::remove_file(&old.config.uds_path);
        }
        let listener = UnixListener::bind(&v.uds_path).map_err(|e| {
            Reply::fault(format!(
                "Cannot create backend for vsock device: binding {}: {e}",
                v.uds_path.display()
            ))
        })?;
        log::info(&format!(
            "vsock: guest cid {}, hybrid vsock on {}",
            v.guest_cid,
            v.uds_path.display()
        ));
        let task = tokio::spawn(vsock::serve(listener, Arc::clone(&self.ports)));
        self.vsock = Some(VsockDev { config: v, task });
        Ok(Reply::no_content())
    }

    fn put_logger(&mut self, l: Logger) -> Result<Reply, Reply> {
        if let Some(path) = &l.log_path {
            log::set_path(path).map_err(|e| {
                Reply::fault(format!(
                    "Cannot initialize the logger: {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(level) = l.level {
            let name = format!("{level:?}");
            log::set_level(Level::parse(&name).unwrap_or(Level::Info), l.show_level);
        }
        self.logger = Some(l);
        Ok(Reply::no_content())
    }

    fn put_metrics(&mut self, m: Metrics) -> Result<Reply, Reply> {
        if self.metrics.is_some() {
            return Err(Reply::fault("Reinitialization of metrics not allowed."));
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.metrics_path)
            .map_err(|e| {
                Reply::fault(format!(
                    "Cannot initialize the metrics system: {}: {e}",
                    m.metrics_path.display()
                ))
            })?;
        self.metrics = Some(m);
        Ok(Reply::no_content())
    }

    async fn action(&mut self, action: ActionType) -> Reply {
        match action {
            ActionType::InstanceStart => match self.instance_start().await {
                Ok(()) => Reply::no_content(),
                Err(r) => r,
            },
            ActionType::SendCtrlAltDel => {
                if !self.started() {
                    return Reply::fault(NOT_BEFORE_START);
                }
                if self.faults.has(Fault::IgnoreCtrlAltDel) {
                    log::warn(
                        "fault ignore-ctrl-alt-del: Ctrl+Alt+Del ignored, the guest keeps running",
                    );
                    log::serial("(fault ignore-ctrl-alt-del: the guest ignores Ctrl+Alt+Del)");
                    return Reply::no_content();
                }
                log::info("Ctrl+Alt+Del sent: the guest shuts down (reboot=k), the VMM exits");
                let _ = self.exit.send(Exit::CtrlAltDel);
                Reply::no_content()
            }
            ActionType::FlushMetrics => match self.flush_metrics() {
                Ok(()) => Reply::no_content(),
                Err(r) => r,
            },
        }
    }

    async fn instance_start(&mut self) -> Result<(), Reply> {
        if self.started() {
            return Err(Reply::fault(NOT_AFTER_START));
        }
        let Some(boot) = &self.boot_source else {
            return Err(Reply::fault(
                "Cannot start microvm without kernel configuration.",
            ));
        };
        readable(&boot.kernel_image_path).map_err(|e| {
            Reply::fault(format!(
                "Cannot start microvm: the kernel file {} cannot be opened: {e}",
                boot.kernel_image_path.display()
            ))
        })?;
        for d in &self.drives {
            if let Some(p) = &d.path_on_host {
                readable(p).map_err(|e| {
                    Reply::fault(format!(
                        "Cannot start microvm: drive {} backing file {} cannot be opened: {e}",
                        d.drive_id,
                        p.display()
                    ))
                })?;
            }
        }
        let cmdline = boot.boot_args.clone().unwrap_or_default();
        let ip = bootargs::ip_config(&cmdline);
        // A real guest kernel mounts its root filesystem from the root drive: banger's images
        // are ext4, and a kernel given anything else panics. Fail the start instead.
        if let Some(root) = self.drives.iter().find(|d| d.is_root_device)
            && let Some(p) = &root.path_on_host
            && !crate::guest::agent::is_ext4(p)
        {
            return Err(Reply::fault(format!(
                "Cannot start microvm: the root drive {} backing file {} is not an ext4 image \
                 (banger-fcsim checks the ext4 superblock).",
                root.drive_id,
                p.display()
            )));
        }
        let net = match (self.nics.first_mut(), &ip) {
            (Some(nic), Some(ip)) => {
                let mac = nic
                    .config
                    .guest_mac
                    .as_deref()
                    .and_then(parse_mac)
                    .unwrap_or_else(|| default_mac(ip.client));
                let iface = GuestIface {
                    mac,
                    ip: ip.client,
                    prefix_len: prefix_len(ip.netmask, ip.client),
                    gateway: ip.gateway,
                };
                nic.tap.take().map(|tap| (tap, iface))
            }
            (Some(_), None) => {
                log::warn(
                    "no static ip= in the boot arguments: the guest's eth0 is not configured \
                     and no frames are copied",
                );
                None
            }
            _ => None,
        };
        let work_disk = self
            .drives
            .iter()
            .find(|d| !d.is_root_device)
            .and_then(|d| d.path_on_host.clone());
        let root_drive = self
            .drives
            .iter()
            .find(|d| d.is_root_device)
            .and_then(|d| d.path_on_host.clone());
        let plan = BootPlan {
            hostname: ip
                .and_then(|i| i.hostname)
                .unwrap_or_else(|| self.id.clone()),
            cmdline,
            net,
            work_disk,
            root_drive,
            agent_bin: self.agent_bin.clone(),
            runtime_dir: crate::guest::runtime_dir(),
            slow_boot: self.faults.slow_boot(),
            exit: self.exit.clone(),
        };
        let guest = Guest::boot(plan, Arc::clone(&self.ports), Arc::clone(&self.counters))
            .await
            .map_err(|e| {
                log::error(&format!("InstanceStart failed: {e}"));
                Reply::fault(format!("Cannot start microvm: {e}"))
            })?;
        self.guest = Some(guest);
        self.state = InstanceState::Running;
        log::info("InstanceStart: simulated guest booted (no kernel runs)");
        if let Some(after) = self.faults.crash_after() {
            tokio::spawn(crash_after(after));
        }
        Ok(())
    }

    fn flush_metrics(&self) -> Result<(), Reply> {
        let Some(m) = &self.metrics else {
            return Err(Reply::fault("The metrics system is not initialized."));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = json!({
            "utc_timestamp_ms": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            "simulator": "banger-fcsim",
            "api_server": { "requests": self.requests },
            "net": {
                "rx_frames": self.counters.rx_frames.load(std::sync::atomic::Ordering::Relaxed),
                "tx_frames": self.counters.tx_frames.load(std::sync::atomic::Ordering::Relaxed),
            },
            "vmm": { "state": self.instance_info().state },
        });
        if let Value::Object(obj) = &mut line {
            if m.emit_id == Some(true) {
                obj.insert("instance_id".to_owned(), json!(self.id));
            }
            for (k, v) in m.properties.iter().flatten() {
                obj.insert(k.clone(), json!(v));
            }
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.metrics_path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| Reply::fault(format!("Cannot flush metrics: {e}")))
    }

    async fn patch_vm(&mut self, state: VmState) -> Reply {
        let Some(guest) = &self.guest else {
            return Reply::fault(NOT_BEFORE_START);
        };
        match state {
            VmState::Paused => {
                guest.set_paused(true).await;
                self.state = InstanceState::Paused;
                log::info("vm paused (agent stopped with SIGSTOP, frames dropped)");
            }
            VmState::Resumed => {
                guest.set_paused(false).await;
                self.state = InstanceState::Running;
                log::info("vm resumed");
            }
        }
        Reply::no_content()
    }

    /// Stops the guest and releases devices; removes the sockets unless `leave_socket`.
    pub(crate) async fn shutdown(&mut self, api_sock: &Path) {
        if let Some(g) = self.guest.take() {
            g.shutdown(&self.ports).await;
        }
        self.nics.clear();
        let leave = self.faults.has(Fault::LeaveSocket);
        if let Some(v) = self.vsock.take() {
            v.task.abort();
            if leave {
                log::warn("fault leave-socket: vsock socket left behind");
            } else {
                let _ = std::fs::remove_file(&v.config.uds_path);
            }
        }
        if leave {
            log::warn("fault leave-socket: API socket left behind");
        } else {
            let _ = std::fs::remove_file(api_sock);
        }
    }
}

/// Fault crash-after: exit non-zero with the API and vsock sockets left behind, like a VMM that
/// crashed. (The simulator's private guest directory is removed: it is not something a real
/// Firecracker would leave, and it is not what the fault is about.)
async fn crash_after(after: Duration) {
    tokio::time::sleep(after).await;
    log::error(&format!(
        "fault crash-after: crashing {after:?} after InstanceStart"
    ));
    log::serial("(fault crash-after: the VMM crashes)");
    let _ = std::fs::remove_dir_all(crate::guest::runtime_dir());
    std::process::exit(1);
}

/// A locally administered MAC from the guest address, for an interface without `guest_mac`.
fn default_mac(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x06, 0x00, a, b, c, d]
}

fn readable(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path).map(drop)
}

/// Which requests Firecracker accepts only before `InstanceStart`.
fn is_pre_boot_only(method: &str, template: &str) -> bool {
    match method {
        "PUT" => !matches!(
            template,
            "/actions"
                | "/mmds"
                | "/snapshot/create"
                | "/logger"
                | "/metrics"
                | "/balloon/hinting/start"
                | "/balloon/hinting/stop"
        ),
        "PATCH" => template == "/machine-config",
        _ => false,
    }
}

/// Deserializes a body that already matched its definition.
fn parse<T: DeserializeOwned>(body: Option<Value>) -> Result<T, Reply> {
    serde_json::from_value(body.unwrap_or(Value::Null)).map_err(|e| {
        Reply::fault(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_boot_only_requests_are_the_configuration_ones() {
        for (m, t) in [
            ("PUT", "/machine-config"),
            ("PATCH", "/machine-config"),
            ("PUT", "/boot-source"),
            ("PUT", "/drives/{drive_id}"),
            ("PUT", "/network-interfaces/{iface_id}"),
            ("PUT", "/vsock"),
        ] {
            assert!(is_pre_boot_only(m, t), "{m} {t}");
        }
        for (m, t) in [
            ("PUT", "/actions"),
            ("PATCH", "/vm"),
            ("GET", "/"),
            ("PATCH", "/drives/{drive_id}"),
            ("PUT", "/snapshot/create"),
        ] {
            assert!(!is_pre_boot_only(m, t), "{m} {t}");
        }
    }
}
