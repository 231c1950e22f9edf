//! The guest-image packaging: the install script puts the agent, its config and the right
//! service definition into a root filesystem for systemd (Debian) and runit (Void).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/install-into-rootfs.sh"
);
const AGENT_BIN: &str = env!("CARGO_BIN_EXE_banger-agent");

fn install(root: &Path) -> std::process::Output {
    Command::new("sh")
        .arg(SCRIPT)
        .arg(root)
        .arg(AGENT_BIN)
        .output()
        .unwrap()
}

#[test]
fn install_enables_the_systemd_unit_on_a_systemd_rootfs() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("lib/systemd")).unwrap();
    std::fs::write(root.path().join("lib/systemd/systemd"), "").unwrap();
    let out = install(root.path());
    assert!(out.status.success(), "{out:?}");
    let r = root.path();
    assert!(r.join("usr/local/bin/banger-agent").is_file());
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/banger-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/banger-agent"));
    assert_eq!(
        std::fs::read_link(
            r.join("etc/systemd/system/multi-user.target.wants/banger-agent.service")
        )
        .unwrap(),
        Path::new("/etc/systemd/system/banger-agent.service")
    );
    let cfg = std::fs::read_to_string(r.join("etc/banger/agent.toml")).unwrap();
    assert!(
        cfg.lines()
            .any(|l| l.trim_start().starts_with("allow_exec = true"))
    );
}

#[test]
fn install_links_the_runit_service_on_a_void_rootfs_and_keeps_an_existing_config() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/runit")).unwrap();
    std::fs::create_dir_all(r.join("etc/banger")).unwrap();
    std::fs::write(r.join("etc/banger/agent.toml"), "allow_exec = false\n").unwrap();
    let out = install(r);
    assert!(out.status.success(), "{out:?}");
    assert!(r.join("etc/sv/banger-agent/run").is_file());
    assert!(r.join("etc/sv/banger-agent/log/run").is_file());
    assert_eq!(
        std::fs::read_link(r.join("etc/runit/runsvdir/default/banger-agent")).unwrap(),
        Path::new("/etc/sv/banger-agent")
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/banger/agent.toml")).unwrap(),
        "allow_exec = false\n"
    );
}

#[test]
fn install_refuses_a_rootfs_without_a_known_init() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither systemd nor runit"));
}

#[test]
fn the_shipped_config_is_valid_for_the_agent() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/agent.toml"))
            .unwrap();
    let file: banger_agent::config::FileConfig = toml::from_str(&text).unwrap();
    assert_eq!(file.allow_exec, Some(true));
}
