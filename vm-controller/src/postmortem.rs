//! Postmortem: why a running VM ended, from what a real host can see of it.
//!
//! - **The guest's init died.** A guest kernel whose init exits panics and says so on the
//!   serial console: `Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00`
//!   (`exitcode` is the wait status: exit code 127 here). Any `Kernel panic - not syncing:`
//!   line is a dead guest: its agent will never answer, so waiting for it is pointless. The
//!   simulator prints the same line when the agent (its guest's whole userspace) exits, marked
//!   as simulated (see fcsim's `guest::init`). [`scan_console`] finds it; the reason names the
//!   exit status, a hint for the usual causes and the console lines before the panic.
//! - **The hypervisor exited.** Its exit status (known when this controller spawned it) and the
//!   last error line of its log, e.g. Firecracker's
//!   `MicroVM stopped with an error: GenericError ... exit_code=1` ([`hypervisor_exit`]).
//!
//! These are blocking file reads (bounded to a few KiB): call them from `spawn_blocking`.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// What a kernel prints when it gives up; everything after it on the line is the cause.
const PANIC: &str = "Kernel panic - not syncing: ";

/// The cause of a panic for an init that exited, before its `exitcode=`.
const KILLED_INIT: &str = "Attempted to kill init!";

/// At most this much new console output is scanned per look (a guest printing faster than that
/// has its panic found in the next look's last bytes).
const SCAN_MAX: u64 = 256 * 1024;

/// How far before the panic the quoted console lines are looked for.
const TAIL_BYTES: u64 = 4096;

/// How many console lines before the panic (and the panic line) the reason quotes.
const TAIL_LINES: usize = 8;

/// How much of the hypervisor's log is searched for its last error.
const VMM_LOG_TAIL: u64 = 8192;

/// A guest that died, as its serial console tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDeath {
    /// What the kernel said after `Kernel panic - not syncing:`.
    pub cause: String,
    /// The init's wait status, when the panic was an init that exited.
    pub init_status: Option<u32>,
    /// The console lines up to and including the panic.
    pub tail: Vec<String>,
}

impl GuestDeath {
    /// The failure reason a VM record carries.
    pub fn reason(&self) -> String {
        let what = match self.init_status {
            Some(status) => format!(
                "the guest's init exited ({}){}",
                describe_wait_status(status),
                hint(status).map(|h| format!(": {h}")).unwrap_or_default()
            ),
            None => format!("the guest kernel panicked: {}", self.cause),
        };
        if self.tail.is_empty() {
            what
        } else {
            format!("{what}; serial console:\n  {}", self.tail.join("\n  "))
        }
    }
}

/// `exit status 127` or `killed by signal 9`, from a wait status.
fn describe_wait_status(status: u32) -> String {
    let signal = status & 0x7f;
    if signal == 0 {
        format!("exit status {}", (status >> 8) & 0xff)
    } else {
        format!("killed by signal {signal}")
    }
}

/// What usually causes an init to exit with `status`.
fn hint(status: u32) -> Option<&'static str> {
    if status & 0x7f != 0 {
        return None;
    }
    match (status >> 8) & 0xff {
        127 => Some(
            "a binary or its loader/libraries are missing from the image (the agent at \
             /usr/local/bin/banger-agent, the dynamic loader and the shared libraries `ldd` \
             names for it)",
        ),
        126 => Some("a binary in the image cannot be executed (permissions, or not an x86_64 ELF)"),
        _ => None,
    }
}

/// Parses a console line: the panic's cause and, for an init that exited, its wait status.
fn parse_panic(line: &str) -> Option<(String, Option<u32>)> {
    let cause = line[line.find(PANIC)? + PANIC.len()..].trim().to_owned();
    let status = cause
        .strip_prefix(KILLED_INIT)
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix("exitcode="))
        })
        .and_then(|hex| u32::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
    Some((cause, status))
}

/// The length of `path` (0 when it does not exist yet).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads `path` from `from` to at most `to` (or the end).
fn read_range(path: &Path, from: u64, to: Option<u64>) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let to = to.unwrap_or(len).min(len);
    let from = from.min(to);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(to - from).read_to_end(&mut buf)?;
    Ok(buf)
}

/// What one look at the console found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleScan {
    /// No panic; complete lines were read up to this offset (look again from there).
    Alive {
        /// Where the next look starts.
        scanned_to: u64,
    },
    /// The guest died.
    Dead(GuestDeath),
}

/// Looks at the console written since `scanned_to` (lines before `boot_start` belong to an
/// earlier boot and are never quoted) for a kernel panic.
pub fn scan_console(serial: &Path, boot_start: u64, scanned_to: u64) -> ConsoleScan {
    let len = file_len(serial);
    if len <= scanned_to {
        // Nothing new (the usual case, every round for every VM): no open, no read.
        return ConsoleScan::Alive { scanned_to };
    }
    let from = scanned_to.max(len.saturating_sub(SCAN_MAX)).max(boot_start);
    let Ok(bytes) = read_range(serial, from, Some(len)) else {
        return ConsoleScan::Alive { scanned_to };
    };
    // Only complete lines: a line still being written is read whole next time.
    let Some(last_newline) = bytes.iter().rposition(|b| *b == b'\n') else {
        return ConsoleScan::Alive { scanned_to: from };
    };
    let complete = &bytes[..=last_newline];
    let mut at = from;
    for line in complete.split_inclusive(|b| *b == b'\n') {
        at += line.len() as u64;
        let text = String::from_utf8_lossy(line);
        if let Some((cause, init_status)) = parse_panic(&text) {
            let start = boot_start.max(at.saturating_sub(TAIL_BYTES));
            let tail = read_range(serial, start, Some(at))
                .map(|b| last_lines(&b, TAIL_LINES))
                .unwrap_or_default();
            return ConsoleScan::Dead(GuestDeath {
                cause,
                init_status,
                tail,
            });
        }
    }
    ConsoleScan::Alive { scanned_to: at }
}

/// The last `n` non-empty lines of `bytes`, trimmed.
fn last_lines(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The last line of the hypervisor's log (from `from` on) that reports an error, else its last
/// line: Firecracker ends a failed run with `MicroVM stopped with an error: ...`.
pub fn last_error_line(vmm_log: &Path, from: u64) -> Option<String> {
    let len = file_len(vmm_log);
    let bytes = read_range(vmm_log, from.max(len.saturating_sub(VMM_LOG_TAIL)), None).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| reports_error(l))
        .or(lines.last())
        .map(|l| (*l).to_owned())
}

/// Whether a log line reports an error: it has the word `error`, `panic` or `panicked` (any
/// case), as Firecracker's `... stopped with an error: ...`, a `:ERROR:` level tag or a Rust
/// panic write it. Whole words only: a path such as `/srv/build-errors/` or a type name such
/// as `GenericError` is not a report.
fn reports_error(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        ["error", "panic", "panicked"]
            .iter()
            .any(|e| w.eq_ignore_ascii_case(e))
    })
}

/// How a VM whose hypervisor exited ended: `stopped` when it exited cleanly (the guest shut
/// itself down), `failed` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorExit {
    /// Whether the VM failed (a non-zero or unknown exit with an error in the log).
    pub failed: bool,
    /// The reason the record carries.
    pub reason: String,
}

/// Why a VM ended whose hypervisor exited with `status` (`None`: not this controller's child,
/// so unknown), given the last error line of its log.
pub fn hypervisor_exit(status: Option<&str>, last_error: Option<&str>) -> HypervisorExit {
    let log = last_error
        .map(|l| format!("; its log's last error: {l}"))
        .unwrap_or_default();
    match status {
        Some(s) if is_clean_exit(s) => HypervisorExit {
            failed: false,
            reason: format!("the guest shut down (the hypervisor exited: {s})"),
        },
        Some(s) => HypervisorExit {
            failed: true,
            reason: format!("the hypervisor exited on its own ({s}){log}"),
        },
        // Not our child (the controller restarted since): the log is all there is.
        None => match last_error {
            Some(l) if reports_error(l) => HypervisorExit {
                failed: true,
                reason: format!("the hypervisor process exited{log}"),
            },
            _ => HypervisorExit {
                failed: false,
                reason: "the hypervisor process exited".to_owned(),
            },
        },
    }
}

/// Whether an exit status as `ExitStatus` displays it means success.
fn is_clean_exit(status: &str) -> bool {
    status == "exit status: 0"
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn console(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn an_init_that_exited_127_is_a_dead_guest_with_a_hint_and_the_console_tail() {
        let (_d, path) = console(
            "[SIMULATED GUEST] Welcome to demo (simulated). Starting banger-agent...\n\
             banger-fcsim-init: cannot run /usr/local/bin/banger-agent: No such file or directory (os error 2)\n\
             [SIMULATED GUEST] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00\n",
        );
        let ConsoleScan::Dead(death) = scan_console(&path, 0, 0) else {
            panic!("the panic was not found");
        };
        assert_eq!(death.init_status, Some(0x7f00));
        let reason = death.reason();
        assert!(
            reason.starts_with("the guest's init exited (exit status 127): a binary or its loader"),
            "{reason}"
        );
        assert!(
            reason.contains("cannot run /usr/local/bin/banger-agent"),
            "{reason}"
        );
        assert!(reason.contains("exitcode=0x00007f00"), "{reason}");
    }

    #[test]
    fn a_real_kernels_panic_without_an_exit_code_is_quoted() {
        let (_d, path) = console(
            "[    0.912] VFS: Cannot open root device \"vda\"\n\
             [    0.913] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
        );
        let ConsoleScan::Dead(death) = scan_console(&path, 0, 0) else {
            panic!("the panic was not found");
        };
        assert_eq!(death.init_status, None);
        assert!(
            death
                .reason()
                .starts_with("the guest kernel panicked: VFS: Unable to mount root fs"),
            "{}",
            death.reason()
        );
    }

    #[test]
    fn a_signal_is_named_and_has_no_hint() {
        assert_eq!(describe_wait_status(9), "killed by signal 9");
        assert_eq!(hint(9), None);
        assert_eq!(describe_wait_status(1 << 8), "exit status 1");
    }

    #[test]
    fn an_earlier_boots_panic_and_a_half_written_line_do_not_count() {
        let (_d, path) = console(
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n\
             [SIMULATED GUEST] Welcome\n\
             Kernel panic - not sync",
        );
        let boot_start = u64::try_from(
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n".len(),
        )
        .unwrap();
        let ConsoleScan::Alive { scanned_to } = scan_console(&path, boot_start, 0) else {
            panic!("an earlier boot's panic counted");
        };
        assert_eq!(
            scanned_to,
            boot_start + u64::try_from("[SIMULATED GUEST] Welcome\n".len()).unwrap()
        );
        // The line completes: now it counts, and the tail starts at this boot.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"ing: Attempted to kill init! exitcode=0x00000b00\n")
            .unwrap();
        let ConsoleScan::Dead(death) = scan_console(&path, boot_start, scanned_to) else {
            panic!("the completed panic line was not found");
        };
        assert_eq!(death.init_status, Some(0xb00));
        assert_eq!(death.tail.len(), 2, "{:?}", death.tail);
        assert!(death.reason().contains("exit status 11"));
    }

    #[test]
    fn a_missing_console_is_alive_and_unread() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            scan_console(&dir.path().join("none"), 0, 5),
            ConsoleScan::Alive { scanned_to: 5 }
        );
    }

    #[test]
    fn the_hypervisors_last_error_line_and_exit_status_make_the_reason() {
        let (_d, log) = console(
            "2026-12-05T10:00:00 [anonymous-instance:main] Running Firecracker v1.12\n\
             2026-12-05T10:00:01 [anonymous-instance:main] MicroVM stopped with an error: GenericError exit_code=1\n\
             2026-12-05T10:00:01 [anonymous-instance:main] Firecracker exiting\n",
        );
        let line = last_error_line(&log, 0).unwrap();
        assert!(line.contains("MicroVM stopped with an error"), "{line}");
        let exit = hypervisor_exit(Some("exit status: 1"), Some(&line));
        assert!(exit.failed);
        assert!(
            exit.reason.starts_with(
                "the hypervisor exited on its own (exit status: 1); its log's last error: "
            ),
            "{}",
            exit.reason
        );
        assert!(exit.reason.contains("GenericError"), "{}", exit.reason);

        let clean = hypervisor_exit(Some("exit status: 0"), None);
        assert!(!clean.failed, "{clean:?}");
        let unknown = hypervisor_exit(None, Some("Running Firecracker v1.12"));
        assert_eq!(
            unknown,
            HypervisorExit {
                failed: false,
                reason: "the hypervisor process exited".into()
            }
        );
        assert!(hypervisor_exit(None, Some(&line)).failed);
    }

    #[test]
    fn a_path_or_type_name_with_error_in_it_is_not_an_error_line() {
        let (_d, log) = console(
            "[anonymous-instance:main:ERROR:src/vmm/lib.rs:1] Failed to open /dev/kvm\n\
             fcsim: running the host's agent /work/wt-typed-errors/target/debug/banger-agent\n\
             stopped: GenericError\n",
        );
        let line = last_error_line(&log, 0).unwrap();
        assert!(line.contains("Failed to open /dev/kvm"), "{line}");
        assert!(!reports_error("/srv/build-errors/firecracker"));
        assert!(!reports_error("exit reason: GenericError"));
        assert!(reports_error("thread 'main' panicked at src/main.rs"));
        assert!(reports_error("MicroVM stopped with an Error: x"));
    }
}
