//! Spawning hypervisors with umask 000, without forking the controller.
//!
//! The hypervisor must start with umask 000 (see [`super::firecracker`]). Set in the child
//! between fork and exec (a `pre_exec` hook), that forces a real `fork` of the controller: the
//! kernel copies the page tables of the whole process, and the child tears that copy down
//! again at `exec`. With 100 VMs starting at once on 2 CPUs that was 1.5 ms of CPU per VM, and
//! every fork held the controller's memory map lock against its own worker threads.
//!
//! Instead, hypervisors are spawned from one thread of the controller that has a file-system
//! context of its own (`unshare(CLONE_FS)`: its own umask, cwd and root) with umask 000.
//! Without a hook, `std::process::Command` spawns with `posix_spawn`, a `vfork`-style clone
//! that shares the address space until `exec` and copies the calling thread's file-system
//! context, so the hypervisor starts with umask 000 and the controller's other threads keep
//! their umask. If the thread cannot get a context of its own, [`Spawner::start`] says so and
//! the caller forks with the hook as before.

use std::io;
use std::sync::mpsc;

use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The spawning thread; it ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawning thread with umask 000 in a file-system context of its own.
    ///
    /// # Errors
    /// When the thread cannot be started or cannot have a context of its own.
    pub fn start() -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        std::thread::Builder::new()
            .name("vmm-spawner".into())
            .spawn(move || {
                let own = nix::sched::unshare(CloneFlags::CLONE_FS).map_err(io::Error::from);
                let ok = own.is_ok();
                if ok {
                    // This thread's umask only: the context is no longer shared.
                    nix::sys::stat::umask(Mode::empty());
                }
                if ready_tx.send(own).is_err() || !ok {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the spawner thread died while starting"))??;
        Ok(Self { jobs })
    }

    /// Spawns `cmd` from the spawning thread, inside the calling runtime (whose process driver
    /// then reaps the child).
    ///
    /// # Errors
    /// What spawning returned, or that the thread is gone.
    pub async fn spawn(
        &self,
        mut cmd: tokio::process::Command,
    ) -> io::Result<tokio::process::Child> {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = oneshot::channel();
        let gone = || io::Error::other("the hypervisor spawner thread is gone");
        self.jobs
            .send(Box::new(move || {
                let _ctx = runtime.enter();
                let _ = tx.send(cmd.spawn());
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's umask, read without changing it.
    fn process_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).unwrap()
    }

    #[tokio::test]
    async fn a_child_gets_umask_000_and_the_process_keeps_its_own() {
        let mine = process_umask();
        if mine == 0 {
            banger_testkit::skip("this test process runs with umask 000: nothing to tell apart");
            return;
        }
        let spawner = Spawner::start().unwrap();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "umask"])
            .stdout(std::process::Stdio::piped());
        let child = spawner.spawn(cmd).await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0000");
        assert_eq!(
            process_umask(),
            mine,
            "the rest of the process keeps its umask"
        );
    }
}
