//! Bounded retries with exponential backoff, for removals that the kernel may refuse for a
//! moment (`EBUSY` while a just-killed Firecracker's descriptors are being released).

use std::time::Duration;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    pub initial: Duration,
    /// Longest single pause.
    pub max: Duration,
}

impl Backoff {
    /// Removal of VM storage: 8 attempts over about 4 s, enough for the kernel to release a
    /// snapshot after its user died, short enough to answer a delete promptly.
    pub const REMOVAL: Backoff = Backoff {
        attempts: 8,
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
    };

    /// The pause after failed attempt number `n` (1-based).
    pub fn pause_after(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The outcome of [`retry`]: the value or the last error, and how many attempts it took.
#[derive(Debug)]
pub struct Attempted<T> {
    /// The value, or the last error when every attempt failed or the error was not transient.
    pub result: T,
    /// Attempts made.
    pub attempts: u32,
}

/// Calls `op` until it succeeds, fails with an error `transient` says is permanent, or the
/// attempts run out; pauses per `policy` between attempts (this blocks: call it on a blocking
/// thread).
pub fn retry<T, E>(
    policy: Backoff,
    mut transient: impl FnMut(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Attempted<Result<T, E>> {
    let mut n = 0;
    loop {
        n += 1;
        match op() {
            Ok(v) => {
                return Attempted {
                    result: Ok(v),
                    attempts: n,
                };
            }
            Err(e) if n < policy.attempts && transient(&e) => {
                std::thread::sleep(policy.pause_after(n));
            }
            Err(e) => {
                return Attempted {
                    result: Err(e),
                    attempts: n,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Backoff = Backoff {
        attempts: 4,
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
    };

    #[test]
    fn transient_errors_are_retried_until_success() {
        let mut calls = 0;
        let out = retry(
            FAST,
            |_: &&str| true,
            || {
                calls += 1;
                if calls < 3 { Err("busy") } else { Ok(calls) }
            },
        );
        assert_eq!(out.result, Ok(3));
        assert_eq!(out.attempts, 3);
    }

    #[test]
    fn giving_up_reports_the_last_error_and_the_attempts() {
        let mut calls = 0;
        let out: Attempted<Result<(), String>> = retry(
            FAST,
            |_| true,
            || {
                calls += 1;
                Err(format!("busy #{calls}"))
            },
        );
        assert_eq!(out.result, Err("busy #4".to_owned()));
        assert_eq!(out.attempts, 4);
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let out: Attempted<Result<(), &str>> = retry(FAST, |e| *e == "busy", || Err("gone"));
        assert_eq!(out.attempts, 1);
    }

    #[test]
    fn pauses_grow_and_are_capped() {
        let p = Backoff::REMOVAL;
        assert_eq!(p.pause_after(1), Duration::from_millis(50));
        assert_eq!(p.pause_after(2), Duration::from_millis(100));
        assert_eq!(p.pause_after(7), Duration::from_secs(1));
        assert_eq!(p.pause_after(40), Duration::from_secs(1));
    }
}
