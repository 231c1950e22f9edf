//! compose.yaml cannot rot: every command and health check in it names a binary the image
//! ships and flags that binary accepts (each is run with `--help` appended, which clap only
//! reaches after every earlier flag parsed).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::path::Path;
use std::process::Command;

use banger_testkit::bin_path;

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn argv(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Checks one command line from compose.yaml; returns the binary it runs.
fn check_command(service: &str, argv: &[String], dockerfile: &str) -> String {
    let (bin, args) = argv.split_first().unwrap();
    if bin == "nats-server" {
        assert!(
            dockerfile.contains("nats-server"),
            "the image does not install nats-server"
        );
        let help = Command::new("nats-server").arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout).into_owned()
            + &String::from_utf8_lossy(&help.stderr);
        for flag in args.iter().filter(|a| a.starts_with('-')) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag},")),
                "{service}: nats-server has no flag {flag}"
            );
        }
        return bin.clone();
    }
    assert!(
        dockerfile.contains(&format!("target/release/{bin} ")),
        "{service}: the Dockerfile does not ship {bin}"
    );
    let out = Command::new(bin_path(bin))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{service}: `{} --help` was refused:\n{}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    bin.clone()
}

#[test]
fn every_compose_command_names_a_shipped_binary_and_flags_it_accepts() {
    let dockerfile = repo_file("Dockerfile");
    let mut compose: serde_yaml::Value = serde_yaml::from_str(&repo_file("compose.yaml")).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let mut ran = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        ran.push(check_command(name, &argv(&svc["command"]), &dockerfile));
        let test = argv(&svc["healthcheck"]["test"]);
        assert_eq!(test[0], "CMD", "{name}: health check must be an exec form");
        check_command(name, &test[1..], &dockerfile);
    }
    ran.sort();
    assert_eq!(
        ran,
        [
            "banger-dnsd",
            "banger-netd",
            "banger-stord",
            "banger-vm-controller",
            "nats-server"
        ],
        "compose.yaml must run nats-server and every service"
    );
}
