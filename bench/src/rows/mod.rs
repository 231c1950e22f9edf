//! The rows of the table, one module per group (see [`Group`]). Each group runs on its own
//! stack (or none), and a group that fails is one `skipped` row with the reason, not the end
//! of the run.

mod bus;
mod dns;
mod footprint;
mod latency;
mod list;
mod scale;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::args::{Group, Settings};
use crate::fixture::{Backend, Bench, StackFs, StackOptions, binaries_built, preflight};
use crate::stats::Summary;
use crate::table::Row;

/// Every row of the groups `settings` ask for, each tagged with its group.
pub(crate) fn all(settings: &Settings) -> Vec<Row> {
    // Checked once: every stack group needs root, the tools and the built binaries.
    let stack_ready = preflight().and_then(|()| binaries_built());
    let mut rows = Vec::new();
    for &group in &settings.groups {
        eprintln!("banger-bench: {} ...", group.name());
        let mut group_rows = guarded(group.name(), || run(group, settings, &stack_ready));
        for r in &mut group_rows {
            r.group = group.name();
        }
        rows.extend(group_rows);
    }
    rows
}

fn run(group: Group, settings: &Settings, stack_ready: &Result<(), String>) -> Vec<Row> {
    let needs_stack = !matches!(group, Group::Bus | Group::Dns);
    if let (true, Err(why)) = (needs_stack, stack_ready) {
        return vec![Row::skipped(group.name(), why)];
    }
    match group {
        Group::Latency => [("bl", Backend::Sparse), ("br", Backend::Reflink)]
            .into_iter()
            .flat_map(|(tag, backend)| {
                let what = format!("latency, {}", backend.label());
                guarded(&what.clone(), || {
                    with_stack(
                        &what,
                        StackOptions {
                            tag,
                            backend,
                            trace: true,
                            wide_subnet: false,
                            fs: StackFs::Own,
                        },
                        |bench| {
                            latency::measure(bench, backend, settings.reps)
                                .rows(bench, settings.spans)
                        },
                    )
                })
            })
            .collect(),
        Group::Scale => {
            let mut rows = with_stack(
                "scale",
                StackOptions {
                    trace: settings.spans,
                    ..StackOptions::plain("bs")
                },
                |bench| {
                    settings
                        .scale
                        .iter()
                        .flat_map(|&k| scale::measure(bench, k, k <= settings.serial_max))
                        .collect()
                },
            );
            // The largest K once more, on the host's own file system, for comparison.
            if let Some(&k) = settings.scale.iter().max() {
                let fs = StackFs::HostTmp;
                rows.extend(with_stack(
                    "scale, host file system",
                    StackOptions {
                        fs,
                        ..StackOptions::plain("bh")
                    },
                    |bench| vec![scale::measure_total(bench, k, fs)],
                ));
            }
            rows
        }
        Group::List => with_stack(
            "vm list",
            StackOptions {
                wide_subnet: true,
                ..StackOptions::plain("bv")
            },
            |bench| {
                list::measure(
                    bench,
                    &settings.list_vms,
                    settings.list_started,
                    settings.reps,
                )
            },
        ),
        Group::Footprint => with_stack("footprint", StackOptions::plain("bf"), |bench| {
            footprint::measure(bench, settings.footprint_vms)
        }),
        Group::Bus => bus::measure(),
        Group::Dns => dns::measure(),
    }
}

/// `f`'s rows on a fresh stack, or one skipped row when the stack cannot start.
fn with_stack(what: &str, opts: StackOptions, f: impl FnOnce(&Bench) -> Vec<Row>) -> Vec<Row> {
    match Bench::start(opts) {
        Ok(bench) => f(&bench),
        Err(why) => vec![Row::skipped(what, why)],
    }
}

/// `f()`, or one skipped row saying how it panicked (the e2e fixture asserts when a stack
/// cannot be built; its message is on stderr too).
fn guarded(what: &str, f: impl FnOnce() -> Vec<Row>) -> Vec<Row> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned());
        let first = msg.lines().next().unwrap_or_default().to_owned();
        vec![Row::skipped(what, format!("failed: {first}"))]
    })
}

/// Timings of repeated runs of one command, and how the failed runs failed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    ok: Vec<Duration>,
    errors: Vec<String>,
}

impl Samples {
    /// Records one run.
    pub(crate) fn push(&mut self, run: Result<Duration, String>) {
        match run {
            Ok(d) => self.ok.push(d),
            Err(e) => self.errors.push(e),
        }
    }

    /// How many runs succeeded.
    pub(crate) fn ok_count(&self) -> usize {
        self.ok.len()
    }

    /// p50/p99 of the successful runs.
    pub(crate) fn summary(&self) -> Option<Summary> {
        Summary::of(&self.ok)
    }

    /// `k of n failed: first complaint`, or empty when none failed.
    pub(crate) fn failures(&self) -> String {
        match self.errors.first() {
            None => String::new(),
            Some(first) => format!(
                "{} of {} failed: {first}",
                self.errors.len(),
                self.errors.len() + self.ok.len()
            ),
        }
    }
}

/// The row for `ours` against `reference`: p50/p99 of ours, p50 of the reference, and any
/// failures of either in the note.
pub(crate) fn compare(what: &str, ours: &Samples, reference: &Samples) -> Row {
    let Some(s) = ours.summary() else {
        return Row::skipped(what, format!("every run failed ({})", ours.failures()));
    };
    let mut notes = Vec::new();
    if !ours.errors.is_empty() {
        notes.push(ours.failures());
    }
    if !reference.errors.is_empty() {
        notes.push(format!("reference: {}", reference.failures()));
    }
    Row::measured(what, s.p50, Some(s.p99), reference.summary().map(|r| r.p50))
        .with_note(notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_group_becomes_one_skipped_row() {
        let rows = guarded("dns", || panic!("knotd never served\nmore"));
        assert_eq!(rows, [Row::skipped("dns", "failed: knotd never served")]);
        let rows = guarded("bus", || vec![Row::skipped("x", "y")]);
        assert_eq!(rows, [Row::skipped("x", "y")]);
    }

    #[test]
    fn samples_count_failures_and_summarise_successes() {
        let mut s = Samples::default();
        s.push(Ok(Duration::from_millis(3)));
        s.push(Err("exit status: 1: boom".to_owned()));
        s.push(Ok(Duration::from_millis(1)));
        assert_eq!(s.ok_count(), 2);
        assert_eq!(s.failures(), "1 of 3 failed: exit status: 1: boom");
        let row = compare("op", &s, &Samples::default());
        assert!(row.note.contains("1 of 3 failed"), "{row:?}");
    }
}
