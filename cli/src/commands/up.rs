//! `banger up`: run the whole single-host stack on this machine.
//!
//! Uses the configured NATS when one answers; otherwise starts a local nats-server (loopback
//! only, JetStream on, generated credentials). Then starts every service in the background,
//! waits until each answers `$SRV.PING`, and says what runs where. Idempotent: a second `up`
//! reports the running stack. If any service fails to come up, everything this run started is
//! stopped again and its log is shown.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use banger_bus::Bus;
use banger_bus::config::{CommonConfig, NatsAuth, NatsOptions};

use crate::progress::Progress;
use crate::stack::{self, NATS, SERVICES, Spawned, StackPaths};
use crate::{exit, output};

/// How long a process a failed `up` started may take to exit after SIGTERM before it is
/// killed.
const FAILED_UP_GRACE: Duration = Duration::from_secs(10);

/// The shortest round of `up`'s wait for the services (a ping, then the liveness check).
const PING_ROUND: Duration = Duration::from_millis(100);

/// How long one probe of an existing NATS may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which hypervisor the local stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VmmChoice {
    /// Real Firecracker when the binary and /dev/kvm are usable, otherwise the simulator
    Auto,
    /// Real Firecracker (fails when it cannot run here)
    Firecracker,
    /// The Firecracker simulator: real host networking and storage, no real guest
    Sim,
}

/// Flags of `banger up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Hypervisor to use
    #[arg(long, value_enum, default_value_t = VmmChoice::Auto)]
    pub vmm: VmmChoice,
    /// How long to wait for every service to answer, in seconds
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub wait: u64,
}

/// Runs `banger up`.
pub async fn run(config: &CommonConfig, args: UpArgs) -> anyhow::Result<u8> {
    let paths = StackPaths {
        state: config.state_dir.clone(),
        runtime: config.runtime_dir.clone(),
    };
    // Owner-only from here on, for this process and every process it starts.
    crate::stack_private::secure(&paths);
    let running: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| stack::running_pid(&paths, s, &format!("banger-{s}")).is_some())
        .collect();
    // The nats-server an earlier `up` started is part of the stack too.
    let nats_missing = previous_stack(config, &paths).nats_managed
        && stack::running_pid(&paths, NATS, NATS).is_none();
    if running.len() == SERVICES.len() && !nats_missing {
        println!(
            "banger is already up (stack file {})",
            paths.stack_file().display()
        );
        return Ok(exit::OK);
    }
    // A partly running stack (a service crashed or was killed) is repaired: the missing
    // services start again with the stack file the others run with, and the hypervisor
    // choice stays what it was unless --vmm says otherwise.
    let previous_vmm = config
        .file_table()
        .get("stack")
        .and_then(|t| t.get("vmm"))
        .and_then(toml::Value::as_str)
        .filter(|_| !running.is_empty())
        .map(str::to_owned);
    if !running.is_empty() {
        println!(
            "part of the stack is running ({}); starting the rest",
            running.join(", ")
        );
    }

    let vmm = match (args.vmm, stack::real_firecracker_usable()) {
        (VmmChoice::Auto, _) if previous_vmm.as_deref() == Some("sim") => "sim",
        (VmmChoice::Auto, Ok(())) if previous_vmm.as_deref() == Some("firecracker") => {
            "firecracker"
        }
        (VmmChoice::Firecracker, Err(why)) => bail!("cannot use real Firecracker: {why}"),
        (VmmChoice::Firecracker | VmmChoice::Auto, Ok(())) => "firecracker",
        (VmmChoice::Auto, Err(why)) => {
            eprintln!("note: {why}; using the Firecracker simulator");
            "sim"
        }
        (VmmChoice::Sim, _) => "sim",
    };

    let mut started: Vec<(&str, Spawned)> = Vec::new();
    let result = bring_up(config, &paths, vmm, &args, &running, &mut started).await;
    if let Err(e) = result {
        // Leave the machine as we found it: stop what this run started, newest first. They
        // are still our children, so this needs no pid file and cannot hit a stranger.
        let stopping = tokio::task::spawn_blocking(move || {
            stack::stop_started(&paths, started, FAILED_UP_GRACE);
        });
        if let Err(join) = stopping.await {
            eprintln!("warning: stopping what this `up` started: {join}");
        }
        return Err(e);
    }
    Ok(exit::OK)
}

async fn bring_up(
    config: &CommonConfig,
    paths: &StackPaths,
    vmm: &str,
    args: &UpArgs,
    running: &[&str],
    started: &mut Vec<(&'static str, Spawned)>,
) -> anyhow::Result<()> {
    let previous = previous_stack(config, paths);
    let (nats, managed) = if stack::running_pid(paths, NATS, NATS).is_some() {
        (config.nats.clone(), true)
    } else if !previous.nats_managed && probe(&config.nats).await {
        println!(
            "using the configured NATS at {}",
            config.nats.urls.join(",")
        );
        (config.nats.clone(), false)
    } else {
        let (nats, spawned) = start_nats(config, paths, &previous)?;
        started.push((NATS, spawned));
        (nats, true)
    };

    let stack_file = paths.stack_file();
    stack::write_private(
        &stack_file,
        &render_stack_file(config, &nats, managed, vmm)?,
    )
    .with_context(|| format!("writing {}", stack_file.display()))?;

    let progress = Progress::start(format!("connecting to NATS at {}", nats.urls.join(",")));
    let bus = wait_for_bus(&nats, config).await?;
    // Keep lifecycle events for `banger events --since`. A NATS without JetStream still runs
    // banger, so this is a warning, not a failure.
    if let Err(e) = banger_bus::history::ensure_event_stream(&bus).await {
        progress.eprintln(format!("warning: event history unavailable: {e}"));
    }
    progress.set_message("starting the services");
    for svc in SERVICES.iter().filter(|s| !running.contains(s)) {
        let program = format!("banger-{svc}");
        let bin = stack::sibling_binary(&program);
        let args = vec!["--config".to_owned(), stack_file.display().to_string()];
        let spawned =
            stack::spawn_detached(&bin, &args, &paths.log_file(svc), &paths.pid_file(svc))
                .with_context(|| format!("starting {}", bin.display()))?;
        started.push((svc, spawned));
    }

    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let mut answering = Vec::new();
    while Instant::now() < deadline {
        // While no service has registered yet, NATS answers a ping at once ("no responders"):
        // without a floor this loop would spin and take the CPU the services need to start.
        let next_round = tokio::time::Instant::now() + PING_ROUND;
        answering = bus
            .ping(None, Duration::from_millis(250))
            .await?
            .into_iter()
            .filter(|s| s.host() == Some(config.host.as_str()))
            .collect::<Vec<_>>();
        let waiting: Vec<&str> = SERVICES
            .iter()
            .copied()
            .filter(|svc| !answering.iter().any(|s| s.name == *svc))
            .collect();
        if waiting.is_empty() {
            break;
        }
        progress.set_message(format!(
            "waiting for the services to answer $SRV.PING: {} of {} up (waiting for {})",
            SERVICES.len() - waiting.len(),
            SERVICES.len(),
            waiting.join(", ")
        ));
        check_alive(paths, running, started)?;
        tokio::time::sleep_until(next_round).await;
    }
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|svc| !answering.iter().any(|s| s.name == *svc))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} did not answer $SRV.PING within {}s; see the logs in {}",
            missing.join(", "),
            args.wait,
            paths.log_dir().display()
        );
    }
    progress.finish_and_clear();

    println!("banger is up on host {}", config.host);
    let rows: Vec<Vec<String>> = SERVICES
        .iter()
        .map(|svc| {
            let pid = stack::running_pid(paths, svc, &format!("banger-{svc}"))
                .map_or("?".into(), |p| p.pid().to_string());
            vec![
                (*svc).to_owned(),
                pid,
                paths.log_file(svc).display().to_string(),
            ]
        })
        .collect();
    print!("{}", output::table(&["SERVICE", "PID", "LOG"], &rows));
    println!(
        "bus: {} ({}), credentials in {}",
        nats.urls.join(","),
        if managed {
            "nats-server started by banger"
        } else {
            "existing NATS"
        },
        stack_file.display()
    );
    if vmm == "sim" {
        println!("{}", crate::simulator_banner());
    } else {
        println!("hypervisor: Firecracker");
    }
    Ok(())
}

/// Fails when a process this run started has exited, or a service that was already running
/// is gone. A process this run started is asked about through its child handle — the kernel's
/// answer, which no pid file, `/proc` read or reused pid can get wrong.
fn check_alive(
    paths: &StackPaths,
    running: &[&str],
    started: &mut [(&'static str, Spawned)],
) -> anyhow::Result<()> {
    for (name, spawned) in started.iter_mut() {
        if let Ok(Some(status)) = spawned.child.try_wait() {
            bail!(
                "{name} exited while starting ({status}); last lines of {}:\n{}",
                paths.log_file(name).display(),
                stack::log_tail(&paths.log_file(name), 15)
            );
        }
    }
    for svc in running {
        if stack::running_pid(paths, svc, &format!("banger-{svc}")).is_none() {
            bail!(
                "{svc}, which was already running, exited; last lines of {}:\n{}",
                paths.log_file(svc).display(),
                stack::log_tail(&paths.log_file(svc), 15)
            );
        }
    }
    Ok(())
}

/// What an earlier `up` recorded, to reuse its port and credentials.
#[derive(Debug, Default)]
struct Previous {
    nats_managed: bool,
}

fn previous_stack(config: &CommonConfig, paths: &StackPaths) -> Previous {
    let is_stack = config.file_path.as_deref() == Some(paths.stack_file().as_path());
    let managed = is_stack
        && config
            .file_table()
            .get("stack")
            .and_then(|t| t.get("nats_managed"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
    Previous {
        nats_managed: managed,
    }
}

async fn probe(nats: &NatsOptions) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, banger_bus::connect::connect(nats, false)).await,
        Ok(Ok(_))
    )
}

/// Starts the managed nats-server: loopback only, JetStream under the state dir, user and
/// password (reused from an earlier `up`, else generated).
fn start_nats(
    config: &CommonConfig,
    paths: &StackPaths,
    previous: &Previous,
) -> anyhow::Result<(NatsOptions, Spawned)> {
    let (user, password) = match (&config.nats.auth, previous.nats_managed) {
        (NatsAuth::UserPassword { user, password }, true) => (user.clone(), password.clone()),
        _ => ("banger".to_owned(), stack::random_secret()?),
    };
    let port = choose_port(&config.nats.urls);
    let dir = paths.nats_dir();
    banger_bus::private::create_dir_all(&dir.join("jetstream"))?;
    let conf = stack::nats_conf(
        &format!("127.0.0.1:{port}"),
        &dir.join("jetstream"),
        &user,
        &password,
        "banger up",
    );
    let conf_path = dir.join("nats.conf");
    stack::write_private(&conf_path, &conf)?;
    let program = which("nats-server").context(
        "nats-server is not installed: run ./scripts/setup (or apt-get install nats-server)",
    )?;
    let spawned = stack::spawn_detached(
        &program,
        &["-c".to_owned(), conf_path.display().to_string()],
        &paths.log_file(NATS),
        &paths.pid_file(NATS),
    )
    .context("starting nats-server")?;
    println!("started nats-server on 127.0.0.1:{port}");
    let nats = NatsOptions {
        urls: vec![format!("nats://127.0.0.1:{port}")],
        auth: NatsAuth::UserPassword { user, password },
        tls_ca: None,
        tls_client: None,
        require_tls: false,
        require_auth: false,
        inbox_prefix: None,
        name: "banger-cli".into(),
    };
    Ok((nats, spawned))
}

/// The port of the first configured loopback URL when it is free, else any free port.
fn choose_port(urls: &[String]) -> u16 {
    let wanted = urls.first().and_then(|u| {
        let rest = u.strip_prefix("nats://").unwrap_or(u);
        let (host, port) = rest.rsplit_once(':')?;
        matches!(host, "127.0.0.1" | "localhost").then(|| port.parse::<u16>().ok())?
    });
    if let Some(p) = wanted
        && TcpListener::bind(("127.0.0.1", p)).is_ok()
    {
        return p;
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(4222, |a| a.port())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

async fn wait_for_bus(nats: &NatsOptions, config: &CommonConfig) -> anyhow::Result<Bus> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout(PROBE_TIMEOUT, banger_bus::connect::connect(nats, false)).await {
            Ok(Ok(client)) => {
                return Ok(Bus::new(client, config.subjects.clone()));
            }
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(e).context("connecting to the stack's NATS"),
            Err(_) => bail!("connecting to the stack's NATS timed out"),
        }
    }
}

/// The stack file: every table of the config `up` was given (so service settings carry
/// over), with the shared keys, the bus and the VMM choice set by this run.
fn render_stack_file(
    config: &CommonConfig,
    nats: &NatsOptions,
    managed: bool,
    vmm: &str,
) -> anyhow::Result<String> {
    let mut t = config.file_table().clone();
    t.insert("host_id".into(), config.host.to_string().into());
    t.insert("prefix".into(), config.subjects.prefix().into());
    t.insert(
        "state_dir".into(),
        config.state_dir.display().to_string().into(),
    );
    t.insert(
        "runtime_dir".into(),
        config.runtime_dir.display().to_string().into(),
    );
    let mut n = toml::Table::new();
    n.insert(
        "urls".into(),
        toml::Value::Array(nats.urls.iter().map(|u| u.clone().into()).collect()),
    );
    match &nats.auth {
        NatsAuth::None => {}
        NatsAuth::UserPassword { user, password } => {
            n.insert("user".into(), user.clone().into());
            n.insert("password".into(), password.clone().into());
        }
        NatsAuth::Token(tok) => {
            n.insert("token".into(), tok.clone().into());
        }
        NatsAuth::NkeyFile(p) => {
            n.insert("nkey_seed_file".into(), p.display().to_string().into());
        }
        NatsAuth::CredsFile(p) => {
            n.insert("creds_file".into(), p.display().to_string().into());
        }
    }
    if let Some(ca) = &nats.tls_ca {
        n.insert("tls_ca".into(), ca.display().to_string().into());
    }
    if let Some((cert, key)) = &nats.tls_client {
        n.insert("tls_cert".into(), cert.display().to_string().into());
        n.insert("tls_key".into(), key.display().to_string().into());
    }
    t.insert("nats".into(), n.into());
    let mut s = toml::Table::new();
    s.insert("nats_managed".into(), managed.into());
    s.insert("vmm".into(), vmm.into());
    t.insert("stack".into(), s.into());
    let vmc = t
        .entry("vm-controller")
        .or_insert_with(|| toml::Table::new().into());
    if let Some(vmc) = vmc.as_table_mut() {
        vmc.insert("vmm".into(), vmm.into());
    }
    Ok(format!(
        "# Written by `banger up`: the local stack's bus credentials and settings.\n\
         # Readable by root only; services read it through --config.\n{}",
        toml::to_string(&t)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_configured_port_falls_back_to_a_free_one() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = held.local_addr().unwrap().port();
        let p = choose_port(&[format!("nats://127.0.0.1:{busy}")]);
        assert_ne!(p, busy);
        drop(held);
        assert_eq!(choose_port(&[format!("nats://127.0.0.1:{busy}")]), busy);
        // A remote URL is never bound locally.
        assert_ne!(choose_port(&["nats://10.1.2.3:4222".into()]), 0);
    }
}
