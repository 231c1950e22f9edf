//! Spinners for the waits of the CLI that can take more than a second (services coming up, a
//! guest agent booting, services draining).
//!
//! A [`Progress`] draws on stderr only, and only when stderr is a terminal and `NO_COLOR` is
//! unset ([`crate::styled`]); commands that print `--json` use [`Progress::hidden`]. When it
//! is not shown it does nothing at all: the command's plain lines are printed exactly as
//! without it, so scripts and tests that read them see no difference. [`Progress::announce`]
//! covers the common case of a wait that prints a plain "waiting ..." line when no spinner is
//! shown.
//!
//! Lines printed while a spinner runs go through [`Progress::println`] /
//! [`Progress::eprintln`], which lift the spinner for the line and draw it again below, so
//! the two never tear each other on the terminal.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// How often the spinner turns.
const TICK: Duration = Duration::from_millis(100);

/// Set once by `--json`: no spinner anywhere in this process.
static SUPPRESSED: AtomicBool = AtomicBool::new(false);

/// Turns every spinner of this process off (`--json`: machine output only).
pub fn suppress() {
    SUPPRESSED.store(true, Ordering::Relaxed);
}

/// Whether spinners may be drawn: stderr is a terminal, `NO_COLOR` is unset, no `--json`.
fn shown() -> bool {
    !SUPPRESSED.load(Ordering::Relaxed) && crate::styled(&std::io::stderr())
}

/// A spinner on stderr, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Shows a spinner with `msg` when stderr is a terminal and `NO_COLOR` is unset; otherwise
    /// an inert `Progress` that prints nothing.
    pub fn start(msg: impl Into<Cow<'static, str>>) -> Self {
        if shown() {
            Self::on(ProgressDrawTarget::stderr(), msg)
        } else {
            Self::hidden()
        }
    }

    /// Like [`Progress::start`], but when no spinner is shown prints `msg` on stderr as a plain
    /// line instead, followed by `...`.
    pub fn announce(msg: impl Into<Cow<'static, str>>) -> Self {
        let msg = msg.into();
        if shown() {
            Self::on(ProgressDrawTarget::stderr(), msg)
        } else {
            eprintln!("{msg}...");
            Self::hidden()
        }
    }

    /// A `Progress` that never shows anything (for `--json`).
    pub fn hidden() -> Self {
        Self { bar: None }
    }

    /// A spinner drawn on `target`, turning until it is finished or dropped.
    fn on(target: ProgressDrawTarget, msg: impl Into<Cow<'static, str>>) -> Self {
        let style = ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = ProgressBar::with_draw_target(None, target)
            .with_style(style)
            .with_message(msg)
            // An error return or a panic drops the spinner: take it off the screen, so the
            // error starts on a clean line.
            .with_finish(ProgressFinish::AndClear);
        // Draw now, not at the first tick: a short wait still shows what it waited for.
        bar.tick();
        bar.enable_steady_tick(TICK);
        Self { bar: Some(bar) }
    }

    /// Whether a spinner is on screen.
    pub fn is_shown(&self) -> bool {
        self.bar.as_ref().is_some_and(|b| !b.is_finished())
    }

    /// Replaces the spinner's message.
    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg);
        }
    }

    /// Prints `line` on stdout, above the spinner when one is shown.
    pub fn println(&self, line: impl std::fmt::Display) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Prints `line` on stderr, above the spinner when one is shown.
    pub fn eprintln(&self, line: impl std::fmt::Display) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Stops the spinner and leaves `msg` in its place (on a terminal only; prints nothing
    /// otherwise).
    pub fn finish(self, msg: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.bar {
            bar.set_style(
                ProgressStyle::with_template("{wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.finish_with_message(msg);
        }
    }

    /// Stops the spinner and erases it.
    pub fn finish_and_clear(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    /// A terminal that records what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn push(&self, s: &str) -> io::Result<()> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .push_str(s);
            Ok(())
        }

        fn text(&self) -> String {
            self.0.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            self.push(&format!("<up {n}>"))
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.push(&format!("<down {n}>"))
        }
        fn move_cursor_right(&self, n: usize) -> io::Result<()> {
            self.push(&format!("<right {n}>"))
        }
        fn move_cursor_left(&self, n: usize) -> io::Result<()> {
            self.push(&format!("<left {n}>"))
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.push(s)?;
            self.push("\n")
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.push(s)
        }
        fn clear_line(&self) -> io::Result<()> {
            self.push("<clear>")
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        /// What is left on the line after the last clear.
        fn after_last_clear(&self) -> String {
            let text = self.text();
            text.rsplit("<clear>").next().unwrap_or_default().to_owned()
        }
    }

    fn on_screen(msg: &'static str) -> (Progress, Screen) {
        let screen = Screen::default();
        let p = Progress::on(ProgressDrawTarget::term_like(Box::new(screen.clone())), msg);
        (p, screen)
    }

    #[test]
    fn a_hidden_progress_is_inert() {
        let p = Progress::hidden();
        assert!(!p.is_shown());
        p.set_message("ignored");
        p.finish("ignored");
        let p = Progress::hidden();
        p.finish_and_clear();
        drop(Progress::hidden());
    }

    #[test]
    fn a_shown_spinner_draws_its_message_at_once_and_clears_on_finish() {
        let (p, screen) = on_screen("waiting for web's guest agent");
        assert!(p.is_shown());
        assert!(
            screen.text().contains("waiting for web's guest agent"),
            "{:?}",
            screen.text()
        );
        p.finish_and_clear();
        assert!(screen.text().contains("<clear>"), "{:?}", screen.text());
        assert!(
            !screen.after_last_clear().contains("waiting"),
            "{:?}",
            screen.text()
        );
    }

    #[test]
    fn finish_leaves_the_final_message() {
        let (p, screen) = on_screen("stopping services");
        p.finish("stopped");
        assert_eq!(
            screen.after_last_clear().replace("<up 0>", "").trim_end(),
            "stopped",
            "{:?}",
            screen.text()
        );
    }

    #[test]
    fn dropping_a_spinner_takes_it_off_the_screen() {
        let (p, screen) = on_screen("waiting");
        drop(p);
        assert!(screen.text().contains("<clear>"), "{:?}", screen.text());
        assert!(
            !screen.after_last_clear().contains("waiting"),
            "{:?}",
            screen.text()
        );
    }
}
