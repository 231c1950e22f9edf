//! `banger image ...`: the images VMs boot from, as each host's stord registers them.
//!
//! Image paths are paths on the stord host; a relative path is made absolute against the
//! current directory first (useful on a laptop, where the CLI and stord share a file system).
//! stord checks every path (absolute, canonical, a regular readable file, not inside its own
//! state directory, an ext4 rootfs) and refuses bad ones with a message that says why; the
//! CLI prints it and exits with the code of the error (see [`crate::exit`]).
//!
//! Without `--host`, `list` shows every host's images; the other commands talk to the stord of
//! this host (the configured host id) when it answers, else to the only stord there is, and
//! ask for `--host` when there are several.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use banger_bus::RequestError;
use banger_bus::client::ServiceInstance;
use banger_proto::op::store;
use banger_proto::store::{ImageInfo, ImageListRequest, ImageRefRequest, RegisterImageRequest};
use banger_proto::{ApiError, HostId, ImageName, MemMib, service};
use serde::Serialize;

use crate::{App, exit, output};

/// The longest discovery of the stord instances waits for a first `$SRV.PING` answer.
const DISCOVERY_WINDOW: Duration = Duration::from_millis(1000);

/// Image commands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// List registered images (every host's, or one host's with --host)
    List(HostArg),
    /// Show one image
    Show(RefArgs),
    /// Register an image: a kernel and an ext4 root filesystem on the stord host
    Register(RegisterArgs),
    /// Forget an image (refused while a VM uses it; its files are left in place)
    Remove(RefArgs),
    /// Build a guest image (Debian or Void) on this host and register it (needs root)
    #[command(subcommand)]
    Build(super::image_build::BuildCommand),
    /// Check an image file without booting it: fsck, agent, SSH key, services (exit 1 on a failure)
    #[command(
        after_help = "Checks, read from the image file with e2fsck -fn and debugfs (no mount):
  filesystem            e2fsck -fn finds no error
  agent                 /usr/local/bin/banger-agent is a regular, executable file
  agent service         enabled: the systemd symlink in multi-user.target.wants, or the runit link
  ssh key for root      the runtime bundle's key (<state_dir>/ssh/id_ed25519.pub) is authorised
  sshd password login off  the effective PasswordAuthentication of sshd_config is no
  work disk at /root    /etc/fstab mounts a disk at /root

Runs on the host of the image's stord (the file is read locally).
Exit status: 0 every check passed; 1 a check failed (the report names it); 4 image not found."
    )]
    Verify(RefArgs),
}

/// `--host`.
#[derive(Debug, clap::Args)]
pub struct HostArg {
    /// The host whose stord to ask
    #[arg(long, value_name = "HOST")]
    pub host: Option<HostId>,
}

/// An image name and `--host`.
#[derive(Debug, clap::Args)]
pub struct RefArgs {
    /// Image name
    pub name: ImageName,
    #[command(flatten)]
    pub host: HostArg,
}

/// `banger image register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Image name: lowercase letters, digits and '-', up to 63 characters
    pub name: ImageName,
    /// Kernel (uncompressed vmlinux)
    #[arg(long, value_name = "PATH")]
    pub kernel: String,
    /// Root filesystem (an ext4 image)
    #[arg(long, value_name = "PATH")]
    pub rootfs: String,
    /// Initial ramdisk
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<String>,
    /// Kernel command line (stord's default when omitted)
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub kernel_args: Option<String>,
    /// Default work disk size of VMs made from it: MiB, or a size like 512M or 8G
    #[arg(long, value_name = "SIZE", value_parser = parse_disk)]
    pub disk: Option<MemMib>,
    #[command(flatten)]
    host: HostArg,
}

/// An image and the host whose stord holds it (the JSON shape of `list` and `show`).
#[derive(Debug, Serialize)]
struct HostImage<'a> {
    host: &'a str,
    #[serde(flatten)]
    image: &'a ImageInfo,
}

/// Runs an image command.
pub async fn run(app: &App, cmd: ImageCommand) -> anyhow::Result<u8> {
    match cmd {
        ImageCommand::List(a) => list(app, a.host).await,
        ImageCommand::Show(a) => show(app, a).await,
        ImageCommand::Register(a) => register(app, a).await,
        ImageCommand::Remove(a) => remove(app, a).await,
        ImageCommand::Build(c) => super::image_build::build(app, c).await,
        ImageCommand::Verify(a) => super::image_build::verify(app, a).await,
    }
}

/// The stord hosts that answer `$SRV.PING`, sorted.
async fn stord_hosts(app: &App) -> anyhow::Result<Vec<HostId>> {
    let found: Vec<ServiceInstance> = app.bus.ping(Some(service::STORD), DISCOVERY_WINDOW).await?;
    let mut hosts: Vec<HostId> = found
        .iter()
        .filter_map(|i| i.host().and_then(|h| HostId::new(h).ok()))
        .collect();
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

fn no_stord() -> anyhow::Error {
    ApiError::unavailable("no stord answered: is the stack running (`banger up`)?").into()
}

/// The host a single-image command talks to.
pub(crate) async fn target_host(app: &App, host: Option<HostId>) -> anyhow::Result<HostId> {
    if let Some(h) = host {
        return Ok(h);
    }
    let hosts = stord_hosts(app).await?;
    if hosts.contains(&app.config.host) {
        return Ok(app.config.host.clone());
    }
    match hosts.as_slice() {
        [] => Err(no_stord()),
        [only] => Ok(only.clone()),
        many => Err(ApiError::invalid(format!(
            "several hosts run stord ({}); say which with --host",
            many.iter()
                .map(HostId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

async fn list(app: &App, host: Option<HostId>) -> anyhow::Result<u8> {
    let hosts = match host {
        Some(h) => vec![h],
        None => stord_hosts(app).await?,
    };
    if hosts.is_empty() {
        return Err(no_stord());
    }
    let mut images: Vec<(HostId, ImageInfo)> = Vec::new();
    let mut failed: Vec<(HostId, RequestError)> = Vec::new();
    for h in &hosts {
        match app
            .bus
            .call::<store::ImageList>(h, &ImageListRequest {}, app.timeout)
            .await
        {
            Ok(r) => images.extend(r.images.into_iter().map(|i| (h.clone(), i))),
            Err(e) => failed.push((h.clone(), e)),
        }
    }
    // One host asked and it failed: that is the command's error.
    if hosts.len() == 1
        && let Some((_, e)) = failed.pop()
    {
        return Err(e.into());
    }
    images.sort_by(|a, b| (&a.1.name, &a.0).cmp(&(&b.1.name, &b.0)));
    if app.json {
        let rows: Vec<HostImage<'_>> = images
            .iter()
            .map(|(h, i)| HostImage {
                host: h.as_str(),
                image: i,
            })
            .collect();
        let unreachable: Vec<&str> = failed.iter().map(|(h, _)| h.as_str()).collect();
        output::print_json(&serde_json::json!({
            "images": rows,
            "unreachable_hosts": unreachable,
        }))?;
    } else {
        let rows: Vec<Vec<String>> = images
            .iter()
            .map(|(h, i)| {
                vec![
                    i.name.to_string(),
                    h.to_string(),
                    format_bytes(i.rootfs_bytes),
                    format_mib(i.default_disk_mib),
                    i.rootfs.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["NAME", "HOST", "ROOTFS SIZE", "DISK", "ROOTFS"], &rows)
        );
    }
    for (h, e) in &failed {
        eprintln!("warning: host {h} did not answer: {e}");
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

async fn show(app: &App, a: RefArgs) -> anyhow::Result<u8> {
    let host = target_host(app, a.host.host).await?;
    let info = app
        .bus
        .call::<store::ImageShow>(&host, &ImageRefRequest { name: a.name }, app.timeout)
        .await?;
    print_image(app, &host, &info)?;
    Ok(exit::OK)
}

async fn register(app: &App, a: RegisterArgs) -> anyhow::Result<u8> {
    let host = target_host(app, a.host.host).await?;
    let req = RegisterImageRequest {
        name: a.name,
        kernel: absolute(&a.kernel)?,
        initrd: a.initrd.as_deref().map(absolute).transpose()?,
        rootfs: absolute(&a.rootfs)?,
        kernel_args: a.kernel_args,
        default_disk_mib: a.disk,
    };
    let info = app
        .bus
        .call::<store::ImageRegister>(&host, &req, app.timeout)
        .await?;
    if !app.json {
        println!("registered image {} on {host}", info.name);
    }
    print_image(app, &host, &info)?;
    Ok(exit::OK)
}

async fn remove(app: &App, a: RefArgs) -> anyhow::Result<u8> {
    let host = target_host(app, a.host.host).await?;
    let r = app
        .bus
        .call::<store::ImageRemove>(&host, &ImageRefRequest { name: a.name }, app.timeout)
        .await?;
    if app.json {
        output::print_json(&serde_json::json!({ "host": host.as_str(), "removed": r.name }))?;
    } else {
        println!(
            "removed image {} from {host} (its files were left in place)",
            r.name
        );
    }
    Ok(exit::OK)
}

fn print_image(app: &App, host: &HostId, i: &ImageInfo) -> anyhow::Result<()> {
    if app.json {
        return output::print_json(&HostImage {
            host: host.as_str(),
            image: i,
        });
    }
    let rows = [
        ("name", i.name.to_string()),
        ("host", host.to_string()),
        ("kernel", i.kernel.clone()),
        ("initrd", i.initrd.clone().unwrap_or_else(|| "-".into())),
        (
            "rootfs",
            format!("{} ({})", i.rootfs, format_bytes(i.rootfs_bytes)),
        ),
        ("kernel args", i.kernel_args.clone()),
        (
            "work disk",
            format!("{} by default", format_mib(i.default_disk_mib)),
        ),
        ("registered", format_age(i.created_at_ms)),
    ];
    for (k, v) in rows {
        println!("{:<12} {v}", format!("{k}:"));
    }
    Ok(())
}

/// Makes `p` absolute against the current directory (no symlinks resolved: stord does that on
/// its host).
fn absolute(p: &str) -> anyhow::Result<String> {
    if p.is_empty() {
        return Ok(String::new()); // stord says "the ... path is empty"
    }
    let abs = std::path::absolute(Path::new(p))
        .with_context(|| format!("making {p:?} an absolute path"))?;
    Ok(abs.to_string_lossy().into_owned())
}

/// Parses `--disk`: MiB as a number (`4096`) or a size with a unit (`512M`, `8G`, `1T`).
pub(crate) fn parse_disk(s: &str) -> Result<MemMib, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shape = || format!("the disk size must be MiB or a size like 512M or 8G, got {s:?}");
    let n: i64 = num.parse().map_err(|_| shape())?;
    let factor: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(shape()),
    };
    let mib = n.checked_mul(factor).ok_or_else(shape)?;
    MemMib::new(mib).map_err(|e| e.to_string())
}

/// `512M`, `8G`, `1536M`.
fn format_mib(mib: MemMib) -> String {
    let v = mib.get();
    if v.is_multiple_of(1024) {
        format!("{}G", v / 1024)
    } else {
        format!("{v}M")
    }
}

/// Bytes in binary units with one decimal: `1.0G`, `64.0M`, `512B`.
fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if b >= size {
            let tenths = b.saturating_mul(10) / size;
            return format!("{}.{}{unit}", tenths / 10, tenths % 10);
        }
    }
    format!("{b}B")
}

/// How long ago `ms` (milliseconds since the epoch) was: `5s ago`, `3m ago`, `2h ago`, `4d ago`.
fn format_age(ms: u64) -> String {
    let secs = banger_bus::now_ms().saturating_sub(ms) / 1000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes_parse_with_units_and_bad_ones_are_refused() {
        assert_eq!(parse_disk("4096").unwrap().get(), 4096);
        assert_eq!(parse_disk("512M").unwrap().get(), 512);
        assert_eq!(parse_disk("8g").unwrap().get(), 8192);
        assert_eq!(parse_disk("1T").unwrap().get(), 1 << 20);
        for bad in ["", "0", "-5", "5X", "G", "2T"] {
            assert!(parse_disk(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_print_the_way_people_write_them() {
        assert_eq!(format_mib(MemMib::new(8192).unwrap()), "8G");
        assert_eq!(format_mib(MemMib::new(1536).unwrap()), "1536M");
        assert_eq!(format_bytes(1 << 30), "1.0G");
        assert_eq!(format_bytes(96 << 20), "96.0M");
        assert_eq!(format_bytes(1536), "1.5K");
        assert_eq!(format_bytes(10), "10B");
    }

    #[test]
    fn relative_paths_become_absolute() {
        let p = absolute("images/vmlinux").unwrap();
        assert!(Path::new(&p).is_absolute(), "{p}");
        assert!(p.ends_with("images/vmlinux"), "{p}");
        assert_eq!(absolute("/abs/path").unwrap(), "/abs/path");
    }
}
