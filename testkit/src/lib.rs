//! Test fixtures that build real things and tear them down in `Drop`.
//!
//! - [`NatsServer`]: a real `nats-server` on a free loopback port with its own store dir, one
//!   per test, killed when dropped (also when the test panics).
//! - [`Process`]: a child process (a service binary) killed and reaped on drop.
//! - [`wait_until`]: poll a condition with a deadline instead of sleeping.
//! - [`bin_path`]: where cargo put a workspace binary.
//! - [`skip`] / [`require_root`]: announce, never hide, a test that cannot run here, under
//!   the test's own name (derived from libtest's thread name, never typed).
//! - [`netns::NetNs`]: a private network namespace, deleted on drop.
//! - [`otlp::OtlpReceiver`]: an OTLP trace receiver inside the test.
//! - [`dns_packets`]: DNS queries built by hand, sent raw over UDP or TCP.
//!
//! The harnesses shared by tests and benchmarks that need banger's own crates, behind features
//! so other crates' tests do not build them:
//!
//! - feature `bus`: `stand_in_controller` (a stand-in vm-controller answering `vm.list`, VM
//!   snapshots, lifecycle events) and `bus_hop` (one request/reply hop through the service
//!   runtime against bare async-nats, measured).
//! - feature `dnsd` (implies `bus`): `dnsd_in_process` (a dnsd in this process or as the real
//!   binary) and `dns_load` (dnsd under load against Knot DNS, measured).

#[cfg(feature = "bus")]
pub mod bus_hop;
#[cfg(feature = "dnsd")]
pub mod dns_load;
pub mod dns_packets;
#[cfg(feature = "dnsd")]
pub mod dnsd_in_process;
pub mod netns;
pub mod otlp;
mod skip;
#[cfg(feature = "bus")]
pub mod stand_in_controller;

pub use skip::{SKIP_LOG_ENV, current_test, have_program, is_root, require_root, skip};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to use), never one this
/// process handed out before: the kernel readily returns a port just released, so two calls
/// in a row (a server's client and monitor ports, a cluster's routes) could otherwise collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
        let port = l.local_addr().expect("local address").port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes; panics with `what` on
/// timeout. This is the only way tests wait: never a bare sleep.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant of [`wait_until`] for synchronous tests.
pub fn wait_until_blocking(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An ext4 image of `size` (as `mkfs.ext4` reads it: `16M`) at `image`, made by
/// `mkfs.ext4 -q -F -d tree` with `options`; `None`, announced as a skip (see [`skip`]), when
/// `mkfs.ext4` cannot run here. Call it on the test's own thread.
///
/// # Panics
/// When `mkfs.ext4` runs and fails.
pub fn ext4_image_of(tree: &Path, image: &Path, size: &str, options: &[&str]) -> Option<PathBuf> {
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .args(options)
        .arg(image)
        .arg(size)
        .status();
    match made {
        Ok(s) if s.success() => Some(image.to_owned()),
        Ok(s) => panic!("mkfs.ext4 {options:?} failed: {s}"),
        Err(e) => {
            skip(&format!("mkfs.ext4 cannot run here: {e}"));
            None
        }
    }
}

/// The path of workspace binary `name`: beside the running executable (a workspace binary
/// such as `banger-bench`) or one level up (a test in `target/<profile>/deps/`). Run
/// `cargo build --workspace --bins` first; the README test command does.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("the executable's directory");
    let candidates = [Some(dir.join(name)), dir.parent().map(|p| p.join(name))];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "binary {name} not built beside {}: run `cargo build --workspace --bins` first",
                dir.display()
            )
        })
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Process {
    child: Option<Child>,
    name: String,
}

impl Process {
    /// Spawns `cmd`, with stdout and stderr inherited so test output shows the service's logs.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // Already exited and reaped (by `is_running`): its pid may name another process now.
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                eprintln!(
                    "{} did not exit within {timeout:?} of SIGTERM; killing",
                    self.name
                );
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL and reaps it (a crash, for fault tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(5));
        }
    }
}

/// Whether `GET path` on `addr` answers 200 (a tiny HTTP/1.0 client, for readiness probes).
pub fn http_get_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200")
}

/// The body of `GET path` on `addr` when it answers 200 (monitoring endpoints: `/varz`,
/// `/routez`).
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"))
        .then(|| body.to_owned())
}

/// A real `nats-server` on a free loopback port, with JetStream and its own store dir.
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
    process: Option<Process>,
    extra_args: Vec<String>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments (auth, cluster, ...).
    ///
    /// For a server inside a network namespace, start it from there:
    /// `ns.run(NatsServer::start)` — the process and the readiness probe both run in the
    /// namespace, and clients connect from inside it ([`netns::NetNs::block_on`]).
    pub fn start_with_args(extra: &[&str]) -> Self {
        assert!(
            have_program("nats-server"),
            "nats-server is not installed: run ./scripts/setup (apt-get install nats-server)"
        );
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let mut s = Self {
            port: free_port(),
            monitor_port: free_port(),
            dir,
            process: None,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let (port, monitor) = (self.port.to_string(), self.monitor_port.to_string());
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port, "-m", &monitor, "-js", "-sd"])
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(Process::spawn("nats-server", cmd));
        // A TCP accept is not readiness; the monitoring endpoint's /healthz answers 200 once
        // the server (and JetStream) is ready for clients.
        let monitor = format!("127.0.0.1:{}", self.monitor_port);
        wait_until_blocking(
            "nats-server /healthz to answer ok",
            Duration::from_secs(15),
            || http_get_ok(&monitor, "/healthz"),
        );
    }

    /// The server URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits until a client of this server holds a subscription whose subject starts with
    /// `prefix`, as the server's monitoring endpoint (`/subsz`) lists it. A client's `flush`
    /// only says its SUB was sent; a test that publishes from another connection must know the
    /// server registered it, or the message may be delivered to nobody.
    ///
    /// # Panics
    /// When no such subscription appears within 10 s.
    pub fn wait_for_subscription(&self, prefix: &str) {
        let monitor = format!("127.0.0.1:{}", self.monitor_port);
        let needle = format!("\"subject\": \"{prefix}");
        wait_until_blocking(
            &format!("a subscription to {prefix}… on the server"),
            Duration::from_secs(10),
            || {
                http_get(&monitor, "/subsz?subs=1&limit=100000")
                    .is_some_and(|b| b.contains(&needle))
            },
        );
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, like a crash).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
