//! The results as files: the printed Markdown, and the same rows as JSON (times in
//! microseconds) for tools that track them from run to run.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::stats::ratio;
use crate::table::{Outcome, Row};

/// Writes `markdown` to `DIR/banger-bench.md` and `rows` to `DIR/banger-bench.json`; returns
/// the paths written, for the user.
pub(crate) fn write(dir: &Path, markdown: &str, rows: &[Row]) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let md = dir.join("banger-bench.md");
    let js = dir.join("banger-bench.json");
    std::fs::write(&md, markdown).map_err(|e| format!("writing {}: {e}", md.display()))?;
    let text = serde_json::to_string_pretty(&to_json(rows))
        .map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::write(&js, text + "\n").map_err(|e| format!("writing {}: {e}", js.display()))?;
    Ok(format!("{} and {}", md.display(), js.display()))
}

/// `{"rows": [{what, ours_p50_us, ours_p99_us, reference_p50_us, ratio, skipped, note}]}`;
/// absent numbers are null, `skipped` is the reason or null.
pub(crate) fn to_json(rows: &[Row]) -> Value {
    let us = |d: Option<Duration>| d.map(|d| d.as_micros());
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Measured {
                p50,
                p99,
                reference,
            } => json!({
                "what": r.what,
                "ours_p50_us": us(Some(*p50)),
                "ours_p99_us": us(*p99),
                "reference_p50_us": us(*reference),
                "ratio": reference.and_then(|rf| ratio(*p50, rf)),
                "skipped": null,
                "note": r.note,
            }),
            Outcome::Skipped(why) => json!({
                "what": r.what,
                "ours_p50_us": null,
                "ours_p99_us": null,
                "reference_p50_us": null,
                "ratio": null,
                "skipped": why,
                "note": r.note,
            }),
        })
        .collect();
    json!({ "hypervisor": "simulator", "profile": crate::header::profile(), "rows": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_carry_microseconds_and_skip_reasons() {
        let rows = [
            Row::measured(
                "vm stop",
                Duration::from_millis(3),
                None,
                Some(Duration::from_millis(1)),
            ),
            Row::skipped("vm list", "needs root"),
        ];
        let v = to_json(&rows);
        assert_eq!(v["hypervisor"], "simulator");
        assert_eq!(v["rows"][0]["ours_p50_us"], 3000);
        assert_eq!(v["rows"][0]["ours_p99_us"], Value::Null);
        assert_eq!(v["rows"][0]["ratio"], 3.0);
        assert_eq!(v["rows"][1]["skipped"], "needs root");
    }
}
