//! Pure arithmetic over timing samples: percentiles, ratios, and human-readable durations.

use std::time::Duration;

/// p50 and p99 of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Median.
    pub(crate) p50: Duration,
    /// 99th percentile.
    pub(crate) p99: Duration,
}

impl Summary {
    /// The summary of `samples`, or `None` when there are none.
    pub(crate) fn of(samples: &[Duration]) -> Option<Self> {
        Some(Self {
            p50: percentile(samples, 50.0)?,
            p99: percentile(samples, 99.0)?,
        })
    }
}

/// The `p`th percentile of `samples` by the nearest-rank method (the smallest sample with at
/// least `p` percent of the samples at or below it); `None` for no samples.
pub(crate) fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: ceil(p/100 * n), 1-based; at least rank 1.
    let rank = (p / 100.0 * n as f64).ceil();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rank lies in 0..=n, a small non-negative whole number"
    )]
    let rank = rank as usize;
    let idx = rank.clamp(1, n) - 1;
    sorted.get(idx).copied()
}

/// How many times `ours` is `reference`; `None` when the reference is zero.
pub(crate) fn ratio(ours: Duration, reference: Duration) -> Option<f64> {
    if reference.is_zero() {
        None
    } else {
        Some(ours.as_secs_f64() / reference.as_secs_f64())
    }
}

/// A ratio as the table prints it: `12.3x` (one decimal below 100, none above).
pub(crate) fn format_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.1}x")
    }
}

/// A duration with a unit that keeps three significant digits: `850 us`, `12.3 ms`, `1.23 s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} us")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A size in bytes with a binary unit: `512 B`, `12.3 KiB`, `45.6 MiB`, `1.20 GiB`.
pub(crate) fn format_bytes(b: u64) -> String {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a memory size printed with three significant digits"
    )]
    let f = b as f64;
    if b < 1024 {
        format!("{b} B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else if f < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    }
}

/// A rate per second, whole, with thousands separated: `48,213/s`.
pub(crate) fn format_rate(r: f64) -> String {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative rate rounded for printing"
    )]
    let whole = r.max(0.0).round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out + "/s"
}

/// `total` split evenly over `count` items (the per-VM cost of a batch); `count` 0 gives 0.
pub(crate) fn per_item(total: Duration, count: usize) -> Duration {
    match u32::try_from(count) {
        Ok(0) | Err(_) => Duration::ZERO,
        Ok(c) => total / c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&s, 0.0), Some(Duration::from_millis(1)));
        let even = ms(&[1, 2, 3, 4]);
        assert_eq!(percentile(&even, 50.0), Some(Duration::from_millis(2)));
        // p99 of 200 samples is the 198th, not the maximum.
        let many: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&many, 99.0), Some(Duration::from_millis(198)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(
            Summary::of(&ms(&[7])),
            Some(Summary {
                p50: Duration::from_millis(7),
                p99: Duration::from_millis(7)
            })
        );
    }

    #[test]
    fn ratios_divide_ours_by_the_reference_and_refuse_zero() {
        let r = ratio(Duration::from_millis(30), Duration::from_millis(10));
        assert_eq!(r.map(format_ratio).as_deref(), Some("3.0x"));
        assert_eq!(ratio(Duration::from_millis(1), Duration::ZERO), None);
        assert_eq!(format_ratio(250.4), "250x");
        assert_eq!(format_ratio(0.25), "0.2x");
    }

    #[test]
    fn durations_keep_three_significant_digits() {
        assert_eq!(format_duration(Duration::from_micros(850)), "850 us");
        assert_eq!(format_duration(Duration::from_micros(1_234)), "1.23 ms");
        assert_eq!(format_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(format_duration(Duration::from_millis(1_234)), "1.23 s");
        assert_eq!(
            per_item(Duration::from_secs(1), 4),
            Duration::from_millis(250)
        );
        assert_eq!(per_item(Duration::from_secs(1), 0), Duration::ZERO);
    }

    #[test]
    fn sizes_and_rates_print_with_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(45 << 20), "45.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.00 GiB");
        assert_eq!(format_rate(999.4), "999/s");
        assert_eq!(format_rate(48_213.0), "48,213/s");
        assert_eq!(format_rate(1_234_567.0), "1,234,567/s");
        assert_eq!(format_rate(-1.0), "0/s");
    }
}
