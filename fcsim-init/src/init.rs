//! The two processes of a guest's init: the first leaves the host's namespaces and waits; its
//! child is pid 1 of the guest's PID namespace (see the crate documentation).
//!
//! Signals are blocked from the start and taken with `sigwait`, one at a time, on one thread:
//! a signal that arrives while pid 1 is still mounting waits for it, where a shell init that
//! had not set its traps yet lost it (pid 1 of a namespace drops signals it has no handler
//! for). The command gets an empty signal mask, set between fork and exec (a mask is
//! inherited across exec, and `std::process::Command` leaves it as it is).

use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::plan::Plan;
use crate::{MOUNT_FAILED_EXIT, NAME, NOT_STARTED_EXIT, VMM_GONE_EXIT, mounts, tidy};

/// How long pid 1 waits for the guest's processes to die after SIGKILL, when the VMM went.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The signals the init takes with `sigwait`.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Prints `what` on the guest console (the init's stderr), prefixed with the init's name.
fn say(what: &str) {
    eprintln!("{NAME}: {what}");
}

/// Runs the plan; returns the exit status: the command's (a signal N as 128 + N), or
/// [`MOUNT_FAILED_EXIT`], [`NOT_STARTED_EXIT`], [`VMM_GONE_EXIT`], or 1 when the namespaces
/// cannot be made (needs root).
pub fn run(plan: &Plan) -> i32 {
    // Blocked before anything else, and inherited by pid 1: no signal is lost to a window.
    if let Err(e) = handled().thread_block() {
        say(&format!("blocking signals: {e}"));
        return 1;
    }
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS) {
        say(&format!(
            "creating the guest's PID and mount namespaces: {e} (needs root)"
        ));
        return 1;
    }
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        say(&format!("making the guest's mounts private: {e}"));
        return 1;
    }
    // Held open by this process only: pid 1 sees its end close when this process is gone.
    let (alive_r, alive_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("making a pipe: {e}"));
            return 1;
        }
    };
    // SAFETY: this process has one thread (nothing here starts another), so the child may run
    // any code after the fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(alive_w);
            pid1(plan, &alive_r)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_r);
            let status = wait_for(child);
            drop(alive_w);
            status
        }
        Err(e) => {
            say(&format!("forking the guest's pid 1: {e}"));
            1
        }
    }
}

/// Waits for `child` and returns its status as a shell would report it.
fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                say(&format!("waiting for the guest's pid 1: {e}"));
                return 1;
            }
        }
    }
}

/// Pid 1 of the guest: mounts, starts the command, serves signals; never returns.
fn pid1(plan: &Plan, alive: &OwnedFd) -> ! {
    // The kernel sends SIGHUP when the first process (our parent) dies; if it died before the
    // request was made, its end of the pipe is closed already.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory effects.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::from(Signal::SIGHUP as u32),
            0,
            0,
            0,
        )
    };
    if rc != 0 || parent_gone(alive) {
        vmm_gone(plan);
    }
    for m in &plan.mounts {
        if let Err(e) = mounts::make(m) {
            say(&error_chain(&e));
            std::process::exit(MOUNT_FAILED_EXIT);
        }
    }
    let agent = match start(plan) {
        Ok(pid) => pid,
        Err(e) => {
            say(&format!(
                "cannot run {}: {e}{}",
                plan.program().to_string_lossy(),
                if e.kind() == std::io::ErrorKind::NotFound && program_exists(plan) {
                    " (the file is there: its loader or a library it needs is missing)"
                } else {
                    ""
                }
            ));
            std::process::exit(NOT_STARTED_EXIT);
        }
    };
    let set = handled();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(agent) {
                    std::process::exit(code);
                }
            }
            Ok(Signal::SIGTERM) => {
                let _ = kill(agent, Signal::SIGTERM);
            }
            // Pause and resume: every process of the guest but pid 1.
            Ok(Signal::SIGUSR1) => {
                let _ = kill(Pid::from_raw(-1), Signal::SIGSTOP);
            }
            Ok(Signal::SIGUSR2) => {
                let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
            }
            Ok(Signal::SIGHUP) => vmm_gone(plan),
            Ok(_) | Err(_) => {}
        }
    }
}

/// Whether the command's program is a file (inside the chroot, when there is one).
fn program_exists(plan: &Plan) -> bool {
    let program = std::path::Path::new(plan.program());
    match &plan.chroot {
        Some(root) => root
            .join(program.strip_prefix("/").unwrap_or(program))
            .is_file(),
        None => program.is_file(),
    }
}

/// Whether the other end of `alive` is closed (the first process is gone).
fn parent_gone(alive: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        alive.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Starts the command: chrooted and with the umask the plan gives.
fn start(plan: &Plan) -> std::io::Result<Pid> {
    let mut cmd = std::process::Command::new(plan.program());
    cmd.args(plan.command.iter().skip(1));
    // SAFETY: this process is single-threaded, so the child may run any code before exec;
    // sigprocmask is a plain system call.
    unsafe {
        cmd.pre_exec(|| SigSet::all().thread_unblock().map_err(std::io::Error::from));
    }
    if let Some(root) = plan.chroot.clone() {
        cmd.current_dir("/");
        // SAFETY: this process is single-threaded, so the child may run any code before
        // exec; chroot and chdir are plain system calls.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::chroot(&root)?;
                nix::unistd::chdir("/")?;
                Ok(())
            });
        }
    }
    if let Some(mask) = plan.umask {
        let mode = nix::sys::stat::Mode::from_bits_truncate(mask);
        // SAFETY: umask(2) is a plain system call.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::stat::umask(mode);
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    // Reaped through waitpid in `reap`, not through the handle.
    drop(child);
    Ok(Pid::from_raw(pid))
}

/// Reaps every child that exited; the command's status when it is one of them.
fn reap(agent: Pid) -> Option<i32> {
    let mut agent_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => agent_status = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                agent_status = Some(128 + sig as i32);
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return agent_status,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return agent_status,
        }
    }
}

/// The VMM is gone: kill the guest, detach its mounts, remove the guest directory, exit.
fn vmm_gone(plan: &Plan) -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + KILL_WAIT;
    while Instant::now() < deadline {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => break,
            // Killed processes take a moment to go; look again shortly.
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            _ => {}
        }
    }
    for m in plan.mounts.iter().rev() {
        let _ = nix::mount::umount2(&m.target, MntFlags::MNT_DETACH);
    }
    if let Some(dir) = &plan.guest_dir {
        let _ = tidy::remove_on_one_file_system(dir);
    }
    std::process::exit(VMM_GONE_EXIT);
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
