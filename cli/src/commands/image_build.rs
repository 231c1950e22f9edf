//! `banger image build debian|void` and `banger image verify`: guest images made and checked on
//! this host, the one that runs stord (the build needs root for debootstrap and chroot).
//!
//! The build itself is the `banger-imagebuild` crate; this module turns flags into a
//! [`BuildSpec`], shows each stage through [`crate::progress`], cancels the build on Ctrl-C, and
//! registers the result with stord (`image.register`). A build that fails or is cancelled leaves
//! nothing behind: no scratch files, no mount, no image file, no registration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use banger_imagebuild::spec::{BUNDLE_PUBLIC_KEY, DEFAULT_MIRROR, DEFAULT_SUITE};
use banger_imagebuild::{BuildError, BuildSpec, Family, ImageSize, Stage, Suite};
use banger_proto::op::store;
use banger_proto::store::{ImageInfo, ImageRefRequest, RegisterImageRequest};
use banger_proto::{ApiError, ErrorCode, ImageName};
use serde::Serialize;

use super::image::{HostArg, RefArgs, target_host};
use crate::progress::Progress;
use crate::{App, exit, output};

/// Where a kernel is looked for when `--kernel` is not given, relative to the state directory.
const DEFAULT_KERNEL: &str = "kernels/vmlinux";

/// `banger image build`.
#[derive(Debug, clap::Subcommand)]
pub enum BuildCommand {
    /// Build a Debian image with debootstrap (the default image family)
    #[command(after_help = BUILD_HELP)]
    Debian(DebianArgs),
    /// Build a Void Linux image from a Void rootfs tarball you downloaded
    #[command(after_help = BUILD_HELP)]
    Void(VoidArgs),
}

const BUILD_HELP: &str = "\
Runs on the host that runs stord, as root. Stages: validate, debootstrap (or unpack), customise, \
mkfs, verify, register. The image gets the banger agent and its service, OpenSSH with the runtime \
bundle's key (<state_dir>/ssh/id_ed25519.pub, made by ./scripts/setup) for root and password \
login off, root's shell skeleton, a serial console on ttyS0, networking from the kernel's ip= \
argument, and the work disk mounted at /root. The image is written to \
<state_dir>/images/<name>.ext4; scratch work happens beside it and is removed, whatever happens \
(Ctrl-C included).

Examples:
  banger image build debian --kernel /srv/vmlinux
  banger image build debian --suite trixie --size 8G --dev-baseline --packages python3,golang
  banger image build void --rootfs-tarball void-x86_64-ROOTFS-20250202.tar.xz --kernel /srv/vmlinux

Exit status: 0 built and registered; 2 bad input (nothing was done); 1 a stage failed.";

/// `banger image build debian`.
#[derive(Debug, clap::Args)]
pub struct DebianArgs {
    /// Debian suite: bookworm, trixie, bullseye or sid
    #[arg(long, value_name = "SUITE", default_value = DEFAULT_SUITE)]
    pub suite: Suite,
    /// Debian mirror to bootstrap from
    #[arg(long, value_name = "URL", default_value = DEFAULT_MIRROR)]
    pub mirror: String,
    /// Take the packages from a tarball made by `debootstrap --make-tarball` (same suite and
    /// packages, see imagebuild/README.md) instead of the mirror: offline builds, CI caches
    #[arg(long, value_name = "PATH")]
    pub debootstrap_tarball: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonBuildArgs,
}

/// `banger image build void`.
#[derive(Debug, clap::Args)]
pub struct VoidArgs {
    /// The Void rootfs tarball (void-x86_64-ROOTFS-<date>.tar.xz from voidlinux.org)
    #[arg(long, value_name = "PATH")]
    pub rootfs_tarball: PathBuf,
    /// xbps repository for --packages and --dev-baseline (Void's default when omitted)
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    #[command(flatten)]
    pub common: CommonBuildArgs,
}

/// Flags of both families.
#[derive(Debug, clap::Args)]
pub struct CommonBuildArgs {
    /// Image name (default: the family, `debian` or `void`)
    #[arg(long, value_name = "NAME")]
    pub name: Option<ImageName>,
    /// Image size: MiB or a size like 2G (sparse; at least 256M)
    #[arg(long, value_name = "SIZE", default_value = "4G")]
    pub size: ImageSize,
    /// Extra packages, comma-separated
    #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Add a language-agnostic developer baseline (git, curl, build-essential, jq, tmux, ...)
    #[arg(long)]
    pub dev_baseline: bool,
    /// Kernel to register with the image (uncompressed vmlinux; default <state_dir>/kernels/vmlinux)
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Default work disk size of VMs made from it: MiB, or a size like 512M or 8G
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    #[command(flatten)]
    pub host: HostArg,
}

/// What `--json` prints after a build.
#[derive(Debug, Serialize)]
struct BuildOutput<'a> {
    host: &'a str,
    image: &'a ImageInfo,
    checks: &'a [banger_imagebuild::Check],
    stage_secs: Vec<(&'static str, f64)>,
}

/// Reports the build's stages on the CLI's progress spinner (or as plain lines).
struct StageProgress {
    progress: Progress,
    plan: [Stage; 6],
}

impl StageProgress {
    fn position(&self, stage: Stage) -> String {
        let i = self.plan.iter().position(|s| *s == stage).unwrap_or(0) + 1;
        format!("[{i}/{}] {stage}", self.plan.len())
    }
}

impl banger_imagebuild::Progress for StageProgress {
    fn start(&self, stage: Stage, what: &str) {
        let line = format!("{}: {what}", self.position(stage));
        if self.progress.is_shown() {
            self.progress.set_message(line);
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self, stage: Stage, took: Duration, detail: &str) {
        self.progress.eprintln(format!(
            "{}: done in {} ({detail})",
            self.position(stage),
            format_duration(took)
        ));
    }
}

/// `95.2s`, `2m31s`.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The SSH public key images trust: `<state_dir>/ssh/id_ed25519.pub`.
fn bundle_key(app: &App) -> PathBuf {
    app.config.state_dir.join(BUNDLE_PUBLIC_KEY)
}

fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    ApiError::invalid(e.to_string()).into()
}

/// Maps a build error to the CLI's: bad input is `invalid_argument` (exit 2), an existing
/// output `conflict`, the rest a failure with the stage named.
fn build_error(e: BuildError) -> anyhow::Error {
    match e {
        BuildError::Invalid(m) => ApiError::invalid(m).into(),
        BuildError::Conflict(m) => ApiError::conflict(m).into(),
        other => anyhow::anyhow!("image build failed: {other}"),
    }
}

/// Runs `banger image build`.
pub async fn build(app: &App, cmd: BuildCommand) -> anyhow::Result<u8> {
    let (family, common, default_name) = match cmd {
        BuildCommand::Debian(a) => (
            Family::Debian {
                suite: a.suite,
                mirror: a.mirror,
                tarball: a
                    .debootstrap_tarball
                    .as_deref()
                    .map(std::path::absolute)
                    .transpose()
                    .map_err(invalid)?,
            },
            a.common,
            "debian",
        ),
        BuildCommand::Void(a) => (
            Family::Void {
                tarball: std::path::absolute(&a.rootfs_tarball).map_err(invalid)?,
                mirror: a.mirror,
            },
            a.common,
            "void",
        ),
    };
    let name = match common.name {
        Some(n) => n,
        None => ImageName::new(default_name).map_err(invalid)?,
    };
    let kernel = match &common.kernel {
        Some(k) => std::path::absolute(k).map_err(invalid)?,
        None => app.config.state_dir.join(DEFAULT_KERNEL),
    };
    if std::fs::File::open(&kernel).is_err() || !kernel.is_file() {
        return Err(invalid(format!(
            "no kernel at {}: pass --kernel PATH (an uncompressed x86_64 vmlinux built for \
             Firecracker; `banger doctor` says how to get one)",
            kernel.display()
        )));
    }
    if let Some(why) = not_a_firecracker_kernel(&kernel) {
        eprintln!(
            "warning: {} {why}: Firecracker boots only an uncompressed x86_64 ELF vmlinux (see \
             Firecracker's docs/rootfs-and-kernel-setup.md); the simulator boots no kernel and \
             does not mind",
            kernel.display()
        );
    }
    let disk = common
        .disk
        .as_deref()
        .map(super::image::parse_disk)
        .transpose()
        .map_err(invalid)?;
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("finding banger: {e}"))?;
    let spec = BuildSpec {
        name: name.to_string(),
        family,
        size: common.size,
        packages: common.packages,
        dev_baseline: common.dev_baseline,
        state_dir: app.config.state_dir.clone(),
        ssh_public_key: bundle_key(app),
        agent_bin: banger_imagebuild::agent_beside(&exe),
    };
    // Everything that can be checked before the long part: the inputs, then stord (it must
    // answer, and must not have the name already).
    spec.validate().map_err(build_error)?;
    let host = target_host(app, common.host.host).await?;
    match app
        .bus
        .call::<store::ImageShow>(&host, &ImageRefRequest { name: name.clone() }, app.timeout)
        .await
    {
        Ok(_) => {
            return Err(ApiError::conflict(format!(
                "image {name} is already registered on {host}: pick another --name or \
                 `banger image remove {name}` first"
            ))
            .into());
        }
        Err(e) if e.code() == ErrorCode::NotFound => {}
        Err(e) => return Err(e.into()),
    }

    let plan = Stage::plan(&spec.family);
    let progress = Arc::new(StageProgress {
        progress: if app.json {
            Progress::hidden()
        } else {
            Progress::start("building")
        },
        plan,
    });
    let cancel = Arc::new(banger_imagebuild::Cancel::new());
    // Listen for Ctrl-C and SIGTERM before the build starts, so a signal that comes at once is
    // not lost (a listener only sees signals delivered after it was made).
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("installing the SIGTERM handler: {e}"))?;
    let built = {
        let (spec, worker_cancel, progress) =
            (spec.clone(), Arc::clone(&cancel), Arc::clone(&progress));
        let mut task = tokio::task::spawn_blocking(move || {
            banger_imagebuild::build(&spec, &worker_cancel, &*progress)
        });
        tokio::select! {
            r = &mut task => r,
            _ = sigint.recv() => { cancel.cancel(); task.await }
            _ = sigterm.recv() => { cancel.cancel(); task.await }
        }
        .map_err(|e| anyhow::anyhow!("the build thread failed: {e}"))?
        .map_err(build_error)?
    };

    let stage = progress.position(Stage::Register);
    progress
        .progress
        .set_message(format!("{stage}: registering {name} with stord on {host}"));
    let req = RegisterImageRequest {
        name: name.clone(),
        kernel: kernel.to_string_lossy().into_owned(),
        initrd: None,
        rootfs: built.rootfs.to_string_lossy().into_owned(),
        kernel_args: None,
        default_disk_mib: disk,
    };
    let info = match app
        .bus
        .call::<store::ImageRegister>(&host, &req, app.timeout)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            // Nothing half-done: the image file goes when it cannot be registered.
            let _ = std::fs::remove_file(&built.rootfs);
            return Err(anyhow::Error::from(e).context(format!(
                "registering the built image with stord on {host} (the image file was removed)"
            )));
        }
    };
    if app.json {
        return output::print_json(&BuildOutput {
            host: host.as_str(),
            image: &info,
            checks: &built.report.checks,
            stage_secs: built
                .timings
                .iter()
                .map(|(s, d)| (s.as_str(), d.as_secs_f64()))
                .collect(),
        })
        .map(|()| exit::OK);
    }
    progress
        .progress
        .eprintln(format!("{stage}: done ({name} on {host})"));
    let total: Duration = built.timings.iter().map(|(_, d)| *d).sum();
    println!(
        "built and registered image {name} on {host} in {}: {} ({})",
        format_duration(total),
        info.rootfs,
        ImageSize::from_mib(info.rootfs_bytes >> 20)
            .map(|s| s.to_string())
            .unwrap_or_else(|_| format!("{} bytes", info.rootfs_bytes))
    );
    println!("create a VM from it: banger vm create NAME --image {name}");
    Ok(exit::OK)
}

/// Why the file at `path` is not a kernel Firecracker can boot (an uncompressed x86_64 ELF),
/// or `None` when it looks like one.
fn not_a_firecracker_kernel(path: &std::path::Path) -> Option<&'static str> {
    use std::io::Read as _;
    let mut head = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_err() || &head[..4] != b"\x7fELF" {
        return Some("is not an ELF file (a bzImage or compressed kernel?)");
    }
    // e_machine (bytes 18-19, little-endian): 0x3e is x86-64.
    if head[5] != 1 || u16::from_le_bytes([head[18], head[19]]) != 0x3e {
        return Some("is an ELF file but not an x86_64 one");
    }
    None
}

/// Runs `banger image verify NAME`.
pub async fn verify(app: &App, a: RefArgs) -> anyhow::Result<u8> {
    let host = target_host(app, a.host.host).await?;
    let info = app
        .bus
        .call::<store::ImageShow>(
            &host,
            &ImageRefRequest {
                name: a.name.clone(),
            },
            app.timeout,
        )
        .await?;
    let rootfs = PathBuf::from(&info.rootfs);
    if !rootfs.is_file() {
        return Err(ApiError::unavailable(format!(
            "the root file system {} of image {} is not on this machine: run `banger image \
             verify` on {host}, the host of its stord",
            info.rootfs, info.name
        ))
        .into());
    }
    let key = std::fs::read_to_string(bundle_key(app)).ok();
    let report = tokio::task::spawn_blocking(move || {
        banger_imagebuild::verify::verify(&rootfs, key.as_deref())
    })
    .await
    .map_err(|e| anyhow::anyhow!("the verify thread failed: {e}"))??;
    if app.json {
        output::print_json(&serde_json::json!({
            "host": host.as_str(),
            "name": info.name,
            "rootfs": info.rootfs,
            "passed": report.passed(),
            "checks": report.checks,
        }))?;
    } else {
        print!("{}", render_report(info.name.as_str(), &report));
    }
    Ok(if report.passed() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// The report as people read it: one line per check, then a verdict naming what failed.
fn render_report(name: &str, report: &banger_imagebuild::Report) -> String {
    let mut s = format!("image {name}: {}\n", report.image.display());
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let mut lines = c.detail.lines();
        let first = lines.next().unwrap_or("");
        s.push_str(&format!(
            "  {:<4}  {:<width$}  {first}\n",
            if c.ok { "ok" } else { "FAIL" },
            c.name
        ));
        for l in lines {
            s.push_str(&format!("        {:<width$}  {l}\n", ""));
        }
    }
    let failed: Vec<&str> = report.failed().map(|c| c.name).collect();
    if failed.is_empty() {
        s.push_str(&format!(
            "verify: all {} checks passed\n",
            report.checks.len()
        ));
    } else {
        s.push_str(&format!(
            "verify: {} of {} checks failed: {}\n",
            failed.len(),
            report.checks.len(),
            failed.join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::Cli;
    use crate::commands::Command;
    use crate::commands::image::ImageCommand;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("banger").chain(args.iter().copied()))
    }

    #[test]
    fn debian_defaults_are_bookworm_4g_and_the_debian_mirror() {
        let cli = parse(&["image", "build", "debian"]).unwrap();
        let Command::Image(ImageCommand::Build(BuildCommand::Debian(a))) = cli.command else {
            panic!("not a debian build");
        };
        assert_eq!(a.suite.as_str(), "bookworm");
        assert_eq!(a.mirror, DEFAULT_MIRROR);
        assert_eq!(a.common.size.mib(), 4096);
        assert!(a.common.packages.is_empty());
        assert!(!a.common.dev_baseline);
    }

    #[test]
    fn packages_split_on_commas() {
        let cli = parse(&[
            "image",
            "build",
            "debian",
            "--packages",
            "git,curl",
            "--size",
            "2G",
            "--dev-baseline",
        ])
        .unwrap();
        let Command::Image(ImageCommand::Build(BuildCommand::Debian(a))) = cli.command else {
            panic!("not a debian build");
        };
        assert_eq!(a.common.packages, ["git", "curl"]);
        assert_eq!(a.common.size.mib(), 2048);
        assert!(a.common.dev_baseline);
    }

    #[test]
    fn an_unknown_suite_or_a_tiny_size_is_a_usage_error() {
        let e = parse(&["image", "build", "debian", "--suite", "buster"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("unknown Debian suite"), "{e}");
        let e = parse(&["image", "build", "debian", "--size", "64M"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("too small"), "{e}");
    }

    #[test]
    fn void_needs_its_tarball() {
        assert!(parse(&["image", "build", "void"]).is_err());
        let cli = parse(&["image", "build", "void", "--rootfs-tarball", "v.tar.xz"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Image(ImageCommand::Build(BuildCommand::Void(_)))
        ));
    }

    #[test]
    fn the_report_names_what_failed() {
        let report = banger_imagebuild::Report {
            image: "/var/lib/banger/images/debian.ext4".into(),
            checks: vec![
                banger_imagebuild::Check {
                    name: "filesystem",
                    ok: true,
                    detail: "e2fsck -fn: clean".into(),
                },
                banger_imagebuild::Check {
                    name: "agent",
                    ok: false,
                    detail: "/usr/local/bin/banger-agent is missing".into(),
                },
            ],
        };
        let text = render_report("debian", &report);
        assert!(
            text.contains("  ok    filesystem  e2fsck -fn: clean\n"),
            "{text}"
        );
        assert!(
            text.contains("  FAIL  agent       /usr/local/bin/banger-agent is missing\n"),
            "{text}"
        );
        assert!(
            text.ends_with("verify: 1 of 2 checks failed: agent\n"),
            "{text}"
        );
    }

    #[test]
    fn only_an_x86_64_elf_counts_as_a_firecracker_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "not a kernel").unwrap();
        assert!(not_a_firecracker_kernel(&p).unwrap().contains("not an ELF"));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[5] = 1;
        elf[18] = 0x3e;
        std::fs::write(&p, &elf).unwrap();
        assert_eq!(not_a_firecracker_kernel(&p), None);
        elf[18] = 0xb7; // aarch64
        std::fs::write(&p, &elf).unwrap();
        assert!(
            not_a_firecracker_kernel(&p)
                .unwrap()
                .contains("not an x86_64")
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(95_250)), "1m35s");
        assert_eq!(format_duration(Duration::from_millis(2_500)), "2.5s");
    }
}
