//! The result table: one row per measurement, ours beside its reference, printed as Markdown
//! with padded columns so it reads in a terminal too.

use std::time::Duration;

use crate::stats::{format_bytes, format_duration, format_rate, format_ratio, ratio};

/// One number of a row, with its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Quantity {
    /// A time.
    Time(Duration),
    /// A size in bytes (resident memory).
    Bytes(u64),
    /// Things per second (DNS queries).
    Rate(f64),
}

impl Quantity {
    /// The number as the table prints it, with its unit.
    pub(crate) fn format(self) -> String {
        match self {
            Self::Time(d) => format_duration(d),
            Self::Bytes(b) => format_bytes(b),
            Self::Rate(r) => format_rate(r),
        }
    }

    /// The unit of [`Self::value`] in the JSON file.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Self::Time(_) => "us",
            Self::Bytes(_) => "bytes",
            Self::Rate(_) => "per_second",
        }
    }

    /// The number in [`Self::unit`].
    pub(crate) fn value(self) -> f64 {
        #[allow(
            clippy::cast_precision_loss,
            reason = "microseconds and byte counts of a benchmark are far below 2^52"
        )]
        match self {
            Self::Time(d) => d.as_micros() as f64,
            Self::Bytes(b) => b as f64,
            Self::Rate(r) => r,
        }
    }

    /// How many times `self` is `reference`: `None` for different units or a zero reference.
    pub(crate) fn ratio(self, reference: Self) -> Option<f64> {
        match (self, reference) {
            (Self::Time(a), Self::Time(b)) => ratio(a, b),
            (Self::Bytes(_), Self::Bytes(_)) | (Self::Rate(_), Self::Rate(_)) => {
                let (a, b) = (self.value(), reference.value());
                (b > 0.0).then(|| a / b)
            }
            _ => None,
        }
    }
}

/// What one row measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Our p50 (or single value) and (when it has a distribution) p99, and the reference's p50
    /// (or single value) if there is one.
    Measured {
        /// Our median, or our one number.
        p50: Quantity,
        /// Our 99th percentile; `None` for a single measurement (a batch's wall time).
        p99: Option<Quantity>,
        /// The reference's median; `None` when the row has no reference or it failed.
        reference: Option<Quantity>,
    },
    /// The row could not run; the reason is printed.
    Skipped(String),
}

/// One table row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// The group the row belongs to (`latency`, `scale`, ...), set when the group's rows are
    /// collected.
    pub(crate) group: &'static str,
    /// What was measured, and what the reference is.
    pub(crate) what: String,
    /// The numbers, or why there are none.
    pub(crate) outcome: Outcome,
    /// Anything else worth a glance (batch wall times, per-VM costs, reference failures).
    pub(crate) note: String,
    /// Share of the operation's time spent in each service (from the spans), 0 to 1.
    pub(crate) shares: Vec<(String, f64)>,
}

impl Row {
    /// A measured row of times.
    pub(crate) fn measured(
        what: impl Into<String>,
        p50: Duration,
        p99: Option<Duration>,
        reference: Option<Duration>,
    ) -> Self {
        Self::quantities(
            what,
            Quantity::Time(p50),
            p99.map(Quantity::Time),
            reference.map(Quantity::Time),
        )
    }

    /// A measured row of any unit.
    pub(crate) fn quantities(
        what: impl Into<String>,
        p50: Quantity,
        p99: Option<Quantity>,
        reference: Option<Quantity>,
    ) -> Self {
        Self {
            group: "",
            what: what.into(),
            outcome: Outcome::Measured {
                p50,
                p99,
                reference,
            },
            note: String::new(),
            shares: Vec::new(),
        }
    }

    /// A row that could not run, and why.
    pub(crate) fn skipped(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            group: "",
            what: what.into(),
            outcome: Outcome::Skipped(why.into()),
            note: String::new(),
            shares: Vec::new(),
        }
    }

    /// The same row with `note` attached.
    #[must_use]
    pub(crate) fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// The same row with `more` appended to its note.
    #[must_use]
    pub(crate) fn add_note(mut self, more: &str) -> Self {
        if !more.is_empty() {
            if !self.note.is_empty() {
                self.note.push_str("; ");
            }
            self.note.push_str(more);
        }
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
                p50.format(),
                p99.map_or_else(dash, Quantity::format),
                reference.map_or_else(dash, Quantity::format),
                reference
                    .and_then(|r| p50.ratio(r))
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
    "ours (p50)",
    "ours p99",
    "reference (p50)",
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
            Row::quantities(
                "dns qps",
                Quantity::Rate(50_000.0),
                None,
                Some(Quantity::Rate(100_000.0)),
            ),
            Row::quantities(
                "rss",
                Quantity::Bytes(3 << 20),
                None,
                Some(Quantity::Bytes(2 << 20)),
            ),
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 7, "{table}");
        assert!(lines[0].starts_with("| what "), "{table}");
        assert!(lines[0].contains("reference (p50)"), "{table}");
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
        assert_eq!(
            lines[5].split('|').map(str::trim).collect::<Vec<_>>(),
            ["", "dns qps", "50,000/s", "-", "100,000/s", "0.5x", "", ""]
        );
        assert_eq!(
            lines[6].split('|').map(str::trim).collect::<Vec<_>>(),
            ["", "rss", "3.0 MiB", "-", "2.0 MiB", "1.5x", "", ""]
        );
        // Every line is padded to the same width.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    }
}
