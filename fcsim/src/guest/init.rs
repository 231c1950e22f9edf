//! The simulated guest's init: what a guest kernel prints when its userspace dies.
//!
//! Under the simulator the agent is the guest's whole userspace, its init. When a real guest's
//! init exits, the kernel panics and says so on the serial console:
//!
//! ```text
//! Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00
//! ```
//!
//! (`exitcode` is the wait status: the exit code in the second byte, 0x7f = 127, or the signal
//! in the low bits.) The simulator prints the same line when the agent exits while the guest
//! runs, after a line of its own that says what it saw, both marked `[SIMULATED GUEST]`. That
//! is the signal the controller watches for on the console, the one it would get from a real
//! guest (see vm-controller's `postmortem`). A root drive or work disk that cannot be mounted
//! is the kernel's `VFS: Unable to mount root fs` panic.
//!
//! What the kernel does next follows its `panic=` boot argument: with `panic=N` (N > 0, as
//! banger's default `reboot=k panic=1`) it reboots after N seconds, and Firecracker exits on a
//! guest reboot; with none or `panic=0` it hangs. The simulator does the same: [`after_panic`]
//! says which.

use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::Duration;

use crate::log;

/// The kernel's words for an init that exited.
const KILLED_INIT: &str = "Kernel panic - not syncing: Attempted to kill init!";

/// The kernel's words for a root filesystem it could not mount.
const NO_ROOT_FS: &str = "Kernel panic - not syncing: VFS: Unable to mount root fs";

/// Prints what a guest kernel prints when its init (the agent) exits with `status`; `mount_failed`
/// when it was the simulator's mount of the root drive or work disk that failed.
pub(crate) fn report_exit(status: ExitStatus, mount_failed: bool) {
    if mount_failed {
        log::error("the guest's root drive or work disk could not be mounted");
        log::serial(
            "SIMULATOR: mounting the root drive or the work disk failed; a guest kernel panics:",
        );
        log::serial(&format!("{NO_ROOT_FS} (simulated)"));
        return;
    }
    log::error(&format!(
        "the agent, the guest's init, exited on its own: {status}"
    ));
    log::serial(&format!(
        "SIMULATOR: banger-agent, the guest's init, exited ({status}); a guest kernel panics:"
    ));
    log::serial(&format!(
        "{KILLED_INIT} exitcode=0x{:08x}",
        status.into_raw()
    ));
}

/// What the guest does after a panic, from the kernel command line's `panic=` argument: reboot
/// after this long (`Some`), or hang (`None`).
pub(crate) fn after_panic(cmdline: &str) -> Option<Duration> {
    let secs: i64 = cmdline
        .split_whitespace()
        .rev()
        .find_map(|arg| arg.strip_prefix("panic="))?
        .parse()
        .ok()?;
    // A negative value reboots at once; zero hangs.
    match secs {
        0 => None,
        s => Some(Duration::from_secs(s.max(0).unsigned_abs())),
    }
}

/// Says on the console what the kernel does after the panic: reboots after `delay` (the
/// caller then ends the VMM, as Firecracker does on a guest reboot) or hangs.
pub(crate) fn announce_after_panic(delay: Option<Duration>) {
    match delay {
        Some(d) => log::serial(&format!("Rebooting in {} seconds..", d.as_secs())),
        None => log::serial("---[ end Kernel panic - not syncing ]--- (the guest hangs)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_argument_decides_between_reboot_and_hang() {
        assert_eq!(
            after_panic("console=ttyS0 reboot=k panic=1 pci=off"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(after_panic("panic=0"), None);
        assert_eq!(after_panic("console=ttyS0"), None);
        assert_eq!(after_panic("panic=-1"), Some(Duration::ZERO));
        assert_eq!(after_panic("panic=1 panic=5"), Some(Duration::from_secs(5)));
        assert_eq!(after_panic("panic=soon"), None);
    }

    #[test]
    fn the_exit_code_is_the_wait_status_as_the_kernel_prints_it() {
        let status = ExitStatus::from_raw(127 << 8);
        assert_eq!(format!("0x{:08x}", status.into_raw()), "0x00007f00");
    }
}
