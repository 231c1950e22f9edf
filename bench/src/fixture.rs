//! The stack under test and the means to time commands against it.
//!
//! The stack is the e2e suite's: [`banger_e2e::Stack`] runs `banger up --vmm sim` in a private
//! network namespace with its own bridge, subnet, NATS port and state directory, and tears all
//! of it down when dropped. Every timed command, ours and the references alike, runs through
//! `ip netns exec` into that namespace, so both pay the same process-launch cost.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_e2e::Stack;
use banger_testkit::otlp::OtlpReceiver;
use banger_testkit::{have_program, is_root};

/// The image every benchmark VM boots.
pub(crate) const IMAGE: &str = "debian";
/// Work disk size of a VM created without `--disk` from an image registered without one
/// (stord's `DEFAULT_DISK_MIB`): the create reference formats a disk of this size.
pub(crate) const WORK_DISK_MIB: u32 = 8192;
/// Checks the workspace binaries were built beside this one (`banger_testkit::bin_path`, which
/// the e2e `Stack` uses, finds them there).
pub(crate) fn binaries_built() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding my own binary: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no directory", exe.display()))?;
    if dir.join("banger").is_file() {
        Ok(())
    } else {
        Err(missing_binaries(dir))
    }
}

fn missing_binaries(dir: &Path) -> String {
    format!(
        "no `banger` binary beside {}: run `cargo build --workspace --bins` with the same profile",
        dir.display()
    )
}

/// Whether everything a run needs is here; `Err(why)` otherwise.
pub(crate) fn preflight() -> Result<(), String> {
    if !is_root() {
        return Err("needs root (network namespaces, taps, the e2e stack)".to_owned());
    }
    for program in ["ip", "nats-server", "mkfs.ext4", "cp", "truncate", "sh"] {
        if !have_program(program) {
            return Err(format!("`{program}` is not on PATH"));
        }
    }
    Ok(())
}

/// How a benchmark stack differs from the e2e default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackOptions {
    /// A few letters naming the namespace.
    pub(crate) tag: &'static str,
    /// stord's `[stord] backend`.
    pub(crate) backend: Backend,
    /// Export every process's spans to an OTLP receiver in the stack's namespace.
    pub(crate) trace: bool,
    /// A /16 VM subnet instead of the fixture's /24, for more than 250 VMs.
    pub(crate) wide_subnet: bool,
    /// Where the stack's directory (state, runtime files, image) lives.
    pub(crate) fs: StackFs,
}

/// The file system under a stack's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StackFs {
    /// A file system made for this stack alone, loop-mounted over its directory: ext4 with a
    /// journal (`mkfs.ext4`'s defaults, Debian's root file system) for sparse copy, xfs with
    /// reflink for reflink. Every group starts on a clean file system, so what one group
    /// created and deleted cannot slow the next, and the host's own file system (whatever it
    /// is) is not what is measured.
    Own,
    /// The host's `$TMPDIR`, as it is. On an ext4 without a journal (this machine kind's root)
    /// every new inode is checked against the inodes deleted in the last minutes
    /// (`recently_deleted` in the kernel's `ialloc.c`), so the cost of creating a file grows with
    /// what the previous minutes deleted.
    HostTmp,
}

impl StackFs {
    /// Says where the stack's directory lives, for a row's name.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Own => "on a file system made for the stack",
            Self::HostTmp => "on $TMPDIR's file system",
        }
    }
}

/// The stord back-ends the harness measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `sparse`: a hole-preserving copy of the image.
    Sparse,
    /// `reflink`: a FICLONE clone; the stack's directory must be on a file system that has it
    /// (so always [`StackFs::Own`], an xfs).
    Reflink,
}

impl Backend {
    /// The `[stord] backend` value.
    pub(crate) fn config_value(self) -> &'static str {
        match self {
            Self::Sparse => "sparse",
            Self::Reflink => "reflink",
        }
    }

    /// The row label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Sparse => "sparse-copy",
            Self::Reflink => "reflink",
        }
    }
}

impl StackOptions {
    /// A plain stack on the sparse-copy back-end, on a file system of its own, no tracing, /24
    /// subnet.
    pub(crate) fn plain(tag: &'static str) -> Self {
        Self {
            tag,
            backend: Backend::Sparse,
            trace: false,
            wide_subnet: false,
            fs: StackFs::Own,
        }
    }
}

/// A running stack with the benchmark image registered, and a scratch directory for the
/// references' files. Fields drop in order: the stack (`banger down`, files removed) before
/// the receiver and the loop-mounted file system under it.
pub(crate) struct Bench {
    /// The stack (dropping it runs `banger down` and removes its files).
    pub(crate) stack: Stack,
    /// The OTLP receiver every process exports its spans to, when tracing.
    pub(crate) receiver: Option<OtlpReceiver>,
    /// The stack's bridge, which netd creates and the start reference enslaves taps to.
    pub(crate) bridge: String,
    /// The registered image's root file system, which the create reference copies.
    pub(crate) rootfs: PathBuf,
    /// Where references write their files (under the stack's directory, so removed with it).
    pub(crate) scratch: PathBuf,
    /// The loop-mounted file system under the stack's directory ([`StackFs::Own`]), unmounted
    /// last.
    _fs: Option<LoopFs>,
}

impl Bench {
    /// Starts a stack as `opts` say and registers [`IMAGE`].
    ///
    /// # Panics
    /// When the stack cannot be built (the e2e fixture asserts; its message says what failed).
    pub(crate) fn start(opts: StackOptions) -> Result<Self, String> {
        let mut stack = Stack::new(opts.tag);
        let fs = match (opts.fs, opts.backend) {
            (StackFs::Own, Backend::Sparse) => Some(LoopFs::mount_over(&stack.dir, FsKind::Ext4)?),
            (_, Backend::Reflink) => Some(LoopFs::mount_over(&stack.dir, FsKind::Xfs)?),
            (StackFs::HostTmp, Backend::Sparse) => None,
        };
        let bridge = bridge_of(&stack.dir)?;
        edit_config(&stack.dir, opts)?;
        let receiver = opts.trace.then(|| {
            // The receiver's socket lives in the stack's namespace, where the services are.
            let receiver = stack.ns.run(OtlpReceiver::start);
            stack.env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint());
            stack.env("OTEL_BSP_SCHEDULE_DELAY", "1000");
            receiver
        });
        stack.up();
        stack.register_image(IMAGE);
        let rootfs = stack.dir.join("image").join(IMAGE).join("rootfs.ext4");
        let scratch = stack.dir.join("bench-ref");
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        Ok(Self {
            stack,
            receiver,
            bridge,
            rootfs,
            scratch,
            _fs: fs,
        })
    }

    /// `banger ARGS` against the stack.
    pub(crate) fn banger(&self, args: &[&str]) -> Command {
        let mut c = self.stack.command();
        c.args(args);
        c
    }

    /// `sh -c SCRIPT` inside the stack's namespace.
    pub(crate) fn sh(&self, script: &str) -> Command {
        let mut c = self.stack.ns.command("sh");
        c.args(["-c", script]);
        c
    }

    /// Pids of the simulator processes of this stack: named `banger-fcsim`, with the stack's
    /// directory on their command line.
    pub(crate) fn simulator_pids(&self) -> Vec<i32> {
        let needle = self.stack.dir.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "banger-fcsim")
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .collect()
    }
}

/// Adds the options' settings to the stack's config (which `banger up` carries into the stack
/// file every service reads).
fn edit_config(dir: &Path, opts: StackOptions) -> Result<(), String> {
    let path = dir.join("banger.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut text = with_settings(&text, opts);
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// `config` with the stord back-end set and, for `wide_subnet`, the /24 subnet made a /16.
fn with_settings(config: &str, opts: StackOptions) -> String {
    let mut out: Vec<String> = config
        .lines()
        .map(|l| {
            if opts.wide_subnet && l.trim_start().starts_with("subnet") {
                l.replace("/24", "/16")
            } else {
                l.to_owned()
            }
        })
        .collect();
    out.push(String::new());
    out.push("[stord]".to_owned());
    out.push(format!("backend = \"{}\"", opts.backend.config_value()));
    out.join("\n")
}

/// A file system a loop-mounted image holds.
#[derive(Debug, Clone, Copy)]
enum FsKind {
    /// `mkfs.ext4` with its defaults (a journal), its inode tables written at once rather than
    /// by the kernel's lazy-init thread in the middle of a run.
    Ext4,
    /// `mkfs.xfs -m reflink=1`.
    Xfs,
}

impl FsKind {
    /// The `mkfs` program and its arguments before the image's path.
    fn mkfs(self) -> (&'static str, &'static [&'static str]) {
        match self {
            // One inode per 256 KiB is 98,304 inodes: far more than the 1,000-VM list needs.
            Self::Ext4 => (
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-i",
                    "262144",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                ],
            ),
            Self::Xfs => ("mkfs.xfs", &["-q", "-m", "reflink=1"]),
        }
    }
}

/// A sparse image file with a file system made for one stack, loop-mounted over its directory
/// (whose files are carried over); unmounted, detached and removed when dropped.
struct LoopFs {
    point: PathBuf,
    dev: String,
    image: PathBuf,
}

/// Size of the file system: room for the 20 work disks of a latency run (each mostly holes).
const FS_BYTES: u64 = 24 << 30;

impl LoopFs {
    fn mount_over(dir: &Path, kind: FsKind) -> Result<Self, String> {
        let (mkfs, mkfs_args) = kind.mkfs();
        for program in [mkfs, "losetup", "mount", "umount"] {
            if !have_program(program) {
                return Err(format!(
                    "`{program}` is not on PATH (the stack's own file system needs it)"
                ));
            }
        }
        let image = dir.with_extension("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(FS_BYTES))
            .map_err(|e| format!("creating {}: {e}", image.display()))?;
        let image_s = image.to_string_lossy().into_owned();
        let cleanup_image = |e: String| {
            let _ = std::fs::remove_file(&image);
            e
        };
        let mut args = mkfs_args.to_vec();
        args.push(&image_s);
        run_ok(mkfs, &args).map_err(cleanup_image)?;
        let dev = run_ok("losetup", &["--find", "--show", &image_s])
            .map_err(cleanup_image)?
            .trim()
            .to_owned();
        // Keep what the fixture already wrote (its config, the state directory).
        let saved = std::fs::read(dir.join("banger.toml"))
            .map_err(|e| format!("reading {}/banger.toml: {e}", dir.display()));
        let fs = Self {
            point: dir.to_owned(),
            dev,
            image,
        };
        let saved = saved?;
        run_ok("mount", &[&fs.dev, &dir.to_string_lossy()])?;
        std::fs::write(dir.join("banger.toml"), saved)
            .and_then(|()| std::fs::create_dir_all(dir.join("state")))
            .map_err(|e| format!("restoring the stack's files on its file system: {e}"))?;
        Ok(fs)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Normally the stack is down by now; after a failed start it may not be.
        banger_e2e::kill_processes_mentioning(&self.point);
        let unmounted = Command::new("umount")
            .arg(&self.point)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir_all(&self.point);
    }
}

/// Runs `program args` and returns its stdout, or why it failed.
fn run_ok(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Resident memory (`VmRSS`) of process `pid` in bytes, from `/proc/<pid>/status`.
pub(crate) fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The bridge name the e2e fixture wrote into the stack's config.
fn bridge_of(dir: &Path) -> Result<String, String> {
    let path = dir.join("banger.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("bridge"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
        .ok_or_else(|| format!("no bridge in {}", path.display()))
}

/// Runs `cmd` to completion and returns its wall time, or the last line of its complaint.
pub(crate) fn time(cmd: &mut Command) -> Result<Duration, String> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {:?}: {e}", cmd.get_program()))?;
    let took = started.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(complaint(&out.stderr, out.status))
    }
}

/// Runs `cmds` one after the other; returns the total wall time and every failure.
pub(crate) fn run_serially(cmds: Vec<Command>) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let errors = cmds
        .into_iter()
        .filter_map(|mut c| time(&mut c).err())
        .collect();
    (started.elapsed(), errors)
}

/// Starts all of `cmds` at once and waits for every one; returns the wall time from the first
/// spawn to the last exit, and every failure.
pub(crate) fn run_concurrently(cmds: Vec<Command>) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let children: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("spawning {:?}: {e}", c.get_program()))
        })
        .collect();
    let mut errors = Vec::new();
    for child in children {
        match child.and_then(|c| c.wait_with_output().map_err(|e| format!("waiting: {e}"))) {
            Ok(out) if out.status.success() => {}
            Ok(out) => errors.push(complaint(&out.stderr, out.status)),
            Err(e) => errors.push(e),
        }
    }
    (started.elapsed(), errors)
}

fn complaint(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    format!("{status}: {}", last.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_is_read_from_the_stack_config() {
        let dir = std::env::temp_dir().join(format!("banger-bench-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("banger.toml"),
            "[netd]\nbridge = \"bgt104\"\nsubnet = \"10.104.0.0/24\"\n",
        )
        .unwrap();
        assert_eq!(bridge_of(&dir).as_deref(), Ok("bgt104"));
        std::fs::write(dir.join("banger.toml"), "[netd]\n").unwrap();
        assert!(bridge_of(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_config_gets_the_backend_and_a_wide_subnet_when_asked() {
        let config = "[netd]\nbridge = \"bgt104\"\nsubnet = \"10.104.0.0/24\"\n";
        let mut opts = StackOptions::plain("t");
        let plain = with_settings(config, opts);
        assert!(plain.contains("10.104.0.0/24"), "{plain}");
        assert!(plain.ends_with("[stord]\nbackend = \"sparse\""), "{plain}");
        opts.wide_subnet = true;
        opts.backend = Backend::Reflink;
        let wide = with_settings(config, opts);
        assert!(wide.contains("subnet = \"10.104.0.0/16\""), "{wide}");
        assert!(wide.contains("bridge = \"bgt104\""), "{wide}");
        assert!(wide.ends_with("backend = \"reflink\""), "{wide}");
    }

    #[test]
    fn resident_memory_is_read_from_proc_status() {
        let status = "Name:\tbanger-netd\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5 << 20));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_bytes(std::process::id().cast_signed()).is_some_and(|b| b > 0));
    }
}
