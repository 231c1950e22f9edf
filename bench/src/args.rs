//! Command-line flags and the settings they resolve to.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Most VMs one scale step may ask for: the scale stack's VM subnet is a /24.
pub(crate) const MAX_SCALE: usize = 200;
/// Most VMs the `vm list` rows may ask for (that stack gets a /16).
pub(crate) const MAX_LIST: usize = 5_000;

/// A group of rows, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Group {
    /// Per-operation latency (create/start/stop/delete) on the sparse-copy and reflink
    /// back-ends, with each service's share from the spans.
    Latency,
    /// 1..100 VMs through each step at once, against the same steps one after the other.
    Scale,
    /// `banger vm list` wall time with 0, 10 and 1,000 VMs.
    List,
    /// One bus request/reply hop: the service runtime against bare async-nats.
    Bus,
    /// DNS: dnsd against Knot DNS with dnsperf at 1,000 and 10,000 VMs; event→served delay.
    Dns,
    /// Resident memory of each service idle and with 100 VMs running.
    Footprint,
}

impl Group {
    /// Every group, in the order they run: the short ones without a stack first.
    pub(crate) const ALL: [Self; 6] = [
        Self::Bus,
        Self::Dns,
        Self::Latency,
        Self::Scale,
        Self::List,
        Self::Footprint,
    ];

    /// The name `--only` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Scale => "scale",
            Self::List => "list",
            Self::Bus => "bus",
            Self::Dns => "dns",
            Self::Footprint => "footprint",
        }
    }
}

/// Flags of `banger-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "banger-bench",
    about = "banger's numbers from the user's side (the real `banger` CLI against a real stack, \
             hypervisor SIMULATED), each beside a reference measured in the same run",
    after_help = "Run as root after `cargo build --workspace --bins` (release: add --release to \
                  both), or just `scripts/bench`. Rows that cannot run here say `skipped: why`. \
                  A full release run takes about 2 minutes on 2 CPUs; --serial-max 50 saves ~10 s of it."
)]
pub(crate) struct Args {
    /// Repetitions per latency row [default: 20, or 5 with --quick]
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) reps: Option<u32>,
    /// VM counts of the scale rows, comma separated [default: 1,10,50,100, or 1,10 with --quick]
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = parse_scale)]
    pub(crate) scale: Option<Vec<usize>>,
    /// Largest scale step that is also run serially as the reference (serially a VM costs
    /// ~90 ms over the four steps in release: 100 VMs ≈ 10 s); larger steps print no
    /// reference [default: 100, or 10 with --quick]
    #[arg(long, value_name = "N")]
    pub(crate) serial_max: Option<usize>,
    /// VM counts of the `vm list` rows, comma separated [default: 10,1000, or 10,100 with --quick]
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', value_parser = parse_list)]
    pub(crate) list_vms: Option<Vec<usize>>,
    /// Start the `vm list` rows' VMs (by default they are created with `--no-start`: records
    /// and volumes, no simulator process or tap). Each idle simulator takes ~1% of a CPU: 1,000
    /// of them saturate a 2-CPU machine
    #[arg(long)]
    pub(crate) list_started: bool,
    /// VMs running when the footprint is read [default: 100, or 10 with --quick]
    #[arg(long, value_name = "N", value_parser = parse_scale)]
    pub(crate) footprint_vms: Option<usize>,
    /// Run only these groups, comma separated (default: all)
    #[arg(long, value_name = "GROUP,...", value_delimiter = ',')]
    pub(crate) only: Vec<Group>,
    /// A fast run: N=5, scale 1,10, list 10,100, footprint at 10 VMs (explicit flags still win)
    #[arg(long)]
    pub(crate) quick: bool,
    /// Directory for the results: `<date>-<host>.md` and `.json` [default: bench/results of
    /// the source tree]
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Print the results only; write no files
    #[arg(long, conflicts_with = "out")]
    pub(crate) no_save: bool,
    /// After each latency back-end, print where each command's time goes: every span name
    /// per service in its traces (CLI, vm-controller, stord, netd), with its mean and p50 per
    /// command, in the order the steps run; after each scale step count, the same for each
    /// one-command step's trace: per span name its count, sum, longest, and when the first
    /// started and the last ended (the scale stack is then traced, which slows it a little)
    #[arg(long)]
    pub(crate) spans: bool,
}

/// What the run does, after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Repetitions per latency row.
    pub(crate) reps: usize,
    /// VM counts of the scale rows.
    pub(crate) scale: Vec<usize>,
    /// Largest scale step also run serially.
    pub(crate) serial_max: usize,
    /// VM counts of the `vm list` rows, ascending.
    pub(crate) list_vms: Vec<usize>,
    /// Whether the `vm list` rows' VMs are started.
    pub(crate) list_started: bool,
    /// VMs running when the footprint is read.
    pub(crate) footprint_vms: usize,
    /// Groups to run, in run order.
    pub(crate) groups: Vec<Group>,
    /// Where to write the results, if anywhere.
    pub(crate) out: Option<PathBuf>,
    /// Whether the latency and scale groups print their span breakdowns.
    pub(crate) spans: bool,
}

impl Args {
    /// The settings these flags ask for.
    pub(crate) fn settings(&self) -> Settings {
        let (reps, scale, serial_max, list_vms, footprint_vms) = if self.quick {
            (5, vec![1, 10], 10, vec![10, 100], 10)
        } else {
            (20, vec![1, 10, 50, 100], 100, vec![10, 1000], 100)
        };
        let mut list_vms = self.list_vms.clone().unwrap_or(list_vms);
        list_vms.sort_unstable();
        list_vms.dedup();
        let groups = Group::ALL
            .into_iter()
            .filter(|g| self.only.is_empty() || self.only.contains(g))
            .collect();
        let out = if self.no_save {
            None
        } else {
            Some(self.out.clone().unwrap_or_else(default_results_dir))
        };
        Settings {
            reps: self.reps.map_or(reps, |n| n as usize),
            scale: self.scale.clone().unwrap_or(scale),
            serial_max: self.serial_max.unwrap_or(serial_max),
            list_vms,
            list_started: self.list_started,
            footprint_vms: self.footprint_vms.unwrap_or(footprint_vms),
            groups,
            out,
            spans: self.spans,
        }
    }
}

impl Settings {
    /// The settings as JSON, for the results file.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "reps": self.reps,
            "scale": self.scale,
            "serial_max": self.serial_max,
            "list_vms": self.list_vms,
            "list_started": self.list_started,
            "footprint_vms": self.footprint_vms,
            "groups": self.groups.iter().map(|g| g.name()).collect::<Vec<_>>(),
            "spans": self.spans,
        })
    }
}

/// `bench/results` in the source tree this binary was built from.
pub(crate) fn default_results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

fn parse_count(s: &str, max: usize, what: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a VM count (a whole number, 1 to {max})"))?;
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} VMs: {what} is 1 to {max} VMs"))
    }
}

fn parse_scale(s: &str) -> Result<usize, String> {
    parse_count(s, MAX_SCALE, "a scale step")
}

fn parse_list(s: &str) -> Result<usize, String> {
    parse_count(s, MAX_LIST, "a `vm list` row")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_shrinks_the_defaults_and_explicit_flags_win() {
        let s = Args::parse_from(["banger-bench"]).settings();
        assert_eq!(
            (s.reps, &s.scale[..], s.serial_max, &s.list_vms[..]),
            (20, &[1, 10, 50, 100][..], 100, &[10, 1000][..])
        );
        assert_eq!(s.footprint_vms, 100);
        assert!(!s.list_started);
        assert!(!s.spans);
        assert_eq!(s.groups, Group::ALL);
        assert_eq!(s.out, Some(default_results_dir()));
        assert_eq!(s.json()["scale"], serde_json::json!([1, 10, 50, 100]));
        assert_eq!(s.json()["groups"][0], "bus");
        let s = Args::parse_from(["banger-bench", "--quick"]).settings();
        assert_eq!((s.reps, s.scale, s.serial_max), (5, vec![1, 10], 10));
        let s = Args::parse_from([
            "banger-bench",
            "--quick",
            "-n",
            "3",
            "--scale",
            "2,4",
            "--serial-max",
            "2",
            "--list-vms",
            "30,7,30",
            "--only",
            "dns,latency",
            "--no-save",
            "--list-started",
            "--spans",
        ])
        .settings();
        assert!(s.list_started);
        assert!(s.spans);
        assert_eq!((s.reps, s.scale, s.serial_max), (3, vec![2, 4], 2));
        assert_eq!(s.list_vms, [7, 30]);
        assert_eq!(s.groups, [Group::Dns, Group::Latency]);
        assert_eq!(s.out, None);
    }

    #[test]
    fn bad_counts_and_groups_are_refused() {
        for bad in [
            &["--scale", "0"][..],
            &["--scale", "1,x"],
            &["--scale", "999"],
            &["--list-vms", "0"],
            &["--list-vms", "100000"],
            &["-n", "0"],
            &["--only", "everything"],
            &["--no-save", "--out", "x"],
        ] {
            let argv = std::iter::once("banger-bench").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
    }
}
