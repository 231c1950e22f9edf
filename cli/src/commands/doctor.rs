//! `banger doctor`: preflight checks, each with a clear fix. The exit code says whether this
//! host is ready to run real VMs (0) or not (1); warnings do not fail it.

use std::path::Path;
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::CommonConfig;
use serde::Serialize;

use crate::{exit, output};

/// How long discovery and stats collection wait for answers.
const WINDOW: Duration = Duration::from_millis(500);
/// Clock skew between hosts above which lease times, logs and traces stop lining up.
const MAX_SKEW_MS: i64 = 500;
/// Free space below which VM roots and work disks will soon fail to allocate.
const MIN_FREE_BYTES: u64 = 2 << 30;

/// Flags of `banger doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but not as well as it could.
    Warn,
    /// Blocks running real VMs.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Outcome.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, level: Level, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
    }
}

/// Runs every check; bus checks are skipped (and say so) when the bus is unreachable.
pub async fn run(config: &CommonConfig, json: bool) -> anyhow::Result<u8> {
    let mut checks = local_checks(config);
    checks.extend(bus_checks(config).await);
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if json {
        output::print_json(&serde_json::json!({ "ready": !failed, "checks": checks }))?;
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                let level = match c.level {
                    Level::Ok => "ok",
                    Level::Warn => "warn",
                    Level::Fail => "FAIL",
                };
                vec![level.to_owned(), c.name.to_owned(), c.detail.clone()]
            })
            .collect();
        print!("{}", output::table(&["", "CHECK", "DETAIL"], &rows));
        let fixes: Vec<&Check> = checks.iter().filter(|c| c.fix.is_some()).collect();
        if !fixes.is_empty() {
            println!("\nHow to fix:");
            for c in fixes {
                println!("  {}: {}", c.name, c.fix.as_deref().unwrap_or_default());
            }
        }
        println!(
            "\n{}",
            if failed {
                "This host is not ready to run real VMs (`banger up` falls back to the simulator)."
            } else {
                "This host is ready."
            }
        );
    }
    Ok(if failed { exit::FAILURE } else { exit::OK })
}

fn local_checks(config: &CommonConfig) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => check("kvm", Level::Ok, "/dev/kvm is usable", None),
        Err(e) => check(
            "kvm",
            Level::Fail,
            format!("/dev/kvm: {e}"),
            Some("enable virtualisation (VT-x/AMD-V, or nested virtualisation) and load kvm_intel or kvm_amd"),
        ),
    });
    out.push(
        match std::process::Command::new("firecracker")
            .arg("--version")
            .output()
        {
            Ok(o) if o.status.success() => check(
                "firecracker",
                Level::Ok,
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                None,
            ),
            _ => check(
                "firecracker",
                Level::Fail,
                "no firecracker binary on PATH",
                Some("install a Firecracker release binary as /usr/local/bin/firecracker"),
            ),
        },
    );
    out.push(if Path::new("/dev/net/tun").exists() {
        check("tun", Level::Ok, "/dev/net/tun present", None)
    } else {
        check(
            "tun",
            Level::Fail,
            "/dev/net/tun missing",
            Some("modprobe tun"),
        )
    });
    out.push(
        match std::process::Command::new("nft").arg("--version").output() {
            Ok(o) if o.status.success() => check(
                "nftables",
                Level::Ok,
                String::from_utf8_lossy(&o.stdout).trim().to_owned(),
                None,
            ),
            _ => check(
                "nftables",
                Level::Fail,
                "nft not found",
                Some("apt-get install nftables"),
            ),
        },
    );
    out.push(
        match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
            Ok(v) if v.trim() == "1" => check("ip-forwarding", Level::Ok, "enabled", None),
            _ => check(
                "ip-forwarding",
                Level::Warn,
                "disabled (netd enables it when it starts)",
                None,
            ),
        },
    );
    out.push(super::doctor_forward::forward_policy_check(config));
    out.push(if Path::new("/dev/mapper/control").exists() {
        check(
            "device-mapper",
            Level::Ok,
            "/dev/mapper/control present: O(1) snapshots",
            None,
        )
    } else {
        check(
            "device-mapper",
            Level::Warn,
            "no device-mapper in this kernel: VM roots use reflink or sparse copies",
            Some("load dm_mod (modprobe dm_snapshot) for O(1) copy-on-write roots"),
        )
    });
    let dir = existing_ancestor(&config.state_dir);
    out.push(match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let detail = format!("{} GiB free in {}", free >> 30, dir.display());
            if free < MIN_FREE_BYTES {
                check(
                    "disk",
                    Level::Warn,
                    detail,
                    Some("free space in the state dir"),
                )
            } else {
                check("disk", Level::Ok, detail, None)
            }
        }
        Err(e) => check("disk", Level::Warn, format!("{}: {e}", dir.display()), None),
    });
    out.push(super::doctor_exposure::check(config));
    out
}

fn existing_ancestor(p: &Path) -> std::path::PathBuf {
    p.ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

async fn bus_checks(config: &CommonConfig) -> Vec<Check> {
    let connected = tokio::time::timeout(
        Duration::from_secs(3),
        banger_bus::connect::connect(&config.nats, false),
    )
    .await;
    let client = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return vec![check(
                "nats",
                Level::Fail,
                banger_bus::runtime::chain(&e),
                Some("start the stack with `banger up`, or check --nats-url and credentials"),
            )];
        }
        Err(_) => {
            return vec![check(
                "nats",
                Level::Fail,
                format!("no answer from {}", config.nats.urls.join(",")),
                Some("start the stack with `banger up`, or check --nats-url"),
            )];
        }
    };
    let mut out = vec![check(
        "nats",
        Level::Ok,
        format!("connected to {} (auth ok)", config.nats.urls.join(",")),
        None,
    )];
    let bus = Bus::new(client, config.subjects.clone());
    let found = bus.ping(None, WINDOW).await.unwrap_or_default();
    for svc in banger_proto::service::ALL {
        let hosts: Vec<String> = found
            .iter()
            .filter(|s| s.name == *svc)
            .filter_map(|s| s.host().map(str::to_owned))
            .collect();
        out.push(if hosts.is_empty() {
            check(
                "service",
                Level::Fail,
                format!("{svc}: no instance answers $SRV.PING"),
                Some("start it (`banger up` on a single host) and check its log"),
            )
        } else {
            check(
                "service",
                Level::Ok,
                format!("{svc} on {}", hosts.join(", ")),
                None,
            )
        });
    }
    out.push(skew_check(&bus).await);
    out.extend(storage_checks(&bus, config).await);
    out
}

/// How long a request to this host's stord may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// This host's storage back-end and images, from its stord. Kernels are checked only for real
/// Firecracker: the simulator boots none.
async fn storage_checks(bus: &Bus, config: &CommonConfig) -> Vec<Check> {
    use banger_proto::op::store;
    use banger_proto::store::{CapabilitiesRequest, ImageListRequest};
    let host = &config.host;
    let mut out = Vec::new();
    let caps = bus
        .call::<store::Capabilities>(host, &CapabilitiesRequest {}, STORE_TIMEOUT)
        .await;
    match caps {
        Ok(c) => {
            let missing: Vec<String> = c
                .unsupported
                .iter()
                .map(|(b, why)| format!("{b}: {why}"))
                .collect();
            let detail = if missing.is_empty() {
                format!("VM roots use {}", c.backend)
            } else {
                format!("VM roots use {} ({})", c.backend, missing.join("; "))
            };
            out.push(check(
                "storage",
                if c.backend == "sparse" {
                    Level::Warn
                } else {
                    Level::Ok
                },
                detail,
                (c.backend == "sparse").then_some(
                    "roots are full copies: put the state dir on btrfs or xfs (reflink) or load \
                     the dm-snapshot module for instant copy-on-write roots",
                ),
            ));
        }
        // The service check above already says stord does not answer.
        Err(_) => return out,
    }
    let images = bus
        .call::<store::ImageList>(host, &ImageListRequest {}, STORE_TIMEOUT)
        .await;
    let Ok(images) = images else { return out };
    if images.images.is_empty() {
        out.push(check(
            "images",
            Level::Warn,
            format!("no image registered on {host}"),
            Some("register one: banger image register NAME --kernel vmlinux --rootfs rootfs.ext4"),
        ));
        return out;
    }
    let real_vmm = config
        .file_table()
        .get("stack")
        .and_then(|t| t.get("vmm"))
        .and_then(toml::Value::as_str)
        != Some("sim");
    for image in &images.images {
        out.push(if !real_vmm {
            check(
                "images",
                Level::Ok,
                format!(
                    "{}: registered (kernel not checked: the simulator boots none)",
                    image.name
                ),
                None,
            )
        } else {
            match kernel_problem(Path::new(&image.kernel)) {
                None => check(
                    "images",
                    Level::Ok,
                    format!("{}: kernel is an x86_64 ELF vmlinux", image.name),
                    None,
                ),
                Some(why) => check(
                    "images",
                    Level::Fail,
                    format!("{}: {why}", image.name),
                    Some(
                        "Firecracker boots an uncompressed x86_64 ELF vmlinux, not a bzImage: \
                         extract one with the kernel tree's scripts/extract-vmlinux, or use a \
                         kernel built with Firecracker's guest config",
                    ),
                ),
            }
        });
    }
    out
}

/// Why `path` is not a kernel Firecracker can boot on x86_64, if it is not.
fn kernel_problem(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut head = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if let Err(e) = read {
        return Some(format!(
            "kernel {} cannot be read here: {e}",
            path.display()
        ));
    }
    if &head[..4] != b"\x7fELF" {
        return Some(format!(
            "kernel {} is not an ELF file (a compressed bzImage?)",
            path.display()
        ));
    }
    // e_machine, little-endian at offset 18: 0x3e is x86_64.
    if head[18] != 0x3e || head[19] != 0 {
        return Some(format!(
            "kernel {} is an ELF file for another machine",
            path.display()
        ));
    }
    None
}

/// Compares each service's clock (its `$SRV.STATS` answer's `now_ms`) with ours.
async fn skew_check(bus: &Bus) -> Check {
    let before = banger_bus::now_ms();
    let stats = bus
        .service_verb(banger_proto::service::SRV_STATS.to_owned(), WINDOW)
        .await;
    let after = banger_bus::now_ms();
    let Ok(stats) = stats else {
        return check(
            "clock-skew",
            Level::Warn,
            "could not collect $SRV.STATS",
            None,
        );
    };
    // The answer was produced between `before` and `after`; the midpoint bounds the error by
    // half the collection window.
    let mid = i64::try_from(before / 2 + after / 2).unwrap_or(i64::MAX);
    let mut worst: Option<(String, i64)> = None;
    for s in &stats {
        let host = s["metadata"]["host"].as_str().unwrap_or("?").to_owned();
        let Some(now) = s["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find_map(|e| e["data"]["now_ms"].as_i64()))
        else {
            continue;
        };
        let skew = now - mid;
        if worst.as_ref().is_none_or(|(_, w)| skew.abs() > w.abs()) {
            worst = Some((host, skew));
        }
    }
    match worst {
        None => check(
            "clock-skew",
            Level::Warn,
            "no service reported its clock",
            None,
        ),
        Some((host, skew))
            if skew.abs() > MAX_SKEW_MS + i64::try_from(WINDOW.as_millis()).unwrap_or(0) =>
        {
            check(
                "clock-skew",
                Level::Warn,
                format!("host {host} is {skew} ms off this host's clock"),
                Some("run chrony or systemd-timesyncd on every lab host"),
            )
        }
        Some((host, skew)) => check(
            "clock-skew",
            Level::Ok,
            format!("largest: {skew} ms ({host})"),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::kernel_problem;

    #[test]
    fn only_an_x86_64_elf_passes_as_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux");
        let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
        bytes.resize(18, 0);
        bytes.extend_from_slice(&[0x3e, 0x00, 1, 0]);
        std::fs::write(&elf, &bytes).unwrap();
        assert_eq!(kernel_problem(&elf), None);

        let arm = dir.path().join("arm");
        bytes[18] = 0xb7;
        std::fs::write(&arm, &bytes).unwrap();
        assert!(kernel_problem(&arm).unwrap().contains("another machine"));

        let bz = dir.path().join("bzImage");
        std::fs::write(&bz, b"MZ\x00\x00 not an elf file at all").unwrap();
        assert!(kernel_problem(&bz).unwrap().contains("not an ELF"));

        assert!(
            kernel_problem(&dir.path().join("missing"))
                .unwrap()
                .contains("cannot be read")
        );
    }
}
