//! Scale: K VMs created (`--no-start`), started, stopped and deleted, each step as K CLI
//! commands spawned at once, against the same K commands run one after the other (the serial
//! reference runs first, and only up to `--serial-max` VMs).

use std::process::Command;
use std::time::Duration;

use crate::fixture::{Bench, run_concurrently, run_serially};
use crate::stats::{format_duration, per_item};
use crate::table::Row;

/// The CLI arguments of each step for VM `name`.
pub(crate) const STEPS: [(&str, &[&str]); 4] = [
    ("create --no-start", &["vm", "create", "{}", "--no-start"]),
    ("start", &["vm", "start", "{}"]),
    ("stop", &["vm", "stop", "{}"]),
    ("delete", &["vm", "delete", "{}"]),
];

/// One batch: its wall time and failures.
pub(crate) struct Batch {
    pub(crate) wall: Duration,
    pub(crate) errors: Vec<String>,
}

/// The scale rows for `k` VMs; the serial reference only when `serial`.
pub(crate) fn measure(bench: &Bench, k: usize, serial: bool) -> Vec<Row> {
    let serial = serial.then(|| lifecycle(bench, k, "s", false));
    let concurrent = lifecycle(bench, k, "c", true);
    STEPS
        .iter()
        .enumerate()
        .map(|(n, (step, _))| {
            let s = serial.as_ref().and_then(|s| s.get(n));
            concurrent.get(n).map_or_else(
                || Row::skipped(step.to_owned(), "not run"),
                |c| scale_row(k, step, s, c),
            )
        })
        .collect()
}

/// The commands of step `args` for every name.
pub(crate) fn commands(bench: &Bench, names: &[String], args: &[&str]) -> Vec<Command> {
    names
        .iter()
        .map(|name| {
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "{}" { name.as_str() } else { a })
                .collect();
            bench.banger(&args)
        })
        .collect()
}

/// Runs step `args` for every name, `batch` commands at a time (for filling a stack, untimed);
/// returns every failure.
pub(crate) fn in_batches(
    bench: &Bench,
    names: &[String],
    args: &[&str],
    batch: usize,
) -> Vec<String> {
    names
        .chunks(batch.max(1))
        .flat_map(|chunk| run_concurrently(commands(bench, chunk, args)).1)
        .collect()
}

/// Runs the four steps over `k` VMs named `<prefix><k>-<i>`, concurrently or serially.
fn lifecycle(bench: &Bench, k: usize, prefix: &str, concurrent: bool) -> Vec<Batch> {
    let names: Vec<String> = (0..k).map(|i| format!("{prefix}{k}-{i}")).collect();
    STEPS
        .iter()
        .map(|(_, args)| {
            let cmds = commands(bench, &names, args);
            let (wall, errors) = if concurrent {
                run_concurrently(cmds)
            } else {
                run_serially(cmds)
            };
            Batch { wall, errors }
        })
        .collect()
}

/// Per-VM cost of the concurrent batch against the serial one, wall times in the note.
fn scale_row(k: usize, step: &str, serial: Option<&Batch>, concurrent: &Batch) -> Row {
    let what = format!("scale {k}: {step} per VM (ref: serial)");
    let mut note = format!("wall {} concurrent", format_duration(concurrent.wall));
    match serial {
        Some(s) => note.push_str(&format!(", {} serial", format_duration(s.wall))),
        None => note.push_str(", serial not run (over --serial-max)"),
    }
    for (label, b) in [("concurrent", Some(concurrent)), ("serial", serial)] {
        if let Some(first) = b.and_then(|b| b.errors.first()) {
            note.push_str(&format!(
                "; {label}: {} of {k} failed: {first}",
                b.map_or(0, |b| b.errors.len())
            ));
        }
    }
    if concurrent.errors.len() == k {
        return Row::skipped(what, "every concurrent command failed").with_note(note);
    }
    let serial_cost = serial
        .filter(|s| s.errors.len() < k)
        .map(|s| per_item(s.wall, k));
    Row::measured(what, per_item(concurrent.wall, k), None, serial_cost).with_note(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ms: u64, errors: usize) -> Batch {
        Batch {
            wall: Duration::from_millis(ms),
            errors: vec!["exit status: 1: no".to_owned(); errors],
        }
    }

    #[test]
    fn the_row_divides_each_wall_time_by_the_vm_count() {
        let row = scale_row(10, "start", Some(&batch(6_000, 0)), &batch(1_000, 1));
        assert_eq!(
            row.outcome,
            Row::measured(
                "",
                Duration::from_millis(100),
                None,
                Some(Duration::from_millis(600))
            )
            .outcome
        );
        assert!(row.note.contains("concurrent: 1 of 10 failed"), "{row:?}");
        let row = scale_row(100, "stop", None, &batch(2_000, 0));
        assert!(row.note.contains("over --serial-max"), "{row:?}");
        let crate::table::Outcome::Measured { reference, .. } = row.outcome else {
            panic!("{row:?}")
        };
        assert_eq!(reference, None);
    }
}
