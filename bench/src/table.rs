//! The result table: one row per measurement, ours beside its reference, printed as Markdown
//! with padded columns so it reads in a terminal too.

use std::time::Duration;

use crate::stats::{format_duration, format_ratio, ratio};

/// What one row measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Our p50 and (when it has a distribution) p99, and the reference's p50 if there is one.
    Measured {
        /// Our median.
        p50: Duration,
        /// Our 99th percentile; `None` for a single measurement (a batch's wall time).
        p99: Option<Duration>,
        /// The reference's median; `None` when the row has no reference or it failed.
        reference: Option<Duration>,
    },
    /// The row could not run; the reason is printed.
    Skipped(String),
}

/// One table row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// What was measured, and what the reference is.
    pub(crate) what: String,
    /// The numbers, or why there are none.
    pub(crate) outcome: Outcome,
    /// Anything else worth a glance (batch wall times, per-VM costs, reference failures).
    pub(crate) note: String,
}

impl Row {
    /// A measured row.
    pub(crate) fn measured(
        what: impl Into<String>,
        p50: Duration,
        p99: Option<Duration>,
        reference: Option<Duration>,
    ) -> Self {
        Self {
            what: what.into(),
            outcome: Outcome::Measured {
                p50,
                p99,
                reference,
            },
            note: String::new(),
        }
    }

    /// A row that could not run, and why.
    pub(crate) fn skipped(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            outcome: Outcome::Skipped(why.into()),
            note: String::new(),
        }
    }

    /// The same row with `note` attached.
    #[must_use]
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn cells(&self) -> [String; 6] {
        let dash = || "-".to_owned();
        match &self.outcome {
            Outcome::Measured {
                p50,
                p99,
                reference,
            } => [
                self.what.clone(),
                format_duration(*p50),
                p99.map_or_else(dash, format_duration),
                reference.map_or_else(dash, format_duration),
                reference
                    .and_then(|r| ratio(*p50, r))
                    .map_or_else(dash, format_ratio),
                self.note.clone(),
            ],
            Outcome::Skipped(why) => [
                self.what.clone(),
                format!("skipped: {why}"),
                dash(),
                dash(),
                dash(),
                self.note.clone(),
            ],
        }
    }
}

const HEADER: [&str; 6] = [
    "what",
    "ours p50",
    "ours p99",
    "reference p50",
    "ratio",
    "note",
];

/// `rows` as a Markdown table with a header; every column padded to its widest cell.
pub(crate) fn render(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&HEADER.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_ours_beside_the_reference_with_the_ratio() {
        let rows = [
            Row::measured(
                "vm stop",
                Duration::from_millis(30),
                Some(Duration::from_millis(45)),
                Some(Duration::from_millis(10)),
            ),
            Row::measured("batch", Duration::from_micros(500), None, None).with_note("wall 1 s"),
            Row::skipped("vm list", "needs root"),
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("| what "), "{table}");
        assert!(lines[1].starts_with("|---"), "{table}");
        assert_eq!(
            lines[2].split('|').map(str::trim).collect::<Vec<_>>(),
            [
                "", "vm stop", "30.0 ms", "45.0 ms", "10.0 ms", "3.0x", "", ""
            ]
        );
        assert_eq!(
            lines[3].split('|').map(str::trim).collect::<Vec<_>>(),
            ["", "batch", "500 us", "-", "-", "-", "wall 1 s", ""]
        );
        assert!(lines[4].contains("skipped: needs root"), "{table}");
        // Every line is padded to the same width.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    }
}
