//! A closed stdout (`banger vm list | head -1`, `| true`) ends the command quietly.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `EPIPE` and `print!` panics
//! ("failed printing to stdout: Broken pipe"). SIGPIPE is not restored to its default either:
//! the process also writes to its NATS socket, where a peer that went away must be an error
//! the client handles, not the death of the process. Instead, a panic hook recognises a
//! broken-pipe panic (`print!`'s "failed printing to stdout: Broken pipe", clap_complete's
//! "failed to write completion file: ... BrokenPipe") and exits at once, without a message,
//! with the status a shell reports for a process ended by SIGPIPE (128 + 13), as `ls | head`
//! does. Socket errors never panic (they are returned as errors), so only a closed stdout or
//! stderr gets here.

/// The exit status after a write to a closed stdout or stderr.
pub(crate) const CLOSED_PIPE: u8 = 141;

/// Installs the hook; every other panic still goes to the default hook.
pub(crate) fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_pipe(message) {
            std::process::exit(i32::from(CLOSED_PIPE));
        }
        default(info);
    }));
}

/// Whether a panic message is that of a write to a closed pipe.
fn is_closed_pipe(message: &str) -> bool {
    message.contains("Broken pipe") || message.contains("BrokenPipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_broken_pipe_panics_are_recognised() {
        assert!(is_closed_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(is_closed_pipe(
            "failed to write completion file: Os { code: 32, kind: BrokenPipe, message: \"Broken pipe\" }"
        ));
        assert!(!is_closed_pipe(
            "failed printing to stdout: No space left on device"
        ));
        assert!(!is_closed_pipe(
            "called `Option::unwrap()` on a `None` value"
        ));
    }
}
