//! Parsing and printing of the quantities `banger vm` flags take: vCPU counts, memory and disk
//! sizes, ages.
//!
//! Parsing goes through proto's validated types ([`CpuCount`], [`MemMib`]), so a value the
//! controller would refuse is refused here first, as a usage error, before anything is sent.

use banger_proto::{CpuCount, MemMib};

/// Parses `--cpus`: a whole number from 1 to 32.
pub(crate) fn parse_cpus(s: &str) -> Result<CpuCount, String> {
    s.parse::<CpuCount>().map_err(|e| e.to_string())
}

/// Parses `--memory`: MiB as a plain number (`512`) or a size with a unit (`512M`, `2G`).
pub(crate) fn parse_memory(s: &str) -> Result<MemMib, String> {
    parse_size_mib("memory", s)
}

/// Parses `--disk`: MiB as a plain number (`4096`) or a size with a unit (`4G`).
pub(crate) fn parse_disk(s: &str) -> Result<MemMib, String> {
    parse_size_mib("disk size", s)
}

/// Parses a size in MiB: a whole number with an optional unit `M`/`MiB` (the default), `G`/`GiB`
/// or `T`/`TiB`, case-insensitive. Zero and negative sizes are refused.
fn parse_size_mib(kind: &'static str, s: &str) -> Result<MemMib, String> {
    let t = s.trim();
    let digits_end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    let (num, unit) = t.split_at(digits_end);
    let shape =
        || format!("{kind} must be a whole number of MiB or a size like 512M or 2G, got {s:?}");
    let n: i64 = num.parse().map_err(|_| shape())?;
    let factor: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(shape()),
    };
    if n <= 0 {
        return Err(format!("{kind} must be greater than 0, got {s:?}"));
    }
    let max = || format!("{kind} must be at most {} MiB (1T), got {s:?}", MemMib::MAX);
    let mib = n.checked_mul(factor).ok_or_else(max)?;
    MemMib::new(mib).map_err(|_| max())
}

/// Prints MiB the way people write them: `512M`, `2G`, `1536M`, `1T`.
pub(crate) fn format_mib(mib: MemMib) -> String {
    let v = mib.get();
    if v.is_multiple_of(1024 * 1024) {
        format!("{}T", v / (1024 * 1024))
    } else if v.is_multiple_of(1024) {
        format!("{}G", v / 1024)
    } else {
        format!("{v}M")
    }
}

/// Prints bytes with a binary unit and one decimal: `512B`, `3.4MiB`, `1.0GiB`.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    // Precision loss is fine: this is a display value.
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1}{unit}")
}

/// The age of something that happened at `then_ms`, seen at `now_ms`: `12s`, `4m`, `3h`,
/// `2d`. A timestamp in the future (clock skew between hosts) prints as `0s`.
pub(crate) fn age(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    }
}

/// A duration in whole seconds, for `--wait-timeout`: `90`, `90s`, `5m`.
pub(crate) fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix('m') {
        (n, 60)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1)
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n.saturating_mul(mult))),
        _ => Err(format!(
            "expected a positive number of seconds like 90 or 90s, or minutes like 5m, got {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_accepts_mib_and_units() {
        for (input, mib) in [
            ("512", 512),
            ("512M", 512),
            ("512mib", 512),
            ("1G", 1024),
            ("2gib", 2048),
            ("1T", 1024 * 1024),
            (" 768 ", 768),
        ] {
            assert_eq!(parse_memory(input).unwrap().get(), mib, "{input}");
        }
    }

    #[test]
    fn zero_and_negative_sizes_are_refused_with_the_flag_name() {
        for bad in ["0", "-1", "-512M", "0G"] {
            let err = parse_memory(bad).unwrap_err();
            assert!(
                err.contains("memory must be greater than 0"),
                "{bad}: {err}"
            );
        }
        let err = parse_disk("-4G").unwrap_err();
        assert!(err.starts_with("disk size must be greater than 0"), "{err}");
    }

    #[test]
    fn malformed_and_huge_sizes_say_what_is_expected() {
        for bad in ["", "G", "1.5G", "12X", "lots", "1-2"] {
            let err = parse_memory(bad).unwrap_err();
            assert!(err.contains("like 512M or 2G"), "{bad:?}: {err}");
        }
        let err = parse_memory("2T").unwrap_err();
        assert!(err.contains("at most 1048576 MiB"), "{err}");
        assert!(parse_memory("99999999999999999999").is_err());
    }

    #[test]
    fn cpus_must_be_between_1_and_32() {
        assert_eq!(parse_cpus("4").unwrap().get(), 4);
        assert!(parse_cpus("0").unwrap_err().contains("greater than 0"));
        assert!(parse_cpus("-2").unwrap_err().contains("greater than 0"));
        assert!(parse_cpus("33").unwrap_err().contains("at most 32"));
        assert!(parse_cpus("two").is_err());
    }

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        let m = |v| MemMib::new(v).unwrap();
        assert_eq!(format_mib(m(512)), "512M");
        assert_eq!(format_mib(m(2048)), "2G");
        assert_eq!(format_mib(m(1536)), "1536M");
        assert_eq!(format_mib(m(1024 * 1024)), "1T");
        assert_eq!(format_bytes(100), "100B");
        assert_eq!(format_bytes(3 * 1024 * 1024 + 512 * 1024), "3.5MiB");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(0, 12_000), "12s");
        assert_eq!(age(0, 250_000), "4m");
        assert_eq!(age(0, 7_500_000), "2h");
        assert_eq!(age(0, 273_600_000), "3d");
        assert_eq!(age(5_000, 1_000), "0s");
    }

    #[test]
    fn wait_timeouts_parse() {
        assert_eq!(parse_seconds("90").unwrap().as_secs(), 90);
        assert_eq!(parse_seconds("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_seconds("5m").unwrap().as_secs(), 300);
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-3").is_err());
    }
}
