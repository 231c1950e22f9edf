//! The real terminal: raw mode and the alternate screen, restored when the TUI ends however it
//! ends (return, error, or panic through ratatui's panic hook), suspended around an ssh session,
//! and a reader thread that turns key presses into messages for the async main loop.
//!
//! The reader thread can be paused: while ssh runs, every byte typed must reach ssh, so the
//! thread stops reading (and says it has stopped) before the session starts.

use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::{cursor, execute, terminal};
use tokio::sync::mpsc;

/// How long the reader waits for input before looking at its pause flag again.
const READ_POLL: Duration = Duration::from_millis(50);
/// How long a pause waits for the reader to stop.
const PAUSE_WAIT: Duration = Duration::from_secs(1);

/// The terminal in TUI mode; restored on drop.
///
/// While the TUI draws, standard error goes to `/dev/null`: a log line (say, the bus client's
/// warning that the connection dropped) written over the screen would garble it, and the
/// title already says so. It is given back before ssh runs, when the TUI ends, and before a
/// panic message is printed.
pub(crate) struct Screen {
    /// The ratatui terminal.
    pub(crate) terminal: DefaultTerminal,
    /// The real standard error, while it is muted.
    saved_stderr: Option<Arc<OwnedFd>>,
}

impl Screen {
    /// Enters raw mode and the alternate screen; ratatui's panic hook restores them.
    pub(crate) fn enter() -> anyhow::Result<Self> {
        let terminal = ratatui::try_init().map_err(|e| {
            // Raw mode may be on already when the alternate screen failed.
            ratatui::restore();
            anyhow::anyhow!("setting up the terminal: {e}")
        })?;
        let saved_stderr = mute_stderr().map(Arc::new);
        if let Some(saved) = &saved_stderr {
            // Runs before ratatui's hook (which restores the terminal, then prints).
            let saved = Arc::clone(saved);
            let next = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = nix::unistd::dup2_stderr(saved.as_fd());
                next(info);
            }));
        }
        Ok(Self {
            terminal,
            saved_stderr,
        })
    }

    /// Gives the terminal back to the shell: what an ssh session needs.
    pub(crate) fn suspend(&mut self) -> std::io::Result<()> {
        self.unmute();
        ratatui::try_restore()?;
        execute!(std::io::stdout(), cursor::Show)?;
        std::io::stdout().flush()
    }

    /// Takes the terminal again after [`Screen::suspend`] and redraws from scratch.
    pub(crate) fn resume(&mut self) -> std::io::Result<()> {
        terminal::enable_raw_mode()?;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen)?;
        if self.saved_stderr.is_some()
            && let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null")
        {
            let _ = nix::unistd::dup2_stderr(&null);
        }
        self.terminal.clear()
    }

    fn unmute(&self) {
        if let Some(saved) = &self.saved_stderr {
            let _ = nix::unistd::dup2_stderr(saved.as_fd());
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.unmute();
        ratatui::restore();
        let _ = execute!(std::io::stdout(), cursor::Show);
    }
}

/// Points standard error at `/dev/null`; returns the real one (`None` when that failed, and
/// standard error is left alone).
fn mute_stderr() -> Option<OwnedFd> {
    let saved = nix::unistd::dup(std::io::stderr()).ok()?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()?;
    nix::unistd::dup2_stderr(&null).ok()?;
    Some(saved)
}

#[derive(Debug, Default)]
struct Flags {
    want_pause: bool,
    paused: bool,
    stop: bool,
}

/// The reader thread's switches.
#[derive(Debug, Default)]
struct Control {
    flags: Mutex<Flags>,
    changed: Condvar,
}

/// Terminal input, read on a thread of its own (crossterm's reads block).
pub(crate) struct Input {
    /// Terminal events, in order.
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    control: Arc<Control>,
    /// The reader thread (detached on drop).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Input {
    /// Starts the reader.
    pub(crate) fn start() -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let control = Arc::new(Control::default());
        let c = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("tui-input".into())
            .spawn(move || read_loop(&c, &tx))
            .ok();
        Self {
            events,
            control,
            thread,
        }
    }

    /// Stops reading until [`Input::resume`]; returns once the reader has stopped (or after
    /// [`PAUSE_WAIT`]).
    pub(crate) fn pause(&self) {
        let Ok(mut f) = self.control.flags.lock() else {
            return;
        };
        f.want_pause = true;
        self.control.changed.notify_all();
        let _ = self
            .control
            .changed
            .wait_timeout_while(f, PAUSE_WAIT, |f| !f.paused && !f.stop);
    }

    /// Reads again.
    pub(crate) fn resume(&self) {
        if let Ok(mut f) = self.control.flags.lock() {
            f.want_pause = false;
            self.control.changed.notify_all();
        }
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        if let Ok(mut f) = self.control.flags.lock() {
            f.stop = true;
            self.control.changed.notify_all();
        }
        // Not joined: on a terminal that hung up, crossterm's poll may never return, and the
        // TUI must still exit. The thread only reads; it ends with the process.
        drop(self.thread.take());
    }
}

fn read_loop(control: &Control, tx: &mpsc::UnboundedSender<Event>) {
    loop {
        {
            let Ok(mut f) = control.flags.lock() else {
                return;
            };
            if f.stop {
                return;
            }
            if f.want_pause {
                f.paused = true;
                control.changed.notify_all();
                while f.want_pause && !f.stop {
                    f = match control.changed.wait(f) {
                        Ok(f) => f,
                        Err(_) => return,
                    };
                }
                f.paused = false;
                continue;
            }
        }
        match event::poll(READ_POLL) {
            Ok(true) => match event::read() {
                Ok(e) => {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {}
            Err(_) => return,
        }
    }
}
