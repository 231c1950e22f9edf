//! Simulator timings (not a real Firecracker: no guest kernel boots here).
//!
//! - spawn -> API ready: process start until the API socket accepts;
//! - config + InstanceStart -> agent healthy: machine-config, boot-source, two drives (an ext4
//!   root, a plain work disk), vsock, InstanceStart (as root: the guest network namespace is
//!   made, `lo` only, no network interface), then polling `/healthz` through hybrid vsock until
//!   it answers;
//! - SendCtrlAltDel -> exit: until the process has exited (agent stopped, sockets removed).
//! - as root, with a network interface (a persistent tap on a bridge in a private namespace,
//!   as netd makes it): the `InstanceStart` call itself (guest network namespace, eth0 and its
//!   address and route made before it answers), and `InstanceStart` -> the guest address
//!   answers `ping` from the bridge side (includes spawning `ip netns exec ping`).
//!
//! Needs `banger-agent` built in the same profile (or the other one) of this target dir:
//! `cargo build --release -p banger-agent` before `cargo bench -p banger-fcsim`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench; a panic is a failed run"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_agent_client::AgentClient;
use banger_firecracker::FirecrackerClient;
use banger_firecracker::models::{
    BootSource, Drive, MachineConfiguration, NetworkInterface, Vsock,
};
use banger_testkit::netns::NetNs;

const ROUNDS: usize = 20;

fn agent_bin(sim: &Path) -> Option<PathBuf> {
    let target = sim.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("banger-agent"))
        .find(|p| p.is_file())
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<42} min {:>8.2} ms  median {:>8.2} ms  max {:>8.2} ms  (n={})",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
        v.len()
    );
}

fn main() {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_banger-fcsim"));
    let Some(agent) = agent_bin(&sim) else {
        println!("SKIPPED simulator bench: build banger-agent first (cargo build -p banger-agent)");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The simulator refuses a root drive that is not ext4: one small image, shared by rounds.
    let images = tempfile::tempdir().unwrap();
    let root = images.path().join("root.ext4");
    std::fs::File::create(&root)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&root)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        println!("SKIPPED simulator bench: mkfs.ext4 failed or is missing (e2fsprogs)");
        return;
    }
    let (mut spawn, mut boot, mut stop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let api = dir.path().join("api.sock");
        let vsock = dir.path().join("vsock.sock");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        let disk = |n: &str| {
            let p = dir.path().join(n);
            std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
            p
        };
        let work = disk("work.img");

        let t = Instant::now();
        let mut child = Command::new(&sim)
            .arg("--api-sock")
            .arg(&api)
            .args(["--id", "bench", "--level", "Warning"])
            .arg("--agent-bin")
            .arg(&agent)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while std::os::unix::net::UnixStream::connect(&api).is_err() {
            std::thread::sleep(Duration::from_micros(200));
        }
        spawn.push(t.elapsed());

        let fc = FirecrackerClient::new(&api);
        let client = AgentClient::new(vsock.clone(), 52).with_timeout(Duration::from_secs(1));
        let t = Instant::now();
        rt.block_on(async {
            fc.put_machine_config(&MachineConfiguration::new(2, 256))
                .await
                .unwrap();
            fc.put_boot_source(&BootSource {
                kernel_image_path: kernel.clone(),
                boot_args: Some("console=ttyS0 reboot=k".into()),
                initrd_path: None,
            })
            .await
            .unwrap();
            fc.put_drive(&Drive::new("rootfs", &root, true, false))
                .await
                .unwrap();
            fc.put_drive(&Drive::new("work", &work, false, false))
                .await
                .unwrap();
            fc.put_vsock(&Vsock::new(3, &vsock)).await.unwrap();
            fc.instance_start().await.unwrap();
            while client.health().await.is_err() {
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        });
        boot.push(t.elapsed());

        let t = Instant::now();
        rt.block_on(fc.send_ctrl_alt_del()).unwrap();
        let status = child.wait().unwrap();
        stop.push(t.elapsed());
        assert!(status.success(), "{status}");
    }
    println!("banger-fcsim (SIMULATOR: no guest kernel boots; host-side work only)");
    stats("spawn -> API socket ready", spawn);
    stats("config + InstanceStart -> agent healthy", boot);
    stats("SendCtrlAltDel -> process exited", stop);
    network(&rt, &sim, &agent, &root);
}

/// The rounds with a network interface (root only).
fn network(rt: &tokio::runtime::Runtime, sim: &Path, agent: &Path, root: &Path) {
    if !banger_testkit::is_root() || !banger_testkit::have_program("ping") {
        println!("with a network interface: SKIPPED (needs root and ping)");
        return;
    }
    let ns = NetNs::create("fcb");
    for argv in [
        &["ip", "link", "add", "br0", "type", "bridge"][..],
        &["ip", "addr", "add", "10.78.0.1/24", "dev", "br0"],
        &["ip", "link", "set", "br0", "up"],
        &["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
        &["ip", "link", "set", "tap0", "master", "br0"],
        &["ip", "link", "set", "tap0", "up"],
    ] {
        ns.exec(argv);
    }
    let (mut start, mut ping) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let api = dir.path().join("api.sock");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        let mut cmd = ns.command(sim.to_str().unwrap());
        cmd.arg("--api-sock")
            .arg(&api)
            .args(["--id", "bench", "--level", "Warning"])
            .arg("--agent-bin")
            .arg(agent)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        while std::os::unix::net::UnixStream::connect(&api).is_err() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let fc = FirecrackerClient::new(&api);
        rt.block_on(async {
            fc.put_boot_source(&BootSource {
                kernel_image_path: kernel.clone(),
                boot_args: Some(
                    "console=ttyS0 reboot=k ip=10.78.0.2::10.78.0.1:255.255.255.0:b:eth0:off"
                        .into(),
                ),
                initrd_path: None,
            })
            .await
            .unwrap();
            fc.put_drive(&Drive::new("rootfs", root, true, true))
                .await
                .unwrap();
            fc.put_network_interface(&NetworkInterface::new("eth0", "tap0", "06:00:0a:4e:00:02"))
                .await
                .unwrap();
        });
        let t = Instant::now();
        rt.block_on(fc.instance_start()).unwrap();
        start.push(t.elapsed());
        while !ns.try_exec(&["ping", "-c1", "-W1", "10.78.0.2"]) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the guest never answered ping"
            );
        }
        ping.push(t.elapsed());
        rt.block_on(fc.send_ctrl_alt_del()).unwrap();
        assert!(child.wait().unwrap().success());
    }
    println!("with a network interface (eth0 in the guest namespace, frames copied to the tap):");
    stats("InstanceStart call", start);
    stats("InstanceStart -> guest answers ping", ping);
}
