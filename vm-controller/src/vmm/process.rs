//! Finding, inspecting and killing hypervisor processes through `/proc`.
//!
//! A hypervisor is identified by the Unix socket it listens on, not by a remembered pid:
//! `/proc/net/unix` maps the socket's path to its inode, and the process holding that inode
//! (`/proc/<pid>/fd/* -> socket:[inode]`) is the hypervisor. The remembered pid is checked
//! first, so the usual case reads one directory; when it is stale every process is scanned.
//!
//! These are blocking reads of `/proc`; call them from `spawn_blocking` ([`wait_exit`] is the
//! one async function: it waits on a pidfd).

use std::fs;
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::Duration;

use banger_procid::PidFd;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgrp};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

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
    let mut candidates: Vec<u32> = fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| Some(pid) != hint)
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .find(|&pid| is_alive(pid) && holds_any(pid, &inodes))
}

/// Whether `pid` is the hypervisor of the VM whose API socket is `api_sock`: it holds that
/// socket listening, or (before it has bound it, during start-up) its command line names it
/// (`--api-sock <path>`). The socket path is unique
/// to one VM of one controller, so no other process — another controller's hypervisor, or
/// whatever reused a stale pid — passes.
pub fn is_hypervisor_of(pid: u32, api_sock: &Path) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let holds = {
        let inodes = listening_socket_inodes(api_sock);
        !inodes.is_empty() && holds_any(pid, &inodes)
    };
    holds
        || banger_procid::cmdline(raw).is_some_and(|args| {
            banger_procid::args_contain(&args, &[b"--api-sock", api_sock.as_os_str().as_bytes()])
        })
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

/// Waits up to `limit` for `pid` to exit (or be a zombie); returns whether it did. The wait is
/// on the process's pidfd, which the kernel makes readable when the process exits, so it ends
/// with the process rather than at the next look of a polling loop. A pid that names no process
/// has exited. Where pidfds are unavailable (an old kernel) it falls back to looking at
/// `/proc` every [`super::EXIT_POLL`].
pub async fn wait_exit(pid: u32, limit: Duration) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    let fd = match PidFd::open(raw) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return true,
        Err(_) => return poll_exit(pid, limit).await,
    };
    let Ok(owned) = fd.as_fd().try_clone_to_owned() else {
        return poll_exit(pid, limit).await;
    };
    // SAFETY: `owned` is an open descriptor that the AsyncFd takes ownership of: it stays
    // open, and `as_raw_fd` names it, until the AsyncFd is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) };
    let Ok(watch) = registered else {
        return poll_exit(pid, limit).await;
    };
    // Readable once the process has exited, a zombie included: checked at once, then awaited.
    matches!(
        tokio::time::timeout(limit, watch.readable()).await,
        Ok(Ok(_))
    )
}

/// [`wait_exit`] without a pidfd: `/proc` every [`super::EXIT_POLL`].
async fn poll_exit(pid: u32, limit: Duration) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(super::EXIT_POLL).await;
    }
}

/// SIGKILLs `pid` if it is the hypervisor serving `api_sock` ([`is_hypervisor_of`]); its whole
/// process group when it leads one that is not ours (the hypervisor was spawned as a group
/// leader, so helpers it started go too). Returns whether a signal was sent: `false` when the
/// process is gone or is not that hypervisor (a stale pid now names someone else).
///
/// The check is made on a pidfd opened first and the leader is killed through it, so a
/// process that exits meanwhile is never confused with the next owner of its pid. The group
/// signal is by number: a group id stays taken while any member lives, so it could only name
/// a stranger if the whole group died and the id was reused between the check and the kill.
pub fn kill_process(pid: u32, api_sock: &Path) -> Result<bool, nix::Error> {
    let raw = i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?;
    let Ok(fd) = PidFd::open(raw) else {
        return Ok(false);
    };
    if !is_alive(pid) || !is_hypervisor_of(pid, api_sock) {
        return Ok(false);
    }
    let target = Pid::from_raw(raw);
    if let Some((_, pgrp)) = stat(pid)
        && pgrp == raw
        && getpgrp() != target
    {
        match killpg(target, Signal::SIGKILL) {
            Err(nix::Error::ESRCH) | Ok(()) => {}
            Err(e) => return Err(e),
        }
    }
    match fd.signal(Signal::SIGKILL) {
        Ok(()) => Ok(true),
        // Already gone: what we wanted.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(true),
        Err(e) => Err(nix::Error::try_from(e).unwrap_or(nix::Error::EIO)),
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

    /// A `sleep` holding `listener` (as its stdin): a process other than this test that
    /// listens on the socket, as a hypervisor does.
    fn holder(listener: std::os::unix::net::UnixListener) -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("300")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                listener,
            )))
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_listener_is_found_even_when_the_hint_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        assert_eq!(find_by_socket(&path, None), None);
        let mut child = holder(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let pid = child.id();
        // A hint that is some other live process (pid 1, this test) is not believed.
        assert_eq!(find_by_socket(&path, Some(1)), Some(pid));
        assert_eq!(find_by_socket(&path, Some(std::process::id())), Some(pid));
        assert_eq!(find_by_socket(&path, Some(pid)), Some(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(find_by_socket(&path, Some(pid)), None, "nobody listens now");
    }

    #[test]
    fn only_the_hypervisor_of_the_socket_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut child = holder(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let pid = child.id();
        // Some other process (this test) is not the hypervisor of that socket.
        assert!(!is_hypervisor_of(std::process::id(), &path));
        assert!(!kill_process(std::process::id(), &path).unwrap());
        // A process that holds another socket is not either.
        let other = dir.path().join("other.sock");
        assert!(!is_hypervisor_of(pid, &other));
        assert!(!kill_process(pid, &other).unwrap());
        assert!(is_alive(pid));
        assert!(is_hypervisor_of(pid, &path));
        assert!(kill_process(pid, &path).unwrap());
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(!kill_process(pid, &path).unwrap(), "gone: nothing to kill");
    }

    #[test]
    fn a_hypervisor_not_yet_listening_is_known_by_its_command_line() {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 300; :", "banger-vmm", "--api-sock"])
            .arg(&path)
            // A group of its own, as the controller spawns it: the kill takes `sleep` too.
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_hypervisor_of(pid, &path) {
            assert!(std::time::Instant::now() < deadline, "never matched");
            std::thread::yield_now();
        }
        assert!(!is_hypervisor_of(pid, &dir.path().join("else.sock")));
        assert!(kill_process(pid, &path).unwrap());
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn the_exit_wait_returns_when_the_process_exits_and_not_before() {
        // A process that outlives the wait: the wait says so at its limit.
        let mut long = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let pid = long.id();
        assert!(!wait_exit(pid, std::time::Duration::from_millis(50)).await);
        assert!(is_alive(pid));
        // Killed: the wait ends with it, long before its limit would (the child is not reaped
        // yet, so it is a zombie: exited all the same).
        long.kill().unwrap();
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            wait_exit(pid, std::time::Duration::from_secs(3600)),
        )
        .await;
        assert_eq!(waited, Ok(true), "the wait did not end with the process");
        long.wait().unwrap();
        // Reaped: the pid names nobody, which is an exit too.
        assert!(wait_exit(pid, std::time::Duration::ZERO).await);
        // A process that exits on its own while waited for.
        let mut short = std::process::Command::new("sh")
            .args(["-c", "read _"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = short.id();
        let waiter = tokio::spawn(wait_exit(pid, std::time::Duration::from_secs(3600)));
        drop(short.stdin.take());
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
                .await
                .map(Result::unwrap),
            Ok(true)
        );
        short.wait().unwrap();
    }

    #[test]
    fn usage_and_liveness_of_this_process() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(usage(me).unwrap().rss_bytes > 0);
        assert!(!is_alive(u32::MAX - 1));
    }
}
