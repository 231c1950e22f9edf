//! Private network namespaces for tests.
//!
//! A [`NetNs`] is created with `ip netns add` under a unique name and deleted on drop (also when
//! the test panics), taking every interface inside it along. Namespaces are per *thread*:
//! [`NetNs::run`] executes a closure on a fresh thread that has entered the namespace (give it a
//! current-thread tokio runtime if it needs async), and [`NetNs::command`] builds an
//! `ip netns exec` command for a child process. Never `setns` a shared tokio worker.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `bt<tag>-<pid>-<n>` (short, so interface names derived from it stay under 15
    /// characters) with its loopback up.
    pub fn create(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("bt{tag}-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the namespace and panics with its output if it fails.
    pub fn exec(&self, argv: &[&str]) -> String {
        let (program, args) = argv.split_first().expect("a program to run");
        let mut c = self.command(program);
        c.args(args);
        run_ok(&mut c)
    }

    /// Runs `argv` inside the namespace and returns whether it succeeded (output discarded).
    pub fn try_exec(&self, argv: &[&str]) -> bool {
        let (program, args) = argv.split_first().expect("a program to run");
        self.command(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result. Sockets
    /// created there belong to the namespace (and keep working from other threads afterwards).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs an async block inside the namespace on its own current-thread runtime.
    pub fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(f())
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd`, panicking with its stderr when it fails; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_private_and_removed_on_drop() {
        if !crate::require_root() {
            return;
        }
        let ns = NetNs::create("t");
        let name = ns.name().to_owned();
        ns.exec(&["ip", "link", "add", "tbr0", "type", "bridge"]);
        assert!(ns.exec(&["ip", "-o", "link"]).contains("tbr0"));
        // Not visible on the host.
        let host = run_ok(Command::new("ip").args(["-o", "link"]));
        assert!(!host.contains("tbr0"));
        // A thread inside the namespace sees the namespace's interfaces.
        // (sysfs would show the host's view; if_nameindex asks the kernel through a socket,
        // which belongs to the thread's namespace.)
        let mut seen = ns.run(|| {
            nix::net::if_::if_nameindex()
                .map(|l| {
                    l.iter()
                        .map(|i| i.name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_else(|_| Vec::<String>::new())
        });
        seen.sort();
        assert_eq!(seen, ["lo", "tbr0"]);
        drop(ns);
        let list = run_ok(Command::new("ip").args(["netns", "list"]));
        assert!(!list.contains(&name));
    }
}
