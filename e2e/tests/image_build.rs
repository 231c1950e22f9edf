//! `banger image build` and `banger image verify` as a user runs them, against a whole stack on
//! the simulator (`Stack`, as root):
//!
//! - bad input (unknown suite, a size below the minimum, a size too small for the packages, a
//!   missing SSH key, an unwritable state directory): a clear error, the exit code, and nothing
//!   left behind (no scratch directory, mount, loop device, image file or registration);
//! - a Void image from a tarball made here from a tiny tree (the host's agent and the C library
//!   it needs, runit's directories, a stand-in sshd): built, verified, booted; the agent answers
//!   from inside the image;
//! - the Debian image, built from Debian's packages with debootstrap: Ctrl-C in the middle
//!   leaves nothing; the build verifies; a VM boots it under the simulator, which runs the agent
//!   from inside the image; the image's sshd lets root in with the bundle key and refuses
//!   passwords; a file in /root survives stop/start; no loop device is left; verify
//!   names the check an image with its agent removed fails.
//!
//! The stack's namespace has no route out, so debootstrap cannot reach the mirror from inside
//! it: the packages are first fetched in the host's namespace with `debootstrap --make-tarball`
//! (skipped with the reason when deb.debian.org is unreachable), and the build takes them from
//! that tarball (`--debootstrap-tarball`). `BANGER_E2E_DEBOOTSTRAP_TARBALL=/path.tgz` keeps
//! the tarball between runs (made there when missing).
//!
//! Needs the workspace binaries: `cargo build --workspace --bins`.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_e2e::{Stack, text};
use banger_testkit::{bin_path, require_root, skip, wait_until_blocking};

/// Exit code of bad input.
const USAGE: i32 = 2;

/// The stand-in kernel every image of these tests is registered with (the simulator boots no
/// kernel; stord and the Firecracker API need a readable file).
fn kernel(stack: &Stack) -> PathBuf {
    let k = stack.dir.join("vmlinux");
    if !k.exists() {
        std::fs::write(&k, b"banger e2e: simulator stand-in for a kernel\n").unwrap();
    }
    k
}

/// `banger up`, then waits until stord answers image requests (on a loaded machine the first
/// discovery after start-up can miss it).
fn up(stack: &Stack) {
    stack.up();
    wait_until_blocking("stord to answer", Duration::from_secs(30), || {
        stack.banger(&["image", "list"]).status.success()
    });
}

/// Makes the runtime bundle's SSH key of the stack.
fn make_bundle_key(stack: &Stack) {
    let key = stack.state_dir().join("ssh/id_ed25519");
    if key.exists() {
        return;
    }
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger-e2e", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", text(&out));
}

/// Everything a failed build might leave: scratch directories, image files, mounts and loop
/// devices under the stack's directory, registered images.
fn assert_nothing_left(stack: &Stack, context: &str) {
    let images = stack.state_dir().join("images");
    let files: Vec<String> = std::fs::read_dir(&images)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        files.is_empty(),
        "{context}: left in {}: {files:?}",
        images.display()
    );
    let dir = stack.dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir)).collect();
    assert!(ours.is_empty(), "{context}: mounts left: {ours:?}");
    assert!(
        loops_under(&stack.dir).is_empty(),
        "{context}: loop devices left"
    );
    let list: serde_json::Value =
        serde_json::from_str(&stack.banger_ok(&["--json", "image", "list"])).unwrap();
    assert_eq!(
        list["images"],
        serde_json::json!([]),
        "{context}: registered"
    );
}

/// `losetup -a` lines naming a file under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let out = Command::new("losetup").arg("-a").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

/// Asserts `out` failed with `code` and says `needle` on stderr.
fn assert_refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

/// A tiny root tree that customisation and verify accept: runit's directories (a "Void"), the
/// C library the host's agent needs, a stand-in sshd, an os-release that names it.
fn tiny_void_tree(root: &Path, filler_mib: u64) {
    for d in [
        "etc/runit/runsvdir/default",
        "etc/sv/sshd",
        "etc/ssh",
        "usr/sbin",
        "usr/bin",
        "bin",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/ssh/sshd_config"),
        "PasswordAuthentication yes\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/sbin/sshd"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"banger e2e tiny void\"\nID=void\nPRETTY_NAME=\"tiny void (banger e2e)\"\n",
    )
    .unwrap();
    // The dynamic loader and libraries the agent links against, at the same paths.
    let ldd = Command::new("ldd")
        .arg(bin_path("banger-agent"))
        .output()
        .unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            let dest = root.join(word.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(word, &dest).unwrap();
        }
    }
    // A shell and cat, for exec in the booted VM.
    for tool in ["/bin/sh", "/bin/cat"] {
        let real = std::fs::canonicalize(tool).unwrap();
        std::fs::copy(&real, root.join(tool.trim_start_matches('/'))).unwrap();
    }
    if filler_mib > 0 {
        let f = std::fs::File::create(root.join("filler")).unwrap();
        // Real blocks (not a hole), so the tree is as big as it says.
        let ok = Command::new("fallocate")
            .args(["-l", &format!("{filler_mib}M")])
            .arg(root.join("filler"))
            .status()
            .unwrap();
        assert!(ok.success());
        drop(f);
    }
}

/// A tarball of a tiny Void tree under `dir`.
fn tiny_void_tarball(dir: &Path, filler_mib: u64) -> PathBuf {
    let tree = dir.join(format!("void-tree-{filler_mib}"));
    tiny_void_tree(&tree, filler_mib);
    let tarball = dir.join(format!("void-rootfs-{filler_mib}.tar"));
    let out = Command::new("tar")
        .args(["--numeric-owner", "-cf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", text(&out));
    std::fs::remove_dir_all(&tree).unwrap();
    tarball
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_left() {
    if !require_root() {
        return;
    }
    let stack = Stack::new("imgbad");
    up(&stack);
    let k = kernel(&stack);
    let k = k.to_str().unwrap();

    // Refused by the command line itself.
    let out = stack.banger(&[
        "image", "build", "debian", "--suite", "buster", "--kernel", k,
    ]);
    assert_refused(&out, USAGE, "unknown Debian suite \"buster\"");
    assert_refused(&out, USAGE, "bookworm, trixie, bullseye, sid");
    let out = stack.banger(&["image", "build", "debian", "--size", "64M", "--kernel", k]);
    assert_refused(
        &out,
        USAGE,
        "image size 64M is too small: the minimum is 256M",
    );
    assert_nothing_left(&stack, "flags");

    // No SSH key: says how to make one.
    let out = stack.banger(&["image", "build", "debian", "--kernel", k]);
    assert_refused(&out, USAGE, "ssh-keygen -t ed25519");
    assert_nothing_left(&stack, "missing key");

    // No kernel: says what to pass.
    make_bundle_key(&stack);
    let out = stack.banger(&["image", "build", "debian"]);
    assert_refused(&out, USAGE, "pass --kernel PATH");

    // An unwritable state directory (immutable images directory: even root cannot write).
    let images = stack.state_dir().join("images");
    std::fs::create_dir_all(&images).unwrap();
    if Command::new("chattr")
        .arg("+i")
        .arg(&images)
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = stack.banger(&["image", "build", "debian", "--kernel", k]);
        let _ = Command::new("chattr").arg("-i").arg(&images).status();
        assert_refused(&out, USAGE, "state directory is not writable");
    } else {
        skip(
            "the unwritable-state-dir case did not run: chattr +i is not supported on this file \
             system",
        );
    }
    assert_nothing_left(&stack, "unwritable state dir");

    // A size the packages do not fit in: found after unpacking, unwound completely.
    let tarball = tiny_void_tarball(&stack.dir, 200);
    let out = stack.banger(&[
        "image",
        "build",
        "void",
        "--rootfs-tarball",
        tarball.to_str().unwrap(),
        "--size",
        "300M",
        "--kernel",
        k,
    ]);
    assert_refused(&out, USAGE, "image size 300M is too small for the packages");
    assert_refused(&out, USAGE, "--size 512M or more");
    assert_nothing_left(&stack, "too small for the packages");

    // A missing tarball.
    let out = stack.banger(&[
        "image",
        "build",
        "void",
        "--rootfs-tarball",
        "/nonexistent/void.tar.xz",
        "--kernel",
        k,
    ]);
    assert_refused(&out, USAGE, "does not exist");
    assert_nothing_left(&stack, "missing tarball");
}

#[test]
fn a_void_image_from_a_tarball_builds_verifies_and_runs_its_own_agent() {
    if !require_root() {
        return;
    }
    let stack = Stack::new("imgvoid");
    up(&stack);
    make_bundle_key(&stack);
    let k = kernel(&stack);
    let tarball = tiny_void_tarball(&stack.dir, 0);
    let out = stack.banger_ok(&[
        "image",
        "build",
        "void",
        "--rootfs-tarball",
        tarball.to_str().unwrap(),
        "--size",
        "256M",
        "--name",
        "tiny",
        "--kernel",
        k.to_str().unwrap(),
    ]);
    assert!(out.contains("built and registered image tiny"), "{out}");
    let report = stack.banger_ok(&["image", "verify", "tiny"]);
    assert!(report.contains("verify: all 6 checks passed"), "{report}");
    assert!(
        report.contains("runit: /etc/runit/runsvdir/default/banger-agent enabled"),
        "{report}"
    );

    stack.banger_ok(&["vm", "create", "v1", "--image", "tiny", "--wait"]);
    let health: serde_json::Value =
        serde_json::from_str(&stack.banger_ok(&["--json", "vm", "health", "v1"])).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    // The agent runs inside the image: it sees the image's os-release, not the host's.
    let os = stack.banger_ok(&["vm", "exec", "v1", "--", "cat", "/etc/os-release"]);
    assert!(os.contains("tiny void (banger e2e)"), "{os}");
    stack.banger_ok(&["vm", "delete", "v1"]);
    assert!(
        loops_under(&stack.dir).is_empty(),
        "{:?}",
        loops_under(&stack.dir)
    );
}

/// Whether deb.debian.org answers on port 80 from the host's namespace.
fn mirror_reachable() -> Result<(), String> {
    let addrs = ("deb.debian.org", 80)
        .to_socket_addrs()
        .map_err(|e| format!("deb.debian.org does not resolve: {e}"))?;
    for a in addrs {
        if TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
    }
    Err("deb.debian.org:80 does not answer".into())
}

/// The bookworm packages banger's Debian build installs, as a `debootstrap --make-tarball`
/// tarball fetched in the host's namespace (kept at `BANGER_E2E_DEBOOTSTRAP_TARBALL` when set).
fn debootstrap_tarball(stack: &Stack) -> PathBuf {
    let keep = std::env::var_os("BANGER_E2E_DEBOOTSTRAP_TARBALL").map(PathBuf::from);
    if let Some(t) = keep.as_ref().filter(|t| t.is_file()) {
        return t.clone();
    }
    let tarball = keep.unwrap_or_else(|| stack.dir.join("bookworm-debs.tgz"));
    let work = stack.dir.join("make-tarball");
    let started = Instant::now();
    let out = Command::new("debootstrap")
        .arg(format!("--make-tarball={}", tarball.display()))
        .args(["--variant=minbase", "--components=main"])
        .arg(format!(
            "--include={}",
            banger_imagebuild::packages::DEBIAN_BASE.join(",")
        ))
        .arg("bookworm")
        .arg(&work)
        .arg("http://deb.debian.org/debian")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap --make-tarball: {}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&work);
    eprintln!(
        "fetched the bookworm packages in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tarball
}

#[test]
fn the_debian_image_builds_verifies_and_boots_with_its_own_agent() {
    if !require_root() {
        return;
    }
    if banger_imagebuild::spec::find_in_path("debootstrap").is_none() {
        skip("debootstrap is not installed (./scripts/setup installs it)");
        return;
    }
    if let Err(why) = mirror_reachable() {
        skip(&format!("the Debian mirror is unreachable: {why}"));
        return;
    }
    let stack = Stack::new("imgdeb");
    up(&stack);
    make_bundle_key(&stack);
    let k = kernel(&stack);
    let k = k.to_str().unwrap();
    let tarball = debootstrap_tarball(&stack);
    let tarball = tarball.to_str().unwrap();
    let build = [
        "image",
        "build",
        "debian",
        "--debootstrap-tarball",
        tarball,
        "--size",
        "1G",
        "--kernel",
        k,
    ];

    // Ctrl-C during debootstrap: the build stops, and nothing is left.
    let mut child = stack
        .command()
        .args(build)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the build ended before debootstrap started:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("[2/6] debootstrap:") {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{seen}{rest}");
    assert!(rest.contains("image build cancelled"), "{seen}{rest}");
    assert_nothing_left(&stack, "Ctrl-C");
    let debootstraps = Command::new("pgrep")
        .args(["-f", "debootstrap"])
        .output()
        .unwrap();
    let stray: Vec<String> = String::from_utf8_lossy(&debootstraps.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(stack.dir.to_str().unwrap()))
        })
        .map(str::to_owned)
        .collect();
    assert!(stray.is_empty(), "debootstrap left running: {stray:?}");

    // The build.
    let started = Instant::now();
    let out = stack.banger(&build);
    eprintln!(
        "banger image build debian (from the package tarball) took {:.1}s:\n{}",
        started.elapsed().as_secs_f64(),
        text(&out)
    );
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for stage in [
        "[1/6] validate",
        "[2/6] debootstrap",
        "[3/6] customise",
        "[4/6] mkfs",
        "[5/6] verify",
        "[6/6] register",
    ] {
        assert!(err.contains(stage), "no {stage} in:\n{err}");
    }
    assert!(
        stack.state_dir().join("images/debian.ext4").is_file(),
        "no image file"
    );
    assert!(banger_imagebuild::scratch::leftovers(&stack.state_dir().join("images")).is_empty());

    let report = stack.banger_ok(&["image", "verify", "debian"]);
    assert!(report.contains("verify: all 6 checks passed"), "{report}");
    assert!(report.contains("the runtime bundle's key"), "{report}");
    assert!(
        report
            .contains("systemd: /etc/systemd/system/multi-user.target.wants/banger-agent.service"),
        "{report}"
    );

    // A VM from it: the simulator runs the image's own agent, chrooted into the image.
    stack.banger_ok(&["vm", "create", "web", "--image", "debian", "--wait"]);
    let health: serde_json::Value =
        serde_json::from_str(&stack.banger_ok(&["--json", "vm", "health", "web"])).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let os = stack.banger_ok(&["vm", "exec", "web", "--", "cat", "/etc/os-release"]);
    assert!(os.contains("VERSION_CODENAME=bookworm"), "{os}");
    // Files only the image has (the host has neither).
    let fstab = stack.banger_ok(&["vm", "exec", "web", "--", "cat", "/etc/fstab"]);
    assert!(fstab.contains("/dev/vdb  /root"), "{fstab}");
    stack.banger_ok(&[
        "vm",
        "exec",
        "web",
        "--",
        "test",
        "-x",
        "/usr/local/lib/banger/guest-setup",
    ]);
    let logs = stack.banger_ok(&["vm", "logs", "web"]);
    assert!(
        logs.contains("from the root drive runs chrooted into it"),
        "{logs}"
    );

    // SSH for real: the image's own sshd (started by hand: the simulator runs no init) lets root
    // in with the runtime bundle's key and refuses passwords.
    stack.banger_ok(&[
        "vm",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "ssh-keygen -A >/dev/null && mkdir -p /run/sshd && /usr/sbin/sshd -t && /usr/sbin/sshd",
    ]);
    let ssh = stack.banger(&[
        "vm",
        "ssh",
        "web",
        "--",
        "-o",
        "BatchMode=yes",
        "cat",
        "/etc/debian_version",
    ]);
    assert!(
        ssh.status.success(),
        "ssh with the bundle key: {}",
        text(&ssh)
    );
    assert!(
        String::from_utf8_lossy(&ssh.stdout).starts_with("12."),
        "{}",
        text(&ssh)
    );
    let password = stack.banger(&[
        "vm",
        "ssh",
        "web",
        "--",
        "-o",
        "BatchMode=yes",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "true",
    ]);
    assert!(!password.status.success(), "{}", text(&password));
    assert!(
        text(&password).contains("Permission denied (publickey)"),
        "{}",
        text(&password)
    );

    // The work disk is /root and keeps its files across stop and start.
    stack.banger_ok(&[
        "vm",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo kept > /root/note",
    ]);
    stack.banger_ok(&["vm", "stop", "web"]);
    wait_until_blocking("the loop devices to go", Duration::from_secs(10), || {
        loops_under(&stack.dir).is_empty()
    });
    stack.banger_ok(&["vm", "start", "web"]);
    // `vm start` returns when the VM runs; the agent needs its moment (mounts, chroot).
    wait_until_blocking("the agent after start", Duration::from_secs(30), || {
        stack.banger(&["vm", "health", "web"]).status.success()
    });
    let note = stack.banger_ok(&["vm", "exec", "web", "--", "cat", "/root/note"]);
    assert_eq!(note.trim(), "kept");
    stack.banger_ok(&["vm", "delete", "web"]);
    assert!(
        loops_under(&stack.dir).is_empty(),
        "{:?}",
        loops_under(&stack.dir)
    );

    // A broken image: verify names the failed check and exits 1.
    let broken = stack.dir.join("broken.ext4");
    let cp = Command::new("cp")
        .arg("--sparse=always")
        .arg(stack.state_dir().join("images/debian.ext4"))
        .arg(&broken)
        .status()
        .unwrap();
    assert!(cp.success());
    let rm = Command::new("debugfs")
        .args(["-w", "-R", "rm /usr/local/bin/banger-agent"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", text(&rm));
    stack.banger_ok(&[
        "image",
        "register",
        "broken",
        "--kernel",
        k,
        "--rootfs",
        broken.to_str().unwrap(),
    ]);
    let out = stack.banger(&["image", "verify", "broken"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("FAIL  agent ") && report.contains("banger-agent is missing"),
        "{report}"
    );
    assert!(report.contains("checks failed: agent"), "{report}");
}
