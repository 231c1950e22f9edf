//! `banger tui`: a live terminal view of every VM on every host.
//!
//! The table is seeded by one `vm.list` of every host and then kept in step by the lifecycle
//! events (`<p>.events.>`), never by polling; after a reconnect the list is asked for again,
//! since events sent while the connection was down are lost. The pieces:
//!
//! - [`state`]: the model and its reducer (pure, unit-tested): events, lists, answers, keys.
//! - [`keys`]: key presses to actions; [`form`]: the create form and its validation.
//! - [`view`]: drawing the model (pure, tested on ratatui's `TestBackend`).
//! - [`feed`]: the event subscription and connection state; [`actions`]: the requests.
//! - [`terminal`]: raw mode, the alternate screen, suspending for ssh, the key reader.
//!
//! The main loop here waits for whichever comes first (a key, an event, a connection change,
//! an answer, a clock tick for the uptime column), hands it to the model, starts the effects
//! the model asks for and redraws.

pub mod actions;
pub mod feed;
pub mod form;
pub mod keys;
pub mod state;
pub mod terminal;
pub mod view;

use std::time::Duration;

use banger_bus::Bus;
use banger_bus::config::CommonConfig;
use banger_proto::{ApiError, ErrorCode};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use ratatui::crossterm::event::Event as TermEvent;

use self::actions::Pending;
use self::state::{Connection, Effect, Model, Msg, Pane};
use self::terminal::{Input, Screen};
use crate::commands::vm::ssh;
use crate::{App, exit};

/// How often the screen is redrawn with nothing else happening: the uptime column moves.
const TICK: Duration = Duration::from_secs(1);
/// How often the shown log is read for new output (logs have no events).
const LOG_POLL: Duration = Duration::from_millis(500);

/// Flags of `banger tui`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Keys:
  up/down j/k  select a VM        s start   x stop   r restart   d delete (asks y/n)
  c            create a VM (form: name, image, cpus, memory, disk; checked like `vm create`)
  e            run a command in the VM and show its output
  Enter        ssh into the VM (the TUI steps aside; on return it reminds you when the VM
               still runs)
  l            details / logs pane on narrow terminals    ?  help    q or Esc  quit

The table follows lifecycle events as they happen; when the connection to NATS drops the title \
says DISCONNECTED, and on reconnect the list is read again.")]
pub struct TuiArgs {}

/// Runs `banger tui` until the user quits.
pub async fn run(config: CommonConfig, timeout: Duration, _args: TuiArgs) -> anyhow::Result<u8> {
    use std::io::IsTerminal as _;
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "banger tui needs a terminal on standard input and output; for scripts use \
             `banger vm list --json` and `banger events --json`",
        )
        .into());
    }
    let simulated = crate::stack_runs_simulator(&config);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    let client = crate::connect_bus(&config, Some(conn_tx)).await?;
    let app = App {
        bus: Bus::new(client, config.subjects.clone()),
        config,
        json: false,
        timeout,
    };
    // Subscribe before listing: an event published meanwhile is applied after the list (and
    // the reducer's ordering rules sort out which is newer).
    let mut events = feed::subscribe(&app).await?;
    let mut model = Model::default();
    model.simulated = simulated;
    let mut pending: FuturesUnordered<Pending<'_>> = FuturesUnordered::new();
    for effect in model.start() {
        pending.extend(actions::start(&app, effect));
    }

    // SIGTERM and SIGHUP end the TUI like `q` does, so the terminal is restored.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut screen = Screen::enter()?;
    let mut input = Input::start();
    let mut tick = tokio::time::interval(TICK);
    let mut log_tick = tokio::time::interval(LOG_POLL);
    let mut log_in_flight = false;
    let mut events_open = true;
    loop {
        let now = banger_bus::now_ms();
        screen.terminal.draw(|f| view::render(f, &model, now))?;
        let width = screen.terminal.size().map_or(0, |s| s.width);
        let step = tokio::select! {
            key = input.events.recv() => match key {
                Some(TermEvent::Key(k)) => Step::Key(k),
                Some(_) => Step::Redraw,
                // The reader cannot read the terminal any more: nothing more can be typed.
                None => break,
            },
            e = feed::next_event(&mut events), if events_open => match e {
                Some(m) => Step::Msg(Box::new(m)),
                None => {
                    events_open = false;
                    Step::Redraw
                }
            },
            Some(c) = conn_rx.recv() => match feed::connection(&c) {
                Some(c) => Step::Msg(Box::new(Msg::Connection(c))),
                None => Step::Redraw,
            },
            Some(m) = pending.next() => Step::Msg(Box::new(m)),
            _ = log_tick.tick(), if !log_in_flight => Step::FollowLog,
            _ = tick.tick() => Step::Redraw,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        };
        let effects = match step {
            Step::Key(k) => keys::action(&model.mode, k).map_or_else(Vec::new, |a| model.act(a)),
            Step::Msg(m) => {
                let m = *m;
                if matches!(m, Msg::Logs { .. }) {
                    log_in_flight = false;
                }
                model.apply(m)
            }
            Step::FollowLog => {
                // Logs have no events: the shown one is read again while connected.
                let shown = width >= view::SIDE_BY_SIDE || model.pane == Pane::Logs;
                if shown
                    && model.connection == Connection::Connected
                    && let Some((vm, offset)) = model.log_to_follow()
                {
                    log_in_flight = true;
                    pending.push(actions::read_log(&app, vm, offset));
                }
                Vec::new()
            }
            Step::Redraw => Vec::new(),
        };
        run_effects(&app, &mut screen, &input, &mut pending, effects).await;
        if model.quit {
            break;
        }
    }
    drop(input);
    drop(screen);
    Ok(exit::OK)
}

/// What woke the main loop.
enum Step {
    /// A key press.
    Key(ratatui::crossterm::event::KeyEvent),
    /// Something for the model (boxed: a message carries a whole VM record).
    Msg(Box<Msg>),
    /// Time to read more of the shown log.
    FollowLog,
    /// Nothing but a redraw (resize, clock).
    Redraw,
}

/// Starts `effects`; an ssh session runs here and now, with the TUI suspended.
async fn run_effects<'a>(
    app: &'a App,
    screen: &mut Screen,
    input: &Input,
    pending: &mut FuturesUnordered<Pending<'a>>,
    effects: Vec<Effect>,
) {
    for effect in effects {
        if let Effect::Ssh(vm) = effect {
            let msg = ssh_session(app, screen, input, &vm).await;
            pending.push(Box::pin(async move { msg }));
        } else if let Some(f) = actions::start(app, effect) {
            pending.push(f);
        }
    }
}

/// Leaves the TUI, runs the same ssh as `banger vm ssh`, comes back, then asks the VM's health
/// for the reminder.
async fn ssh_session(
    app: &App,
    screen: &mut Screen,
    input: &Input,
    vm: &banger_proto::vm::VmInfo,
) -> Msg {
    let argv = match ssh::argv_for(app, vm, "root", &[]) {
        Ok(a) => a,
        Err(e) => {
            return Msg::SshDone {
                reminder: None,
                error: Some(e.message),
            };
        }
    };
    input.pause();
    let outcome = match screen.suspend() {
        Ok(()) => {
            println!(
                "banger: ssh root@{} ({}); exit the shell to come back",
                vm.name,
                argv.last().map_or("", String::as_str)
            );
            ssh::run_ssh(&argv).await.map(|_| ())
        }
        Err(e) => Err(anyhow::anyhow!("giving the terminal to ssh: {e}")),
    };
    let resumed = screen.resume();
    input.resume();
    if let Err(e) = resumed {
        return Msg::SshDone {
            reminder: None,
            error: Some(format!("taking the terminal back: {e}")),
        };
    }
    match outcome {
        Ok(()) => Msg::SshDone {
            reminder: ssh::reminder_after_session(app, vm).await,
            error: None,
        },
        Err(e) => Msg::SshDone {
            reminder: None,
            error: Some(format!("ssh: {e}")),
        },
    }
}
