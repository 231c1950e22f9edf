//! The results as files: the printed Markdown, and the same rows as JSON for tools that track
//! them from run to run, named after the run's start time and host.

use std::path::Path;

use serde_json::{Value, json};

use crate::header::Machine;
use crate::table::{Outcome, Quantity, Row};

/// Writes `markdown` to `DIR/<stem>.md` and the rows with the machine to `DIR/<stem>.json`;
/// returns the paths written, for the user.
pub(crate) fn write(
    dir: &Path,
    stem: &str,
    markdown: &str,
    json: &Value,
) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let md = dir.join(format!("{stem}.md"));
    let js = dir.join(format!("{stem}.json"));
    std::fs::write(&md, markdown).map_err(|e| format!("writing {}: {e}", md.display()))?;
    let text =
        serde_json::to_string_pretty(json).map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::write(&js, text + "\n").map_err(|e| format!("writing {}: {e}", js.display()))?;
    Ok(format!("{} and {}", md.display(), js.display()))
}

/// `{hypervisor, profile, machine, settings, load_at_end, rows: [{group, what, unit, ours_p50,
/// ours_p99, reference, ratio, shares, skipped, note}]}`: times in microseconds, memory in
/// bytes, rates per second; absent numbers are null, `skipped` is the reason or null, `shares`
/// maps a service to its share (0 to 1) of the command's time.
pub(crate) fn to_json(
    rows: &[Row],
    machine: &Machine,
    settings: &Value,
    load_at_end: &str,
) -> Value {
    let value = |q: Option<Quantity>| q.map(Quantity::value);
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let shares: serde_json::Map<String, Value> = r
                .shares
                .iter()
                .map(|(svc, share)| (svc.clone(), json!(share)))
                .collect();
            match &r.outcome {
                Outcome::Measured {
                    p50,
                    p99,
                    reference,
                } => json!({
                    "group": r.group,
                    "what": r.what,
                    "unit": p50.unit(),
                    "ours_p50": p50.value(),
                    "ours_p99": value(*p99),
                    "reference": value(*reference),
                    "ratio": reference.and_then(|rf| p50.ratio(rf)),
                    "shares": shares,
                    "skipped": null,
                    "note": r.note,
                }),
                Outcome::Skipped(why) => json!({
                    "group": r.group,
                    "what": r.what,
                    "unit": null,
                    "ours_p50": null,
                    "ours_p99": null,
                    "reference": null,
                    "ratio": null,
                    "shares": shares,
                    "skipped": why,
                    "note": r.note,
                }),
            }
        })
        .collect();
    json!({
        "hypervisor": "simulator",
        "profile": crate::header::profile(),
        "machine": machine.json(),
        "settings": settings,
        "load_at_end": load_at_end,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn json_rows_carry_units_shares_and_skip_reasons() {
        let mut timed = Row::measured(
            "vm stop",
            Duration::from_millis(3),
            None,
            Some(Duration::from_millis(1)),
        );
        timed.shares = vec![("netd".to_owned(), 0.25)];
        timed.group = "latency";
        let rows = [
            timed,
            Row::quantities("rss", Quantity::Bytes(4096), None, None),
            Row::skipped("vm list", "needs root"),
        ];
        let v = to_json(&rows, &Machine::read(), &json!({"reps": 3}), "0.5 0.5 0.5");
        assert_eq!(v["hypervisor"], "simulator");
        assert_eq!(v["settings"]["reps"], 3);
        assert!(v["machine"]["cpus"].as_u64().is_some_and(|n| n > 0), "{v}");
        assert_eq!(v["rows"][0]["group"], "latency");
        assert_eq!(v["rows"][0]["unit"], "us");
        assert_eq!(v["rows"][0]["ours_p50"], 3000.0);
        assert_eq!(v["rows"][0]["ours_p99"], Value::Null);
        assert_eq!(v["rows"][0]["ratio"], 3.0);
        assert_eq!(v["rows"][0]["shares"]["netd"], 0.25);
        assert_eq!(v["rows"][1]["unit"], "bytes");
        assert_eq!(v["rows"][2]["skipped"], "needs root");
    }
}
