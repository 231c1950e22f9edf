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

/// A running stack with the benchmark image registered, and a scratch directory for the
/// references' files.
pub(crate) struct Bench {
    /// The stack (dropping it runs `banger down` and removes its files).
    pub(crate) stack: Stack,
    /// The stack's bridge, which netd creates and the start reference enslaves taps to.
    pub(crate) bridge: String,
    /// The registered image's root file system, which the create reference copies.
    pub(crate) rootfs: PathBuf,
    /// Where references write their files (under the stack's directory, so removed with it).
    pub(crate) scratch: PathBuf,
}

impl Bench {
    /// Starts a stack and registers [`IMAGE`].
    ///
    /// # Panics
    /// When the stack cannot be built (the e2e fixture asserts; its message says what failed).
    pub(crate) fn start() -> Result<Self, String> {
        let stack = Stack::new("bn");
        let bridge = bridge_of(&stack.dir)?;
        stack.up();
        stack.register_image(IMAGE);
        let rootfs = stack.dir.join("image").join(IMAGE).join("rootfs.ext4");
        let scratch = stack.dir.join("bench-ref");
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        Ok(Self {
            stack,
            bridge,
            rootfs,
            scratch,
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
}
