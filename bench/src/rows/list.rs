//! `banger vm list` with 0, 10 and 1,000 VMs, against the CLI's own process start (`banger
//! --version`) as the floor.
//!
//! The listed VMs are created with `vm create --no-start --disk 64M`: real records in the
//! controller's database and real volumes from stord, but no simulator process and no tap.
//! Memory would allow running ones (~6 MiB resident per simulator in release, see the
//! footprint group), CPU does not: each idle simulator takes ~1% of a CPU, and 840 of them
//! drove a 2-CPU machine to a load average of 260. `--list-started` starts them anyway.

use std::time::Instant;

use super::scale::in_batches;
use super::{Samples, compare};
use crate::fixture::{Bench, time};
use crate::stats::{format_duration, per_item};
use crate::table::Row;

/// VMs created at once while filling the stack.
const CREATE_BATCH: usize = 25;

/// `reps` timed runs of `banger vm list`, listing whatever the stack holds now.
fn sample(bench: &Bench, reps: usize) -> Samples {
    let mut s = Samples::default();
    for _ in 0..reps {
        s.push(time(&mut bench.banger(&["vm", "list"])));
    }
    s
}

/// The floor, the empty list, then the list at each of `counts` (ascending) VMs.
pub(crate) fn measure(bench: &Bench, counts: &[usize], started: bool, reps: usize) -> Vec<Row> {
    let create: &[&str] = if started {
        &["vm", "create", "{}", "--disk", "64M"]
    } else {
        &["vm", "create", "{}", "--no-start", "--disk", "64M"]
    };
    let state = if started { "running" } else { "not started" };
    let mut floor = Samples::default();
    for _ in 0..reps {
        floor.push(time(&mut bench.banger(&["--version"])));
    }
    let empty = sample(bench, reps);
    let mut rows = vec![
        compare(
            "banger --version (CLI floor, no ref)",
            &floor,
            &Samples::default(),
        ),
        compare("vm list, 0 VMs (ref: banger --version)", &empty, &floor),
    ];
    let mut have = 0;
    for &k in counts {
        let started = Instant::now();
        let names: Vec<String> = (have..k).map(|i| format!("l{i}")).collect();
        let failed = in_batches(bench, &names, create, CREATE_BATCH);
        have = have.max(k);
        let filled = started.elapsed();
        let listed = sample(bench, reps);
        let what = format!("vm list, {k} VMs, {state} (ref: banger --version)");
        let mut row = with_per_vm(compare(&what, &listed, &floor), &listed, &empty, k);
        row = row.add_note(&format!("filled in {}", format_duration(filled)));
        if let Some(first) = failed.first() {
            row = row.add_note(&format!("{} creates failed: {first}", failed.len()));
        }
        rows.push(row);
    }
    rows
}

/// `row` with the extra cost per listed VM over the empty list in its note.
fn with_per_vm(row: Row, listed: &Samples, empty: &Samples, k: usize) -> Row {
    match (listed.summary(), empty.summary()) {
        (Some(full), Some(none)) => {
            let extra = full.p50.saturating_sub(none.p50);
            row.add_note(&format!(
                "+{} per listed VM over the empty list",
                format_duration(per_item(extra, k))
            ))
        }
        _ => row,
    }
}
