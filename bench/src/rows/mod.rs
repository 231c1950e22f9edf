//! The rows of the table, one module per group: control-plane latency, scale, `vm list`.

mod latency;
mod list;
mod scale;

use std::time::Duration;

use crate::args::Settings;
use crate::fixture::Bench;
use crate::stats::Summary;
use crate::table::Row;

/// Every row, measured against one stack; or every group skipped with `why` when the stack
/// cannot run here.
pub(crate) fn all(settings: &Settings, ready: Result<(), String>) -> Vec<Row> {
    let bench = ready.and_then(|()| Bench::start());
    let bench = match bench {
        Ok(b) => b,
        Err(why) => {
            let mut rows = vec![
                Row::skipped("control-plane latency (vm create/start/stop/delete)", &why),
                Row::skipped("vm list", &why),
            ];
            rows.extend(
                settings
                    .scale
                    .iter()
                    .map(|k| Row::skipped(format!("scale {k} VMs"), &why)),
            );
            return rows;
        }
    };
    let list_empty = list::sample(&bench, settings.reps);
    let lat = latency::measure(&bench, settings.reps);
    let floor = lat.version.clone();
    let mut rows = lat.rows();
    rows.push(list::row(
        "vm list, 0 VMs (ref: banger --version)",
        &list_empty,
        &floor,
        None,
    ));
    for &k in &settings.scale {
        rows.extend(scale::measure(
            &bench,
            k,
            settings.reps,
            &list_empty,
            &floor,
        ));
    }
    rows
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
