//! The controller against real processes: spawned with a umask-000 `pre_exec`, found by their
//! API socket, signalled by process group. The hypervisor is a stand-in script
//! (`tests/fixtures/fake-hypervisor.py`: Firecracker's flags, 204 to every API call, exits on
//! CtrlAltDel unless told to ignore it) — neither Firecracker nor fcsim; the peers are doubles.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use banger_proto::op::vm;
use banger_proto::vm::VmState;
use banger_vm_controller::config::{ControllerConfig, VmmKind};
use banger_vm_controller::vmm::firecracker::ProcessVmm;
use banger_vm_controller::vmm::process;
use common::{Fakes, Harness, test_config};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-hypervisor.py")
}

/// Whether python3 runs here (the stand-in hypervisor is a Python script).
fn have_python() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("import http.server")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn harness(grace_ms: u64) -> Option<Harness> {
    if !have_python() {
        banger_testkit::skip("python3 is not available for the stand-in hypervisor");
        return None;
    }
    let config = ControllerConfig {
        stop_grace_ms: grace_ms,
        // Python starts slowly on a loaded two-core machine.
        api_socket_timeout_ms: 30_000,
        ..test_config()
    };
    let vmm = ProcessVmm::new(
        VmmKind::Sim,
        script(),
        "Info".into(),
        Duration::from_millis(config.api_socket_timeout_ms),
        Duration::from_secs(5),
    );
    let fakes = Fakes {
        real_vmm: Some(Arc::new(vmm)),
        ..Fakes::default()
    };
    Some(Harness::start_with(config, fakes).await)
}

/// A live process that must survive: a `sleep` that stands for whatever reused a stale pid.
struct Decoy(std::process::Child);

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_stored_pid_is_not_trusted_and_the_process_behind_the_api_socket_is_killed() {
    let Some(h) = harness(5_000).await else {
        return;
    };
    let vm = h.create("web").await;
    assert_eq!(vm.state, VmState::Running);
    let real = h.ctl.db().get(&vm.id).await.unwrap().pid.unwrap();
    assert!(process::is_alive(real));
    let sock = h.ctl.paths(&vm.id).api_sock;
    assert_eq!(process::find_by_socket(&sock, None), Some(real));

    // The stored pid goes stale and now names an unrelated live process.
    let decoy = Decoy(Command::new("sleep").arg("300").spawn().unwrap());
    let decoy_pid = decoy.0.id();
    h.ctl
        .db()
        .modify(&vm.id, move |r| {
            r.pid = Some(decoy_pid);
            Ok(())
        })
        .await
        .unwrap();

    let reply = h.op::<vm::Kill>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
    assert!(
        !process::is_alive(real),
        "the process behind the socket was killed"
    );
    assert!(
        process::is_alive(decoy_pid),
        "the stale pid's new owner was left alone"
    );
    assert!(!sock.exists(), "the api socket was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_process_ignoring_ctrl_alt_del_is_killed_after_the_grace_window() {
    let Some(h) = harness(300).await else {
        return;
    };
    let vm = h.create("stubborn").await;
    let pid = h.ctl.db().get(&vm.id).await.unwrap().pid.unwrap();
    let reply = h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
    let note = reply.note.unwrap_or_default();
    assert!(note.contains("did not shut down within 300 ms"), "{note}");
    assert!(!process::is_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_process_that_honours_ctrl_alt_del_stops_without_force() {
    let Some(h) = harness(10_000).await else {
        return;
    };
    let vm = h.create("polite").await;
    let pid = h.ctl.db().get(&vm.id).await.unwrap().pid.unwrap();
    let reply = h.op::<vm::Stop>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
    assert_eq!(reply.note, None);
    assert!(!process::is_alive(pid));
    // The serial log is the hypervisor's stdout; its own log got its stderr.
    let vmm_log = std::fs::read_to_string(h.ctl.paths(&vm.id).vmm_log).unwrap();
    assert!(vmm_log.contains("listening on"), "{vmm_log}");
}

/// The requirement: the launch's umask 000 (a `pre_exec` hook, no shell) makes the
/// hypervisor's socket usable by any tool (0777). The guard: the VM's run directory and its
/// parents are root's alone (0700), so no other user reaches the socket. Removing either the
/// umask or the private directory fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launch_wrapper_gives_a_0777_socket_inside_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(h) = harness(10_000).await else {
        return;
    };
    let mode = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let vm = h.create("guarded").await;
    let paths = h.ctl.paths(&vm.id);
    assert_eq!(
        mode(&paths.api_sock),
        0o777,
        "the launch's umask 000 gives the API socket mode 0777"
    );
    assert_eq!(mode(&paths.run_dir), 0o700, "the VM's run directory");
    let runtime = paths.run_dir.parent().unwrap();
    assert_eq!(mode(runtime), 0o700, "the controller's runtime directory");
    assert_eq!(mode(&paths.log_dir), 0o700, "the VM's log directory");
    assert_eq!(mode(&paths.serial_log), 0o600, "the serial log");
    assert_eq!(mode(&paths.vmm_log), 0o600, "the hypervisor log");
    // The recorded pid runs the hypervisor itself, and process discovery knows it by its
    // command line (`--api-sock <path>`) and by the socket it holds.
    let pid = h.ctl.db().get(&vm.id).await.unwrap().pid.unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert!(
        args.iter().any(|a| a.ends_with(b"fake-hypervisor.py")),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(process::is_hypervisor_of(pid, &paths.api_sock));
    assert_eq!(process::find_by_socket(&paths.api_sock, None), Some(pid));
    let reply = h.op::<vm::Kill>(&vm.id).await.unwrap();
    assert_eq!(reply.vm.state, VmState::Stopped);
}
