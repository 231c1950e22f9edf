//! Scale: K VMs created (`--no-start`), started, stopped and deleted, each step as K CLI
//! commands spawned at once, against the same K commands run one after the other. While the
//! K records exist (after the create), `banger vm list` is timed too.

use std::process::Command;

use super::{Samples, list};
use crate::fixture::{Bench, run_concurrently, run_serially};
use crate::stats::{format_duration, per_item};
use crate::table::Row;

/// The CLI arguments of each step for VM `name`.
const STEPS: [(&str, &[&str]); 4] = [
    ("create --no-start", &["vm", "create", "{}", "--no-start"]),
    ("start", &["vm", "start", "{}"]),
    ("stop", &["vm", "stop", "{}"]),
    ("delete", &["vm", "delete", "{}"]),
];

/// One batch: its wall time and failures.
struct Batch {
    wall: std::time::Duration,
    errors: Vec<String>,
}

/// The scale rows for `k` VMs, and the `vm list` row with `k` records.
pub(crate) fn measure(
    bench: &Bench,
    k: usize,
    reps: usize,
    empty: &Samples,
    floor: &Samples,
) -> Vec<Row> {
    let serial = lifecycle(bench, k, "s", None);
    let mut listed = Samples::default();
    let concurrent = lifecycle(bench, k, "c", Some((&mut listed, reps)));
    let mut rows: Vec<Row> = STEPS
        .iter()
        .zip(serial.iter().zip(&concurrent))
        .map(|((step, _), (s, c))| scale_row(k, step, s, c))
        .collect();
    rows.push(list::row(
        &format!(
            "vm list, {k} VM{} (ref: banger --version)",
            if k == 1 { "" } else { "s" }
        ),
        &listed,
        floor,
        Some((k, empty)),
    ));
    rows
}

/// Runs the four steps over `k` VMs named `<prefix><k>-<i>`, concurrently when `list` is given
/// (it then also samples `vm list` after the create), serially otherwise.
fn lifecycle(
    bench: &Bench,
    k: usize,
    prefix: &str,
    mut list: Option<(&mut Samples, usize)>,
) -> Vec<Batch> {
    let names: Vec<String> = (0..k).map(|i| format!("{prefix}{k}-{i}")).collect();
    let concurrent = list.is_some();
    let mut batches = Vec::new();
    for (n, (_, args)) in STEPS.iter().enumerate() {
        let cmds: Vec<Command> = names
            .iter()
            .map(|name| {
                let args: Vec<&str> = args
                    .iter()
                    .map(|a| if *a == "{}" { name.as_str() } else { a })
                    .collect();
                bench.banger(&args)
            })
            .collect();
        let (wall, errors) = if concurrent {
            run_concurrently(cmds)
        } else {
            run_serially(cmds)
        };
        batches.push(Batch { wall, errors });
        if n == 0
            && let Some((samples, reps)) = list.as_mut()
        {
            **samples = list::sample(bench, *reps);
        }
    }
    batches
}

/// Per-VM cost of the concurrent batch against the serial one, wall times in the note.
fn scale_row(k: usize, step: &str, serial: &Batch, concurrent: &Batch) -> Row {
    let what = format!("scale {k}: {step} per VM (ref: serial)");
    let mut note = format!(
        "wall {} concurrent, {} serial",
        format_duration(concurrent.wall),
        format_duration(serial.wall)
    );
    for (label, b) in [("concurrent", concurrent), ("serial", serial)] {
        if let Some(first) = b.errors.first() {
            note.push_str(&format!(
                "; {label}: {} of {k} failed: {first}",
                b.errors.len()
            ));
        }
    }
    if concurrent.errors.len() == k {
        return Row::skipped(what, "every concurrent command failed").with_note(note);
    }
    let serial_cost = (serial.errors.len() < k).then(|| per_item(serial.wall, k));
    Row::measured(what, per_item(concurrent.wall, k), None, serial_cost).with_note(note)
}
