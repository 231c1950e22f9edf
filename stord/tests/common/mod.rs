//! Fixtures for stord's integration tests: a real nats-server per test, the real
//! `banger-stord` binary with its state in a temporary directory, typed bus requests, real ext4
//! images made with `mkfs.ext4 -d`, and file-system inspection with `debugfs` (no mounts needed).
//! [`LoopMount`] makes a loop-mounted xfs (reflink) file system and removes it on drop.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part of the fixtures, through `mod common`"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::NatsOptions;
use banger_proto::op::{Operation, store};
use banger_proto::store::CapabilitiesRequest;
use banger_proto::{ApiError, HostId, Subjects, VmId};
use banger_testkit::{NatsServer, Process};

/// The host id every fixture uses.
pub const HOST: &str = "testhost";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh VM id, unique across tests and runs.
pub fn vm_id() -> VmId {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    VmId::new(format!("{:08x}{:08x}{:016x}", std::process::id(), n, nanos)).unwrap()
}

/// The host.
pub fn host() -> HostId {
    HostId::new(HOST).unwrap()
}

/// nats-server plus a running `banger-stord`.
pub struct Stack {
    /// The bus server.
    pub nats: NatsServer,
    /// Config file and runtime dir.
    pub dir: tempfile::TempDir,
    /// `--state-dir` (stord's files are in `<state>/stord`).
    pub state: PathBuf,
    /// A client.
    pub bus: Bus,
    stord: Option<Process>,
    config: String,
}

impl Stack {
    /// Starts nats and stord with `[stord]` settings `stord_toml`, state in a temp dir.
    pub async fn start(stord_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Self::start_at(dir, state, stord_toml).await
    }

    /// Starts nats and stord with its state directory at `state`.
    pub async fn start_at(dir: tempfile::TempDir, state: PathBuf, stord_toml: &str) -> Self {
        let nats = NatsServer::start();
        let client =
            banger_bus::connect::connect(&NatsOptions::plain(nats.url(), "stord-test"), true)
                .await
                .unwrap();
        let mut s = Self {
            bus: Bus::new(client, Subjects::default()),
            nats,
            dir,
            state,
            stord: None,
            config: stord_toml.to_owned(),
        };
        s.start_stord().await;
        s
    }

    fn command(&self) -> Command {
        let config = self.dir.path().join("banger.toml");
        std::fs::write(&config, format!("[stord]\n{}\n", self.config)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger-stord"));
        cmd.args(["--nats-url", &self.nats.url(), "--host-id", HOST])
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--runtime-dir")
            .arg(self.dir.path().join("run"))
            .env("RUST_LOG", "warn")
            .env_remove("BANGER_STORD_BACKEND");
        cmd
    }

    /// Starts stord and waits until it answers `capabilities`.
    pub async fn start_stord(&mut self) {
        self.stord = Some(Process::spawn("banger-stord", self.command()));
        let bus = self.bus.clone();
        banger_testkit::wait_until(
            "stord to answer capabilities",
            Duration::from_secs(30),
            || {
                let bus = bus.clone();
                async move {
                    bus.call::<store::Capabilities>(
                        &host(),
                        &CapabilitiesRequest {},
                        Duration::from_secs(5),
                    )
                    .await
                    .is_ok()
                }
            },
        )
        .await;
    }

    /// Stops stord with SIGTERM and checks it exits cleanly.
    pub fn stop_stord(&mut self) {
        if let Some(mut p) = self.stord.take() {
            let status = p.terminate(Duration::from_secs(30)).unwrap();
            assert!(status.success(), "stord exited with {status}");
        }
    }

    /// Restarts stord (same state, same config).
    pub async fn restart_stord(&mut self) {
        self.stop_stord();
        self.start_stord().await;
    }

    /// Starts a second stord with `stord_toml` that is expected to refuse to start; returns
    /// what it printed on stderr.
    pub fn start_expecting_failure(&mut self, stord_toml: &str) -> String {
        self.config = stord_toml.to_owned();
        let mut cmd = self.command();
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut status = None;
        banger_testkit::wait_until_blocking("stord to exit", Duration::from_secs(30), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.unwrap().success(), "stord started: {err}");
        err
    }

    /// stord's own directory.
    pub fn stord_dir(&self) -> PathBuf {
        self.state.join("stord")
    }

    /// A VM's volume directory.
    pub fn vm_dir(&self, vm: &VmId) -> PathBuf {
        self.stord_dir().join("volumes").join(vm.as_str())
    }

    /// Calls stord's operation `O`: its reply, or the error stord answered (a transport
    /// failure fails the test).
    pub async fn req<O: Operation<At = HostId>>(
        &self,
        req: &O::Request,
    ) -> Result<O::Reply, ApiError> {
        remote(
            self.bus
                .call::<O>(&host(), req, Duration::from_secs(60))
                .await,
        )
    }

    /// Sends raw JSON to operation `O`'s subject, as a client that does not use the typed
    /// request would: for bodies the typed request cannot even hold.
    pub async fn raw<O: Operation<At = HostId>>(
        &self,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        remote(
            self.bus
                .request(
                    O::subject(self.bus.subjects(), &host()),
                    body,
                    Duration::from_secs(60),
                )
                .await,
        )
    }
}

/// An image's files.
pub struct ImageFiles {
    /// Holds them.
    pub dir: PathBuf,
    /// A kernel (any regular file will do: stord never reads it).
    pub kernel: PathBuf,
    /// A real ext4 root filesystem holding `/etc/hostname` and `/root/.profile`.
    pub rootfs: PathBuf,
}

/// Makes an image of `mib` MiB in `dir`: mostly holes, a few files.
pub fn make_image(dir: &Path, mib: u64) -> ImageFiles {
    std::fs::create_dir_all(dir).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("etc")).unwrap();
    std::fs::create_dir_all(src.path().join("root")).unwrap();
    std::fs::write(src.path().join("etc/hostname"), "image\n").unwrap();
    std::fs::write(src.path().join("root/.profile"), "export FROM_IMAGE=1\n").unwrap();
    let rootfs = dir.join("rootfs.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(src.path())
        .arg(&rootfs)
        .arg(format!("{mib}M"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF not really a kernel").unwrap();
    ImageFiles {
        dir: dir.to_owned(),
        kernel,
        rootfs,
    }
}

/// Runs `debugfs -R cmd image` (add `-w` with `write`), returning stdout and stderr.
pub fn debugfs(image: &Path, cmd: &str, write: bool) -> (String, String) {
    let mut c = Command::new("debugfs");
    if write {
        c.arg("-w");
    }
    let out = c.arg("-R").arg(cmd).arg(image).output().unwrap();
    assert!(
        out.status.success(),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The contents of `path` in the ext4 image `image`, or `None` when it does not exist.
pub fn read_ext4(image: &Path, path: &str) -> Option<String> {
    let (out, err) = debugfs(image, &format!("cat {path}"), false);
    if err.contains("not found") {
        None
    } else {
        Some(out)
    }
}

/// Writes `body` to `path` (in an existing directory) in the ext4 image `image`.
pub fn write_ext4(image: &Path, path: &str, body: &str) {
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), body).unwrap();
    let (_, err) = debugfs(
        image,
        &format!("write {} {path}", local.path().display()),
        true,
    );
    assert!(!err.contains("rror"), "writing {path}: {err}");
}

/// Makes a directory in the ext4 image `image`.
pub fn mkdir_ext4(image: &Path, path: &str) {
    debugfs(image, &format!("mkdir {path}"), true);
}

/// Bytes allocated to `path` (st_blocks * 512): holes excluded.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Runs a command and panics with its stderr when it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file system of type `fs` (made in a sparse image file, with `mkfs_args`) on a loop device,
/// mounted at a temporary directory; unmounted and detached on drop, even when the test fails.
pub struct LoopMount {
    /// The mount point.
    pub point: PathBuf,
    dev: String,
    _dir: tempfile::TempDir,
}

impl LoopMount {
    /// Makes and mounts it. Needs root.
    pub fn new(fs: &str, mkfs_args: &[&str], mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join(format!("{fs}.img"));
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let image_s = image.to_str().unwrap();
        let mut args: Vec<&str> = mkfs_args.to_vec();
        args.push(image_s);
        run(&format!("mkfs.{fs}"), &args);
        let dev = run("losetup", &["--find", "--show", image_s])
            .trim()
            .to_owned();
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        let m = Self {
            point: point.clone(),
            dev,
            _dir: dir,
        };
        run("mount", &[&m.dev, point.to_str().unwrap()]);
        m
    }

    /// Loop-mounted xfs with reflink enabled.
    pub fn xfs() -> Self {
        // 512 MiB: above mkfs.xfs's minimum; sparse, so it costs only what is written.
        Self::new("xfs", &["-q", "-m", "reflink=1"], 512)
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let point = self.point.to_string_lossy().into_owned();
        let _ = Command::new("umount").arg(&point).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A bind mount of `src` over `dst`, undone on drop: makes `dst` busy (unlink gives EBUSY).
pub struct BindMount {
    dst: PathBuf,
    mounted: bool,
}

impl BindMount {
    /// Mounts. Needs root.
    pub fn new(src: &Path, dst: &Path) -> Self {
        run(
            "mount",
            &["--bind", src.to_str().unwrap(), dst.to_str().unwrap()],
        );
        Self {
            dst: dst.to_owned(),
            mounted: true,
        }
    }

    /// Unmounts now.
    pub fn release(&mut self) {
        if self.mounted {
            run("umount", &[self.dst.to_str().unwrap()]);
            self.mounted = false;
        }
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dst).status();
        }
    }
}

/// The service's answer: its reply or its error; a transport failure fails the test.
pub fn remote<T>(r: Result<T, banger_bus::RequestError>) -> Result<T, ApiError> {
    r.map_err(|e| match e {
        banger_bus::RequestError::Remote(api) => api,
        other => panic!("transport failure: {other}"),
    })
}
