//! Command-line flags and the settings they resolve to.

use clap::Parser;

/// Most VMs one scale step may ask for: the stack's VM subnet is a /24.
pub(crate) const MAX_SCALE: usize = 200;

/// Flags of `banger-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "banger-bench",
    about = "banger's numbers from the user's side (the real `banger` CLI against a real stack, \
             hypervisor SIMULATED), each beside a reference measured in the same run",
    after_help = "Run as root after `cargo build --workspace --bins` (release: add --release to \
                  both). Rows that cannot run here say `skipped: why`."
)]
pub(crate) struct Args {
    /// Repetitions per latency row [default: 20, or 5 with --quick]
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) reps: Option<u32>,
    /// VM counts of the scale rows, comma separated [default: 1,10,50, or 1,10 with --quick]
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = parse_scale)]
    pub(crate) scale: Option<Vec<usize>>,
    /// A fast run: N=5 and scale 1,10 (explicit -n/--scale still win)
    #[arg(long)]
    pub(crate) quick: bool,
    /// Also write the results to DIR/banger-bench.md and DIR/banger-bench.json
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<std::path::PathBuf>,
}

/// What the run does, after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Repetitions per latency row.
    pub(crate) reps: usize,
    /// VM counts of the scale rows.
    pub(crate) scale: Vec<usize>,
}

impl Args {
    /// The settings these flags ask for.
    pub(crate) fn settings(&self) -> Settings {
        let (reps, scale) = if self.quick {
            (5, vec![1, 10])
        } else {
            (20, vec![1, 10, 50])
        };
        Settings {
            reps: self.reps.map_or(reps, |n| n as usize),
            scale: self.scale.clone().unwrap_or(scale),
        }
    }
}

fn parse_scale(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a VM count (a whole number, 1 to {MAX_SCALE})"))?;
    if (1..=MAX_SCALE).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} VMs: a scale step is 1 to {MAX_SCALE} VMs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_shrinks_the_defaults_and_explicit_flags_win() {
        let s = Args::parse_from(["banger-bench"]).settings();
        assert_eq!((s.reps, s.scale), (20, vec![1, 10, 50]));
        let s = Args::parse_from(["banger-bench", "--quick"]).settings();
        assert_eq!((s.reps, s.scale), (5, vec![1, 10]));
        let s =
            Args::parse_from(["banger-bench", "--quick", "-n", "3", "--scale", "2,4"]).settings();
        assert_eq!((s.reps, s.scale), (3, vec![2, 4]));
    }

    #[test]
    fn bad_counts_are_refused() {
        for bad in [
            &["--scale", "0"][..],
            &["--scale", "1,x"],
            &["--scale", "999"],
            &["-n", "0"],
        ] {
            let argv = std::iter::once("banger-bench").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
    }
}
