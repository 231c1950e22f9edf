//! Fault switches for regression tests: chosen with `--fault` or, per VM id, with
//! `BANGER_FCSIM_FAULTS="<id|*>=<fault>[+<fault>...];..."`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The environment variable holding per-VM faults.
pub(crate) const FAULTS_ENV: &str = "BANGER_FCSIM_FAULTS";

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `SendCtrlAltDel` is accepted (204) but the guest keeps running.
    IgnoreCtrlAltDel,
    /// The agent starts this many milliseconds after `InstanceStart`.
    SlowBoot(u64),
    /// The process exits non-zero this many milliseconds after `InstanceStart`, cleaning
    /// nothing up (like a crashed VMM).
    CrashAfter(u64),
    /// The API and vsock socket files stay behind when the process exits.
    LeaveSocket,
    /// The API socket is bound and accepts connections, but no request is ever answered.
    RefuseApi,
}

/// A fault spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad fault {spec:?}: {why} (known: ignore-ctrl-alt-del, slow-boot=MS, crash-after=MS, leave-socket, refuse-api)"
)]
pub(crate) struct FaultParseError {
    spec: String,
    why: &'static str,
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| FaultParseError {
            spec: s.to_owned(),
            why,
        };
        let ms = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| err("MS must be a whole number of milliseconds"))
        };
        let s = s.trim();
        match s.split_once('=') {
            None => match s {
                "ignore-ctrl-alt-del" => Ok(Self::IgnoreCtrlAltDel),
                "leave-socket" => Ok(Self::LeaveSocket),
                "refuse-api" => Ok(Self::RefuseApi),
                "slow-boot" | "crash-after" => Err(err("needs =MS")),
                _ => Err(err("unknown fault")),
            },
            Some(("slow-boot", v)) => Ok(Self::SlowBoot(ms(v)?)),
            Some(("crash-after", v)) => Ok(Self::CrashAfter(ms(v)?)),
            Some(_) => Err(err("unknown fault")),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IgnoreCtrlAltDel => f.write_str("ignore-ctrl-alt-del"),
            Self::SlowBoot(ms) => write!(f, "slow-boot={ms}"),
            Self::CrashAfter(ms) => write!(f, "crash-after={ms}"),
            Self::LeaveSocket => f.write_str("leave-socket"),
            Self::RefuseApi => f.write_str("refuse-api"),
        }
    }
}

/// The faults in force for one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Faults(Vec<Fault>);

impl Faults {
    /// The flags' faults plus those the environment value `env` selects for `id` (its own
    /// entries and `*`).
    pub(crate) fn resolve(
        flags: &[Fault],
        env: Option<&str>,
        id: &str,
    ) -> Result<Self, FaultParseError> {
        let mut all = flags.to_vec();
        for entry in env
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let Some((selector, faults)) = entry.split_once('=') else {
                return Err(FaultParseError {
                    spec: entry.to_owned(),
                    why: "an entry is <id|*>=<fault>[+<fault>...]",
                });
            };
            let selector = selector.trim();
            let parsed = faults
                .split('+')
                .map(str::parse::<Fault>)
                .collect::<Result<Vec<_>, _>>()?;
            if selector == "*" || selector == id {
                all.extend(parsed);
            }
        }
        Ok(Self(all))
    }

    /// Every fault, for the log.
    pub(crate) fn list(&self) -> &[Fault] {
        &self.0
    }

    pub(crate) fn has(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }

    /// The slow-boot delay, when set (the largest if given twice).
    pub(crate) fn slow_boot(&self) -> Option<Duration> {
        self.0
            .iter()
            .filter_map(|f| match f {
                Fault::SlowBoot(ms) => Some(*ms),
                _ => None,
            })
            .max()
            .map(Duration::from_millis)
    }

    /// The crash delay, when set (the smallest if given twice).
    pub(crate) fn crash_after(&self) -> Option<Duration> {
        self.0
            .iter()
            .filter_map(|f| match f {
                Fault::CrashAfter(ms) => Some(*ms),
                _ => None,
            })
            .min()
            .map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_back() {
        for s in [
            "ignore-ctrl-alt-del",
            "slow-boot=250",
            "crash-after=0",
            "leave-socket",
            "refuse-api",
        ] {
            let f: Fault = s.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(f.to_string(), s);
        }
        for bad in [
            "",
            "slow-boot",
            "slow-boot=x",
            "crash-after=-1",
            "reboot",
            "leave-socket=1",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_selects_faults_per_vm_id() {
        let env = "web=slow-boot=100+leave-socket; *=ignore-ctrl-alt-del ;db=crash-after=5";
        let web = Faults::resolve(&[Fault::RefuseApi], Some(env), "web").unwrap_or_default();
        assert_eq!(
            web.list(),
            [
                Fault::RefuseApi,
                Fault::SlowBoot(100),
                Fault::LeaveSocket,
                Fault::IgnoreCtrlAltDel
            ]
        );
        assert_eq!(web.slow_boot(), Some(Duration::from_millis(100)));
        assert_eq!(web.crash_after(), None);
        let other = Faults::resolve(&[], Some(env), "other").unwrap_or_default();
        assert_eq!(other.list(), [Fault::IgnoreCtrlAltDel]);
        assert!(Faults::resolve(&[], Some("web"), "web").is_err());
        assert!(Faults::resolve(&[], Some("x=bogus"), "web").is_err());
        assert_eq!(
            Faults::resolve(&[], None, "web").unwrap_or_default().list(),
            []
        );
    }
}
