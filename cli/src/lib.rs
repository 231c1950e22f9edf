//! The `banger` command: parses flags, connects to the bus, runs one command, maps the outcome
//! to an exit code.
//!
//! Exit codes (stable, for scripts):
//! 0 success · 1 failure · 2 usage error · 3 partial failure of a batch · 4 not found or
//! unavailable · 141 stdout closed by the reader (`banger vm list | head -1`).

mod closed_stdout;
pub mod commands;
mod denial;
pub mod exit;
pub mod output;
pub mod progress;
pub mod stack;
pub mod stack_private;

use std::process::ExitCode;
use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::{CommonArgs, CommonConfig};
use tracing::Instrument;

/// banger runs Firecracker microVMs: one per project, test run or lab exercise, each with a
/// name (`web.vm`), a network, a persistent home disk and a guest agent.
#[derive(Debug, clap::Parser)]
#[command(
    name = "banger",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (bus contract ",
        banger_proto::contract_version!(),
        ")"
    ),
    about = "Run Firecracker microVMs with a name, a network and a persistent home disk",
    long_about = "banger runs Firecracker microVMs on Linux hosts: one per project, test run or \
                  lab exercise. Each VM has a name (<name>.vm), a network, a persistent work \
                  disk mounted at /root and a guest agent. The CLI talks to banger's services \
                  over NATS; see `banger status` for what is running."
)]
pub struct Cli {
    /// Shared flags: NATS connection, prefix.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to wait for replies, in seconds
    #[arg(long, global = true, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,

    /// What to do
    #[command(subcommand)]
    pub command: commands::Command,
}

/// What every command receives.
pub struct App {
    /// The bus.
    pub bus: Bus,
    /// Resolved configuration.
    pub config: CommonConfig,
    /// JSON output.
    pub json: bool,
    /// Reply deadline.
    pub timeout: Duration,
}

/// The line that tells the user VMs are simulated. Bold on a terminal, plain otherwise or with
/// `NO_COLOR`.
pub fn simulator_banner() -> String {
    let text = "SIMULATED HYPERVISOR: VMs run under banger-fcsim (real taps, bridge, NAT, disks \
                and agent; no real guest kernel)";
    if styled(&std::io::stderr()) {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Whether to use terminal styling on `stream`.
pub fn styled(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether the local stack `config` describes runs VMs under the simulator.
pub fn stack_runs_simulator(config: &CommonConfig) -> bool {
    config
        .file_table()
        .get("stack")
        .and_then(|t| t.get("vmm"))
        .and_then(toml::Value::as_str)
        == Some("sim")
}

/// Prints the simulator banner on stderr when the local stack runs the simulator.
fn announce_simulator(config: &CommonConfig) {
    if stack_runs_simulator(config) {
        announce_once();
    }
}

/// Prints the simulator banner when one of the controllers that answered discovery says it
/// runs the simulator (`vmm: sim` in its service metadata): so a lab's CLI, which has no local
/// stack to look at, says so too.
pub(crate) fn announce_simulated_controllers(instances: &[banger_bus::client::ServiceInstance]) {
    let simulated = instances.iter().any(|i| {
        i.name == banger_proto::service::VM_CONTROLLER
            && i.metadata
                .get(banger_proto::service::META_VMM)
                .map(String::as_str)
                == Some("sim")
    });
    if simulated {
        announce_once();
    }
}

/// The SIMULATED banner on stderr (at most once per command), for a caller that learnt from a
/// controller's answer that it runs the simulator.
pub(crate) fn announce_simulated() {
    announce_once();
}

/// The banner on stderr, at most once per command. Flushes stdout first, so the banner never
/// lands in the middle of a line a command already printed.
fn announce_once() {
    static ANNOUNCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !ANNOUNCED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        eprintln!("{}", simulator_banner());
    }
}

/// Parses the command line (exiting with usage on error) and names the command run, e.g.
/// `banger vm create`: the name of the command's trace.
pub fn parse() -> (Cli, String) {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut name = String::from("banger");
    let mut m = &matches;
    while let Some((sub, sub_m)) = m.subcommand() {
        name.push(' ');
        name.push_str(sub);
        m = sub_m;
    }
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, name),
        Err(e) => e.exit(),
    }
}

/// Runs the CLI and returns its exit code. `command` names the root span of the command's
/// trace (see [`parse`]).
pub fn main(cli: Cli, command: &str) -> ExitCode {
    closed_stdout::install();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let _telemetry = rt.block_on(async {
        banger_bus::telemetry::init_with_default_level("banger", cli.common.log_format, "warn")
    });
    // One trace per command: every request the command makes is a child of this span.
    let span = tracing::info_span!("banger", otel.name = %command, otel.kind = "client");
    let code = rt.block_on(
        async {
            match run(cli).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {}", banger_bus::runtime::chain(e.as_ref()));
                    exit::code_of(&e)
                }
            }
        }
        .instrument(span),
    );
    ExitCode::from(code)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Offline commands: no config, no bus.
    match &cli.command {
        commands::Command::Completions(a) => return Ok(commands::completions::completions(a)),
        commands::Command::Man(a) => return commands::completions::man(a),
        _ => {}
    }
    if cli.json {
        progress::suppress();
    }
    let config = CommonConfig::resolve(&cli.common, banger_bus::config::CLI_PROCESS)?;
    // The TUI owns the terminal: it shows the banner in its title line instead.
    if !matches!(cli.command, commands::Command::Tui(_)) {
        announce_simulator(&config);
    }
    match cli.command {
        commands::Command::Up(args) => return commands::up::run(&config, args).await,
        commands::Command::Down(args) => return commands::down::run(&config, args).await,
        commands::Command::Init(args) => return commands::init::run(&config, &args),
        commands::Command::Doctor(_) => return commands::doctor::run(&config, cli.json).await,
        // The TUI connects itself, to watch the connection's state.
        commands::Command::Tui(args) => {
            return commands::tui::run(config, Duration::from_secs(cli.timeout), args).await;
        }
        _ => {}
    }
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let client = connect_bus(&config, Some(events_tx)).await?;
    let user = match &config.nats.auth {
        banger_bus::config::NatsAuth::UserPassword { user, .. } => Some(user.clone()),
        _ => None,
    };
    let denial = denial::first_denial(
        events,
        user,
        banger_proto::net::subnet_bucket(config.subjects.prefix()),
    );
    let app = App {
        bus: Bus::new(client, config.subjects.clone()),
        config,
        json: cli.json,
        timeout: Duration::from_secs(cli.timeout),
    };
    // A refused publish or subscribe ends the command at once (see `denial`).
    let code = tokio::select! {
        code = commands::dispatch(&app, cli.command) => code?,
        denied = denial => return Err(denied.into()),
    };
    if let Err(e) = app.bus.client().flush().await {
        tracing::debug!(error = %e, "flushing");
    }
    Ok(code)
}

/// Connects to the bus for a command, telling the user what to do when it is not there.
/// `events` receives the connection's state changes (the TUI shows them).
pub(crate) async fn connect_bus(
    config: &CommonConfig,
    events: Option<tokio::sync::mpsc::UnboundedSender<async_nats::Event>>,
) -> anyhow::Result<async_nats::Client> {
    banger_bus::connect::connect_observed(&config.nats, false, events)
        .await
        .map_err(|e| {
            let refused = matches!(
                &e,
                banger_bus::BusError::Connect { source, .. }
                    if matches!(
                        source.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Authentication
                    )
            );
            let hint = if refused {
                // The server is there; these credentials (or none) are not accepted. The local
                // stack's are in its root-only stack file.
                "the banger bus refused these credentials: the local stack's are readable by \
                 root only (run as root), or pass your own (--nats-user/--nats-password, \
                 --nats-creds, or a config file: see `banger --help`)"
            } else {
                "cannot reach the banger bus: is the stack running? start it with `banger up`"
            };
            anyhow::Error::new(e).context(hint)
        })
}
