//! `banger vm list`: the CLI's cost per listed VM, against the CLI's own process start
//! (`banger --version`) as the floor.

use super::{Samples, compare};
use crate::fixture::{Bench, time};
use crate::stats::{format_duration, per_item};
use crate::table::Row;

/// `reps` timed runs of `banger vm list`, listing whatever the stack holds now.
pub(crate) fn sample(bench: &Bench, reps: usize) -> Samples {
    let mut s = Samples::default();
    for _ in 0..reps {
        s.push(time(&mut bench.banger(&["vm", "list"])));
    }
    s
}

/// The row for a `vm list` sample; with `listed = Some(k)` the note gives the extra cost per
/// listed VM over the empty list `empty`.
pub(crate) fn row(
    what: &str,
    ours: &Samples,
    floor: &Samples,
    listed: Option<(usize, &Samples)>,
) -> Row {
    let row = compare(what, ours, floor);
    let Some((k, empty)) = listed else {
        return row;
    };
    match (ours.summary(), empty.summary()) {
        (Some(full), Some(none)) => {
            let extra = full.p50.saturating_sub(none.p50);
            let per_vm = format!("+{} per listed VM", format_duration(per_item(extra, k)));
            let note = if row.note.is_empty() {
                per_vm
            } else {
                format!("{per_vm}; {}", row.note)
            };
            row.with_note(note)
        }
        _ => row,
    }
}
