//! `banger image register|list|show|remove` as a user runs them, against a real nats-server and
//! the real `banger-stord` (no other service is needed for images): output, JSON, exit codes,
//! and the error messages of bad paths and names.
//!
//! Needs the workspace binaries: `cargo build --workspace --bins`.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use banger_testkit::{NatsServer, Process, bin_path, have_program, skip, wait_until_blocking};

const HOST: &str = "imgclihost";

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Stack {
    nats: NatsServer,
    dir: PathBuf,
    stord: Option<Process>,
}

impl Stack {
    fn start() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("banger-imgcli-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nats = NatsServer::start();
        let mut cmd = Command::new(bin_path("banger-stord"));
        cmd.args(["--nats-url", &nats.url(), "--host-id", HOST])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .args(["--backend", "sparse"])
            .env("RUST_LOG", "warn");
        let stack = Self {
            stord: Some(Process::spawn("banger-stord", cmd)),
            nats,
            dir,
        };
        wait_until_blocking("stord to answer", Duration::from_secs(30), || {
            stack.banger(&["image", "list"]).status.success()
        });
        stack
    }

    /// Runs `banger` from the stack's directory (so relative paths resolve there).
    fn banger(&self, args: &[&str]) -> Output {
        Command::new(bin_path("banger"))
            .current_dir(&self.dir)
            .arg("--state-dir")
            .arg(self.dir.join("cli-state"))
            .arg("--runtime-dir")
            .arg(self.dir.join("run"))
            .args(["--nats-url", &self.nats.url(), "--host-id", HOST])
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("BANGER_CONFIG")
            .output()
            .unwrap()
    }

    /// A kernel file and a real ext4 rootfs under `<dir>/images`.
    fn image_files(&self) -> (PathBuf, PathBuf) {
        let images = self.dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        let kernel = images.join("vmlinux");
        std::fs::write(&kernel, b"\x7fELF not really a kernel").unwrap();
        let rootfs = images.join("rootfs.ext4");
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&rootfs)
            .arg("16M")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        (kernel, rootfs)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        drop(self.stord.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn can_run() -> bool {
    if !have_program("mkfs.ext4") {
        skip("mkfs.ext4 is not installed (apt-get install e2fsprogs)");
        return false;
    }
    true
}

#[test]
fn image_register_list_show_remove_through_the_cli() {
    if !can_run() {
        return;
    }
    let s = Stack::start();
    let (_kernel, rootfs) = s.image_files();

    let o = s.banger(&["image", "list"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "only the header: {}",
        text(&o)
    );

    // A relative kernel path is resolved against the current directory.
    let o = s.banger(&[
        "image",
        "register",
        "debian",
        "--kernel",
        "images/vmlinux",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--disk",
        "2G",
        "--kernel-args",
        "console=ttyS0 quiet",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("registered image debian on {HOST}")),
        "{out}"
    );
    let canon_rootfs = std::fs::canonicalize(&rootfs).unwrap();
    let canon_kernel = std::fs::canonicalize(s.dir.join("images/vmlinux")).unwrap();
    assert!(out.contains(canon_rootfs.to_str().unwrap()), "{out}");
    assert!(out.contains(canon_kernel.to_str().unwrap()), "{out}");
    assert!(out.contains("kernel args: console=ttyS0 quiet"), "{out}");
    assert!(out.contains("work disk:   2G by default"), "{out}");

    let o = s.banger(&["image", "list"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = stdout(&o);
    let row = out.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.first(), Some(&"debian"), "{out}");
    assert_eq!(cells.get(1), Some(&HOST), "{out}");
    assert!(cells.contains(&"16.0M") && cells.contains(&"2G"), "{out}");

    let o = s.banger(&["--json", "image", "list"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"][0]["name"], "debian");
    assert_eq!(v["images"][0]["host"], HOST);
    assert_eq!(v["images"][0]["default_disk_mib"], 2048);
    assert_eq!(v["unreachable_hosts"], serde_json::json!([]));

    let o = s.banger(&["image", "show", "debian"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        stdout(&o).contains(&format!("host:        {HOST}")),
        "{}",
        text(&o)
    );
    let o = s.banger(&["--json", "image", "show", "debian", "--host", HOST]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rootfs"], canon_rootfs.to_str().unwrap());
    assert_eq!(v["kernel_args"], "console=ttyS0 quiet");

    let o = s.banger(&["image", "remove", "debian"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(stdout(&o).contains("removed image debian"), "{}", text(&o));
    assert!(rootfs.exists(), "the files are left in place");

    // Gone: not found is exit code 4.
    for args in [["image", "show", "debian"], ["image", "remove", "debian"]] {
        let o = s.banger(&args);
        assert_eq!(code(&o), 4, "{args:?}: {}", text(&o));
        assert!(
            stderr(&o).contains("no image named debian is registered"),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn bad_image_input_gets_a_clear_error_and_exit_code() {
    if !can_run() {
        return;
    }
    let mut s = Stack::start();
    let (kernel, rootfs) = s.image_files();
    let (k, r) = (kernel.to_str().unwrap(), rootfs.to_str().unwrap());
    let o = s.banger(&["image", "register", "base", "--kernel", k, "--rootfs", r]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    let missing = s.dir.join("images/missing-vmlinux");
    let images_dir = s.dir.join("images");
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        // A missing file: not found (4), and the message names the path.
        (
            vec![
                "register",
                "x",
                "--kernel",
                missing.to_str().unwrap(),
                "--rootfs",
                r,
            ],
            4,
            format!("the kernel \"{}\" cannot be found", missing.display()),
        ),
        // A directory where a file belongs: invalid argument (2).
        (
            vec![
                "register",
                "x",
                "--kernel",
                k,
                "--rootfs",
                images_dir.to_str().unwrap(),
            ],
            2,
            "is not a regular file (it is a directory)".to_owned(),
        ),
        // A kernel where the rootfs belongs.
        (
            vec!["register", "x", "--kernel", k, "--rootfs", k],
            2,
            "is not an ext4 image".to_owned(),
        ),
        // A duplicate: conflict (1).
        (
            vec!["register", "base", "--kernel", k, "--rootfs", r],
            1,
            "an image named base is already registered".to_owned(),
        ),
        // Names and sizes are refused by the CLI before anything is sent (usage, 2).
        (
            vec!["register", "../etc", "--kernel", k, "--rootfs", r],
            2,
            "image name".to_owned(),
        ),
        (
            vec!["register", "a/b", "--kernel", k, "--rootfs", r],
            2,
            "image name".to_owned(),
        ),
        (
            vec!["register", "x", "--kernel", k, "--rootfs", r, "--disk", "0"],
            2,
            "greater than 0".to_owned(),
        ),
        (vec!["show", "Bad_Name"], 2, "image name".to_owned()),
    ];
    for (args, want_code, want_msg) in cases {
        let mut full = vec!["image"];
        full.extend(args.iter().copied());
        let o = s.banger(&full);
        assert_eq!(code(&o), want_code, "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains(&want_msg), "{args:?}: {}", text(&o));
    }

    // Nothing but the good image was recorded.
    let o = s.banger(&["--json", "image", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, vec!["base"]);

    // Without stord: unavailable (4) and a hint.
    drop(s.stord.take());
    let o = s.banger(&["image", "show", "base"]);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(stderr(&o).contains("no stord answered"), "{}", text(&o));
    assert!(
        !Path::new(&s.dir.join("state/stord/volumes"))
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
}
