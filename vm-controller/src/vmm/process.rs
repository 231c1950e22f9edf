//! Finding, inspecting and killing hypervisor processes through `/proc`.
//!
//! A hypervisor is identified by the Unix socket it listens on, not by a remembered pid:
//! `/proc/net/unix` maps the socket's path to its inode, and the process holding that inode
//! (`/proc/<pid>/fd/* -> socket:[inode]`) is the hypervisor. The remembered pid is checked
//! first, so the usual case reads one directory; when it is stale every process is scanned.
//!
//! These are blocking reads of `/proc`; call them from `spawn_blocking`.

use std::fs;
use std::path::Path;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp};

/// `__SO_ACCEPTCON` in `/proc/net/unix` flags: the socket is listening.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Inodes of listening Unix sockets bound to `path`.
pub fn listening_socket_inodes(path: &Path) -> Vec<u64> {
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    parse_unix_table(&table, path)
}

/// Parses `/proc/net/unix` (`Num RefCount Protocol Flags Type St Inode Path`).
fn parse_unix_table(table: &str, path: &Path) -> Vec<u64> {
    let want = path.as_os_str().to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _num = f.next()?;
            let _refs = f.next()?;
            let _proto = f.next()?;
            let flags = u32::from_str_radix(f.next()?, 16).ok()?;
            let _type = f.next()?;
            let _state = f.next()?;
            let inode: u64 = f.next()?.parse().ok()?;
            let p = f.collect::<Vec<_>>().join(" ");
            (flags & SO_ACCEPTCON != 0 && p == want).then_some(inode)
        })
        .collect()
}

/// Whether process `pid` has an open descriptor on one of `inodes`.
fn holds_any(pid: u32, inodes: &[u64]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| inodes.contains(&n))
        })
    })
}

/// The live process listening on `socket`, trying `hint` first. A zombie never counts.
pub fn find_by_socket(socket: &Path, hint: Option<u32>) -> Option<u32> {
    let inodes = listening_socket_inodes(socket);
    if inodes.is_empty() {
        return None;
    }
    if let Some(pid) = hint
        && is_alive(pid)
        && holds_any(pid, &inodes)
    {
        return Some(pid);
    }
    let me = std::process::id();
    let mut candidates: Vec<u32> = fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && Some(pid) != hint)
        .collect();
    candidates.sort_unstable();
    let found = candidates
        .into_iter()
        .find(|&pid| is_alive(pid) && holds_any(pid, &inodes));
    if found.is_some() {
        return found;
    }
    // Last: this process itself (a test holding a listener; never the controller in service).
    (holds_any(me, &inodes)).then_some(me)
}

/// The state letter of `/proc/<pid>/stat` and the process group, or `None` when gone.
fn stat(pid: u32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp: i32 = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// SIGKILLs `pid`; its whole process group when it leads one that is not ours (the hypervisor
/// was spawned as a group leader, so helpers it started go too).
pub fn kill_process(pid: u32) -> Result<(), nix::Error> {
    let raw = i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?;
    let target = Pid::from_raw(raw);
    let result = match stat(pid) {
        Some((_, pgrp)) if pgrp == raw && getpgrp() != target => killpg(target, Signal::SIGKILL),
        _ => kill(target, Signal::SIGKILL),
    };
    match result {
        // Already gone: what we wanted.
        Err(nix::Error::ESRCH) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Resident memory and CPU time of `pid`.
pub fn usage(pid: u32) -> Option<super::ProcUsage> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100);
    Some(super::ProcUsage {
        rss_bytes: rss_kib.saturating_mul(1024),
        cpu_ms: (utime + stime).saturating_mul(1000) / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_table_is_parsed_for_listening_sockets_only() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 1111 /run/b/api.sock\n\
                     0000000000000000: 00000003 00000000 00000000 0001 03 2222 /run/b/api.sock\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 3333 /run/b/other\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 4444\n";
        assert_eq!(
            parse_unix_table(table, Path::new("/run/b/api.sock")),
            [1111]
        );
        assert!(parse_unix_table(table, Path::new("/nope")).is_empty());
    }

    #[test]
    fn a_listener_is_found_even_when_the_hint_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        assert_eq!(find_by_socket(&path, None), None);
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // A hint that is some other live process (pid 1) is not believed.
        assert_eq!(find_by_socket(&path, Some(1)), Some(std::process::id()));
        assert_eq!(
            find_by_socket(&path, Some(std::process::id())),
            Some(std::process::id())
        );
    }

    #[test]
    fn usage_and_liveness_of_this_process() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(usage(me).unwrap().rss_bytes > 0);
        assert!(!is_alive(u32::MAX - 1));
    }
}
