//! `banger tui` as a user sees it: the real binary in a real terminal (tmux), against the whole
//! local stack (`banger up --vmm sim`: the real vm-controller, stord, netd, dnsd and agent, with
//! the Firecracker SIMULATOR in place of the hypervisor). Keys go in with `tmux send-keys`, the
//! screen comes out with `tmux capture-pane`, and what the screen claims is checked against
//! `banger vm list --json`.
//!
//! The tmux server runs inside the stack's network namespace (it starts the TUI there) on a
//! private socket in a temporary directory, and is killed when the test ends, also on failure.
//!
//! Needs root, tmux, mkfs.ext4 and the workspace binaries (`cargo build --workspace --bins`).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_e2e::{Stack, text};
use banger_testkit::{have_program, require_root, skip};

/// The terminal's size: wide enough for the table and both panes side by side.
const COLS: &str = "140";
const ROWS: &str = "40";
/// How long one change may take to show on screen: a VM create or stop under the simulator
/// takes a few seconds on a loaded 2-core machine.
const SCREEN_DEADLINE: Duration = Duration::from_secs(90);

/// A tmux server on a private socket, running `banger tui` in its only pane; killed on drop.
struct Tmux {
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `banger <stack flags> tui` in a detached session inside the stack's namespace,
    /// with the environment `Stack::command` gives every banger command.
    fn start(stack: &Stack) -> Self {
        let banger = stack.command();
        let args: Vec<OsString> = banger.get_args().map(OsString::from).collect();
        // `ip netns exec NS banger FLAGS...`: keep the namespace part, put tmux in between.
        assert_eq!(args[..2], ["netns", "exec"], "{args:?}");
        let mut prefix = vec![banger.get_program().to_owned()];
        prefix.extend_from_slice(&args[..3]);
        let envs = banger
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect::<Vec<_>>();
        Self::start_with(&prefix, &args[3..], &envs)
    }

    /// Starts `BANGER_ARGV tui` (after `prefix`, a command that runs tmux where it should run,
    /// or nothing) in a detached session.
    fn start_with(
        prefix: &[OsString],
        banger_argv: &[OsString],
        envs: &[(OsString, OsString)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sock");
        let conf = dir.path().join("tmux.conf");
        let pane = dir.path().join("pane");
        // Keep the pane after the TUI exits (to read how it ended) and give the whole window to
        // the pane.
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n").unwrap();
        let (program, prefix_args) = prefix
            .split_first()
            .map_or((OsString::from("tmux"), &[][..]), |(p, a)| (p.clone(), a));
        let mut cmd = Command::new(&program);
        cmd.args(prefix_args);
        if !prefix.is_empty() {
            cmd.arg("tmux");
        }
        cmd.arg("-S")
            .arg(&socket)
            .arg("-f")
            .arg(&conf)
            .args([
                "new-session",
                "-d",
                "-s",
                "tui",
                "-x",
                COLS,
                "-y",
                ROWS,
                "--",
            ])
            // A shell around the TUI records how it ended: its exit status, then the terminal
            // settings it left behind (`stty -a`: raw mode must be off again). tmux's own
            // `pane_dead_status` can lag behind the pane's death, and a dead pane's screen is
            // reset.
            .args([
                "sh",
                "-c",
                "\"$@\"; echo $? > \"$0.status\"; stty -a > \"$0.stty\"",
            ])
            .arg(&pane)
            .args(banger_argv)
            .arg("tui")
            .envs(envs.iter().map(|(k, v)| (k, v)));
        let tmux = Self { socket, dir };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "starting tmux: {}", text(&out));
        tmux
    }

    /// Waits for the TUI to exit; returns its exit status and the terminal settings it left
    /// (`stty -a`).
    fn wait_exit(&self) -> (String, String) {
        let status = self.dir.path().join("pane.status");
        let stty = self.dir.path().join("pane.stty");
        banger_testkit::wait_until_blocking("the TUI to exit", SCREEN_DEADLINE, || {
            std::fs::read_to_string(&stty).is_ok_and(|s| !s.is_empty())
        });
        (
            std::fs::read_to_string(status).unwrap().trim().to_owned(),
            std::fs::read_to_string(stty).unwrap(),
        )
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses keys by tmux name (`Tab`, `Enter`, `BSpace`, `c`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "tui", "-l", text]);
    }

    /// The screen as text.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "tui"])
    }

    /// Waits until the screen satisfies `cond`; panics with the last screen after
    /// [`SCREEN_DEADLINE`].
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + SCREEN_DEADLINE;
        let mut last = String::new();
        let mut met = false;
        banger_testkit::wait_until_blocking(what, SCREEN_DEADLINE, || {
            last = self.screen();
            met = cond(&last);
            met || Instant::now() >= end
        });
        assert!(met, "timed out waiting for {what}; the screen:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// The cells of VM `name`'s table row after its name and host: STATE IP CPUS MEM UPTIME
/// HEALTH.
fn row_cells(screen: &str, name: &str, host: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '│' || c == '>')
            .filter(|w| !w.is_empty())
            .collect();
        let at = words
            .windows(2)
            .position(|w| w[0] == name && w[1] == host)?;
        Some(words[at + 2..].iter().map(|w| (*w).to_owned()).collect())
    })
}

/// The STATE cell of VM `name`'s table row.
fn row_state(screen: &str, name: &str, host: &str) -> Option<String> {
    row_cells(screen, name, host).and_then(|c| c.first().cloned())
}

/// The TUI restored the terminal: line editing and echo are on again (raw mode turns them off).
fn assert_cooked(stty: &str) {
    let flags: Vec<&str> = stty.split_whitespace().collect();
    assert!(
        flags.contains(&"icanon") && flags.contains(&"echo"),
        "raw mode left on: {stty}"
    );
}

/// `name`'s state according to `banger vm list --json`.
fn listed_state(stack: &Stack, name: &str) -> Option<String> {
    let out = stack.banger_ok(&["vm", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["name"] == name)
        .map(|vm| vm["state"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn the_tui_creates_and_stops_a_vm_and_follows_events_from_elsewhere() {
    if !require_root() {
        return;
    }
    for program in ["tmux", "mkfs.ext4"] {
        if !have_program(program) {
            return skip(&format!("{program} is not installed"));
        }
    }
    let stack = Stack::new("tui");
    stack.up();
    stack.register_image("debian");
    let host = stack.host.clone();
    // Declared after the stack: dropped (tmux killed) before the stack goes down.
    let tui = Tmux::start(&stack);
    tui.wait_for("the empty table", |s| s.contains("no VMs yet"));

    // The form refuses zero cpus inline, and nothing reaches the controller.
    tui.keys(&["c"]);
    tui.wait_for("the create form", |s| s.contains("create a VM"));
    tui.type_text("web");
    tui.keys(&["Tab", "Tab"]);
    tui.type_text("0");
    tui.keys(&["Enter"]);
    tui.wait_for("the inline cpus error", |s| {
        s.contains("cpus must be a whole number greater than 0")
    });
    assert_eq!(
        listed_state(&stack, "web"),
        None,
        "an invalid form sent a create"
    );

    // Fixed (the focus is on the bad field): the VM is created, started, and its row says so.
    tui.keys(&["BSpace"]);
    tui.type_text("1");
    tui.keys(&["Tab"]);
    tui.type_text("256M");
    tui.keys(&["Enter"]);
    let screen = tui.wait_for("web running in the table", |s| {
        row_state(s, "web", &host).as_deref() == Some("running")
    });
    eprintln!("the TUI with web running:\n{screen}");
    assert!(
        !screen.contains("create a VM"),
        "the form closed:\n{screen}"
    );
    assert_eq!(listed_state(&stack, "web").as_deref(), Some("running"));

    // The agent answers in the simulated guest: the health column says so.
    tui.wait_for("web healthy in the table", |s| {
        row_cells(s, "web", &host)
            .and_then(|c| c.get(5).cloned())
            .as_deref()
            == Some("ok")
    });

    // exec: the command's output and status in a popup.
    tui.keys(&["e"]);
    tui.wait_for("the exec prompt", |s| s.contains("web$ _"));
    tui.type_text("sh -c 'echo hi-from-tui; exit 3'");
    tui.keys(&["Enter"]);
    tui.wait_for("the exec output", |s| {
        s.contains("hi-from-tui") && s.contains("[exit status 3]")
    });
    tui.keys(&["Escape"]);
    tui.wait_for("the exec popup closed", |s| !s.contains("hi-from-tui"));

    // ssh: the TUI steps aside for the real `ssh` (the simulated guest runs no sshd, so the
    // session ends at once), takes the terminal back, asks vm.health and reminds that the VM
    // still runs.
    tui.keys(&["Enter"]);
    tui.wait_for("the reminder after ssh", |s| {
        s.contains("web is still running; stop it with `banger vm stop web`")
            && row_state(s, "web", &host).as_deref() == Some("running")
    });

    // Stop from the TUI.
    tui.keys(&["x"]);
    tui.wait_for("web stopped in the table", |s| {
        row_state(s, "web", &host).as_deref() == Some("stopped")
    });
    assert_eq!(listed_state(&stack, "web").as_deref(), Some("stopped"));

    // Someone else starts and stops it: the events alone change the row.
    stack.banger_ok(&["vm", "start", "web"]);
    tui.wait_for("web running after `banger vm start` elsewhere", |s| {
        row_state(s, "web", &host).as_deref() == Some("running")
    });
    stack.banger_ok(&["vm", "stop", "web"]);
    let screen = tui.wait_for("web stopped after `banger vm stop` elsewhere", |s| {
        row_state(s, "web", &host).as_deref() == Some("stopped")
    });
    // The details pane lists the VM's latest events.
    assert!(
        screen.contains("stopped  -> stopped") && screen.contains("started  -> running"),
        "{screen}"
    );

    // NATS goes away: the title says so. `banger up` brings it back; the TUI reconnects, lists again, and follows events as before.
    let nats = stack.pid_of("nats-server").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nats),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tui.wait_for("the title to say DISCONNECTED", |s| {
        s.contains("DISCONNECTED")
    });
    // Without --config: `up` reads the stack file, so it restarts the nats-server it manages
    // with the same port and credentials.
    stack.banger_ok(&["up", "--vmm", "sim"]);
    tui.wait_for("the title to say connected again", |s| {
        s.contains("connected, live") && !s.contains("DISCONNECTED")
    });
    stack.banger_ok(&["vm", "start", "web"]);
    tui.wait_for("web running after the reconnect", |s| {
        row_state(s, "web", &host).as_deref() == Some("running")
    });

    // Delete asks first; `y` deletes, and the row goes.
    tui.keys(&["d"]);
    tui.wait_for("the delete confirmation", |s| s.contains("Delete web"));
    tui.keys(&["y"]);
    tui.wait_for("the row gone", |s| {
        row_state(s, "web", &host).is_none() && s.contains("no VMs yet")
    });
    assert_eq!(listed_state(&stack, "web"), None);

    // q quits cleanly.
    tui.keys(&["q"]);
    let (status, stty) = tui.wait_exit();
    assert_eq!(status, "0", "q quits with status 0");
    assert_cooked(&stty);
}

#[test]
fn the_tui_shows_a_dropped_connection_and_restores_the_terminal_on_sigterm() {
    for program in ["tmux", "nats-server"] {
        if !have_program(program) {
            return skip(&format!("{program} is not installed"));
        }
    }
    // A bus with no banger services on it: the list cannot be had, and the TUI says so.
    let mut nats = banger_testkit::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<OsString> = [
        banger_testkit::bin_path("banger").into_os_string(),
        "--nats-url".into(),
        nats.url().into(),
        "--state-dir".into(),
        dir.path().join("state").into_os_string(),
        "--runtime-dir".into(),
        dir.path().join("run").into_os_string(),
    ]
    .into();
    let envs = [
        ("NO_COLOR".into(), "1".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    let tui = Tmux::start_with(&[], &argv, &envs);
    tui.wait_for("the failed list", |s| {
        s.contains("listing VMs failed: no vm-controller answered") && s.contains("connected, live")
    });

    // The server dies: DISCONNECTED. It comes back: connected again, without a key pressed.
    nats.stop();
    tui.wait_for("the title to say DISCONNECTED", |s| {
        s.contains("DISCONNECTED")
    });
    nats.restart();
    tui.wait_for("the title to say connected again", |s| {
        s.contains("connected, live") && !s.contains("DISCONNECTED")
    });

    // SIGTERM: the TUI ends as with `q`, and gives the terminal back.
    let needle = dir.path().to_string_lossy().into_owned();
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with(&*argv[0].to_string_lossy()) && c.contains(&needle)
            })
        })
        .collect();
    assert_eq!(pids.len(), 1, "one banger tui process: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, stty) = tui.wait_exit();
    assert_eq!(status, "0", "SIGTERM ends the TUI with status 0");
    assert_cooked(&stty);
}
