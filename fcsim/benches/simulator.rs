//! Simulator timings (not a real Firecracker: no guest kernel boots here).
//!
//! - spawn -> API ready: process start until the API socket accepts;
//! - config + InstanceStart -> agent healthy: machine-config, boot-source, two drives (an ext4
//!   root, a plain work disk), vsock, InstanceStart (as root: the guest network namespace is
//!   made, `lo` only, no network interface), then polling `/healthz` through hybrid vsock until
//!   it answers;
//! - SendCtrlAltDel -> exit: until the process has exited (agent stopped, sockets removed).
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
use banger_firecracker::models::{BootSource, Drive, MachineConfiguration, Vsock};

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
    std::fs::File::create(&root).unwrap().set_len(4 << 20).unwrap();
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
}
