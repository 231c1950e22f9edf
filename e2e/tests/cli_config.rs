//! The CLI finds its bus in the user's own config file (`~/.config/banger/config.toml`, or under
//! `$XDG_CONFIG_HOME`), like a `nats context`, when no flag or environment variable says
//! otherwise.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use banger_bus::Bus;
use banger_proto::event::{EventKind, VmEvent};
use banger_proto::{HostId, Subjects};
use banger_testkit::{NatsServer, bin_path};

#[tokio::test]
async fn the_cli_reads_nats_settings_from_the_users_config_file() {
    let nats = NatsServer::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("banger")).unwrap();
    // A prefix of its own proves the file, not a default, chose the subjects.
    std::fs::write(
        home.path().join("banger/config.toml"),
        format!("prefix = \"lab\"\n\n[nats]\nurls = [\"{}\"]\n", nats.url()),
    )
    .unwrap();

    let mut child = Command::new(bin_path("banger"))
        .args(["--json", "events", "--count", "1"])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("BANGER_NATS_URL")
        .env_remove("BANGER_PREFIX")
        .env("BANGER_STATE_DIR", home.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("watching lab.events."),
        "the CLI did not use the user's config: {line:?}"
    );

    let bus = Bus::new(
        async_nats::connect(nats.url()).await.unwrap(),
        Subjects::new("lab").unwrap(),
    );
    let host = HostId::new("h1").unwrap();
    let event = banger_e2e::sample_event(
        "web",
        "0000000000000000000000000000000c",
        EventKind::Created,
        1,
    );
    bus.publish_event(&host, &event).await.unwrap();
    bus.client().flush().await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: VmEvent = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, event);
}
