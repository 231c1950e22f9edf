//! `banger init`: write a stack's bus credentials and nats-server config, start nothing.
//!
//! For stacks that something else runs (compose.yaml, a service manager): it writes what
//! `banger up` would, once, and exits.
//!
//! - `<state>/stack.toml` (mode 0600): the bus URL, the user `banger` and a password generated
//!   on the first run and kept on every later one, and the hypervisor choice. Every service
//!   (`--config`) and the CLI (by default) read it, so credentials never appear on a command
//!   line or in the environment.
//! - `<state>/nats/nats.conf` (mode 0600): the nats-server config with the same credentials,
//!   JetStream under `<state>/nats/jetstream`, listening on `--nats-listen` only.
//!
//! Running it again keeps the credentials and rewrites both files (a changed listen address or
//! hypervisor takes effect).

use std::net::SocketAddr;

use anyhow::Context as _;
use banger_bus::config::CommonConfig;

use crate::commands::up::VmmChoice;
use crate::exit;
use crate::stack::{self, StackPaths};

/// The NATS user `banger up` and `banger init` create.
const NATS_USER: &str = "banger";

/// Flags of `banger init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where the stack's nats-server listens (keep it on loopback unless TLS is set up)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:4222")]
    pub nats_listen: SocketAddr,
    /// Hypervisor the stack's vm-controller runs: firecracker, or sim (the simulator)
    #[arg(long, value_enum, default_value_t = VmmChoice::Firecracker)]
    pub vmm: VmmChoice,
}

/// Runs `banger init`.
pub fn run(config: &CommonConfig, args: &InitArgs) -> anyhow::Result<u8> {
    let paths = StackPaths {
        state: config.state_dir.clone(),
        runtime: config.runtime_dir.clone(),
    };
    let vmm = match args.vmm {
        VmmChoice::Sim => "sim",
        VmmChoice::Firecracker => "firecracker",
        VmmChoice::Auto => match stack::real_firecracker_usable() {
            Ok(()) => "firecracker",
            Err(why) => {
                eprintln!("note: {why}; using the Firecracker simulator");
                "sim"
            }
        },
    };
    let stack_file = paths.stack_file();
    let (password, kept) = match existing_password(&stack_file)? {
        Some(p) => (p, true),
        None => (
            stack::random_secret().context("generating the bus password")?,
            false,
        ),
    };
    let store = paths.nats_dir().join("jetstream");
    // Owner-only, like everything `banger up` writes: the state volume holds the credentials.
    banger_bus::private::create_dir_all(&store)
        .with_context(|| format!("creating {}", store.display()))?;
    let conf_path = paths.nats_dir().join("nats.conf");
    let conf = stack::nats_conf(
        &args.nats_listen.to_string(),
        &store,
        NATS_USER,
        &password,
        "banger init",
    );
    stack::write_private(&conf_path, &conf)
        .with_context(|| format!("writing {}", conf_path.display()))?;
    stack::write_private(
        &stack_file,
        &render(args.nats_listen, &password, vmm, &paths)?,
    )
    .with_context(|| format!("writing {}", stack_file.display()))?;
    println!(
        "{} the bus credentials in {} (readable by root only); nats-server config: {}",
        if kept { "kept" } else { "generated" },
        stack_file.display(),
        conf_path.display()
    );
    if vmm == "sim" {
        println!("{}", crate::simulator_banner());
    }
    Ok(exit::OK)
}

/// The password of an earlier `init` (or `up`), when the stack file holds one.
fn existing_password(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(table
        .get("nats")
        .and_then(|n| n.get("password"))
        .and_then(toml::Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_owned))
}

fn render(
    listen: SocketAddr,
    password: &str,
    vmm: &str,
    paths: &StackPaths,
) -> anyhow::Result<String> {
    let mut t = toml::Table::new();
    t.insert("state_dir".into(), paths.state.display().to_string().into());
    t.insert(
        "runtime_dir".into(),
        paths.runtime.display().to_string().into(),
    );
    let mut nats = toml::Table::new();
    nats.insert(
        "urls".into(),
        toml::Value::Array(vec![format!("nats://{listen}").into()]),
    );
    nats.insert("user".into(), NATS_USER.into());
    nats.insert("password".into(), password.into());
    t.insert("nats".into(), nats.into());
    let mut s = toml::Table::new();
    s.insert("vmm".into(), vmm.into());
    t.insert("stack".into(), s.into());
    let mut vmc = toml::Table::new();
    vmc.insert("vmm".into(), vmm.into());
    t.insert("vm-controller".into(), vmc.into());
    Ok(format!(
        "# Written by `banger init`: the stack's bus credentials and settings.\n\
         # Readable by root only; services read it through --config.\n{}",
        toml::to_string(&t)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> CommonConfig {
        let args = banger_bus::config::CommonArgs {
            state_dir: Some(dir.join("state")),
            runtime_dir: Some(dir.join("run")),
            host_id: Some("h1".into()),
            config: Some(dir.join("none.toml")),
            ..Default::default()
        };
        std::fs::write(dir.join("none.toml"), "").unwrap();
        CommonConfig::resolve(&args, "banger-cli").unwrap()
    }

    fn args(listen: &str) -> InitArgs {
        InitArgs {
            nats_listen: listen.parse().unwrap(),
            vmm: VmmChoice::Sim,
        }
    }

    #[test]
    fn credentials_are_generated_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        run(&config, &args("127.0.0.1:4222")).unwrap();
        let stack_file = dir.path().join("state/stack.toml");
        let conf = dir.path().join("state/nats/nats.conf");
        let first = existing_password(&stack_file).unwrap().unwrap();
        assert_eq!(first.len(), 48);
        for f in [&stack_file, &conf] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains(&format!("password: {first:?}")), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:4222\""), "{text}");

        // A second run keeps the password and applies a new listen address.
        run(&config, &args("127.0.0.1:4333")).unwrap();
        assert_eq!(existing_password(&stack_file).unwrap().unwrap(), first);
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("listen: \"127.0.0.1:4333\""), "{text}");
        let stack: toml::Table = std::fs::read_to_string(&stack_file)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            stack["nats"]["urls"][0].as_str(),
            Some("nats://127.0.0.1:4333")
        );
        assert_eq!(stack["vm-controller"]["vmm"].as_str(), Some("sim"));
        assert_eq!(stack["stack"]["vmm"].as_str(), Some("sim"));
    }
}
