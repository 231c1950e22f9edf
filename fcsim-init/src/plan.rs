//! The init's command line: what the simulator asks of it, written by [`Plan::to_args`] and
//! read back by [`Plan::from_args`]. Paths travel as they are (any bytes but NUL): there is no
//! quoting or escaping to get wrong, as there was in an fstab.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// How the init is called.
pub const USAGE: &str = "usage: banger-fcsim-init [--guest-dir DIR] \
[--mount SOURCE TARGET TYPE OPTIONS]... [--chroot DIR] [--umask OCTAL] -- COMMAND [ARG]...
OPTIONS is `defaults` or a comma-separated list of: loop (SOURCE is an image file, attached to \
an autoclear loop device), bind, rbind, ro, mkdir (make a missing TARGET, mode 0755), and \
file-system data such as mode=0755.";

/// One mount, made in order before the command starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted: a device, an image file (with `loop`), a directory (with `bind`), or
    /// a name for a virtual file system (`proc`, `tmpfs`).
    pub source: OsString,
    /// Where.
    pub target: PathBuf,
    /// The file-system type (`ext4`, `proc`, ...; `none` for a bind mount).
    pub fstype: String,
    /// The options: see [`USAGE`].
    pub options: Vec<String>,
}

impl Mount {
    /// A mount of `source` at `target` with type `fstype` and `options` (comma-separated, as
    /// in an fstab).
    pub fn new(
        source: impl Into<OsString>,
        target: impl Into<PathBuf>,
        fstype: &str,
        options: &str,
    ) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            fstype: fstype.to_owned(),
            options: options
                .split(',')
                .filter(|o| !o.is_empty() && *o != "defaults")
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Whether option `name` is given.
    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|o| o == name)
    }
}

/// Everything the init does (see the crate documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The simulator's directory for this guest, removed when the VMM goes away.
    pub guest_dir: Option<PathBuf>,
    /// The mounts, in order.
    pub mounts: Vec<Mount>,
    /// The directory the command is chrooted into.
    pub chroot: Option<PathBuf>,
    /// The command's umask.
    pub umask: Option<u32>,
    /// The command and its arguments (never empty once read).
    pub command: Vec<OsString>,
}

/// A command line the init does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An option it does not know.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// An option without (all of) its values.
    #[error("{0} needs {1}")]
    MissingValue(&'static str, &'static str),
    /// A umask that is not an octal number up to 0777.
    #[error("--umask {0:?} is not an octal mode (such as 022)")]
    BadUmask(String),
    /// A file-system type that is not text.
    #[error("--mount: the file-system type or options are not UTF-8")]
    NotText,
    /// No command after `--`.
    #[error("no command to run after --")]
    NoCommand,
}

impl Plan {
    /// The init's arguments (after its own name) for this plan.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::new();
        if let Some(d) = &self.guest_dir {
            out.push("--guest-dir".into());
            out.push(d.into());
        }
        for m in &self.mounts {
            out.push("--mount".into());
            out.push(m.source.clone());
            out.push(m.target.clone().into());
            out.push(m.fstype.clone().into());
            out.push(if m.options.is_empty() {
                "defaults".into()
            } else {
                m.options.join(",").into()
            });
        }
        if let Some(d) = &self.chroot {
            out.push("--chroot".into());
            out.push(d.into());
        }
        if let Some(mask) = self.umask {
            out.push("--umask".into());
            out.push(format!("{mask:03o}").into());
        }
        out.push("--".into());
        out.extend(self.command.iter().cloned());
        out
    }

    /// Reads a plan from the init's arguments (after its own name).
    ///
    /// # Errors
    /// An unknown option, a missing value, a bad umask, or no command.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<Self, PlanError> {
        let mut plan = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |opt: &'static str, what: &'static str| {
                args.next().ok_or(PlanError::MissingValue(opt, what))
            };
            match arg.to_str() {
                Some("--") => {
                    plan.command = args.collect();
                    break;
                }
                Some("--guest-dir") => {
                    plan.guest_dir = Some(value("--guest-dir", "a directory")?.into());
                }
                Some("--chroot") => plan.chroot = Some(value("--chroot", "a directory")?.into()),
                Some("--umask") => {
                    let v = value("--umask", "an octal mode")?;
                    let text = v.to_string_lossy().into_owned();
                    let mask = u32::from_str_radix(&text, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or(PlanError::BadUmask(text))?;
                    plan.umask = Some(mask);
                }
                Some("--mount") => {
                    const WHAT: &str = "SOURCE TARGET TYPE OPTIONS";
                    let source = value("--mount", WHAT)?;
                    let target = value("--mount", WHAT)?;
                    let fstype = value("--mount", WHAT)?;
                    let options = value("--mount", WHAT)?;
                    let (Some(fstype), Some(options)) = (fstype.to_str(), options.to_str()) else {
                        return Err(PlanError::NotText);
                    };
                    plan.mounts
                        .push(Mount::new(source, PathBuf::from(target), fstype, options));
                }
                _ => {
                    return Err(PlanError::UnknownOption(arg.to_string_lossy().into_owned()));
                }
            }
        }
        if plan.command.first().is_none_or(|c| c.is_empty()) {
            return Err(PlanError::NoCommand);
        }
        Ok(plan)
    }

    /// The command's program.
    pub fn program(&self) -> &OsStr {
        self.command
            .first()
            .map_or(OsStr::new(""), OsString::as_os_str)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_plan_survives_its_command_line_with_any_bytes_in_its_paths() {
        let odd = OsStr::from_bytes(b"/tmp/a dir\twith\\odd\n\xffbytes");
        let plan = Plan {
            guest_dir: Some(PathBuf::from(odd)),
            mounts: vec![
                Mount::new(odd, PathBuf::from(odd).join("rootfs"), "ext4", "loop"),
                Mount::new("proc", "/mnt/proc", "proc", "mkdir"),
                Mount::new("tmpfs", "/mnt/run", "tmpfs", "mode=0755,mkdir"),
                Mount::new("/dev", "/mnt/dev", "none", "rbind,mkdir"),
                Mount::new("sysfs", "/mnt/sys", "sysfs", "defaults"),
            ],
            chroot: Some(PathBuf::from("/mnt")),
            umask: Some(0o022),
            command: args(&["/usr/local/bin/banger-agent", "--listen", "--", "x y"]),
        };
        let line = plan.to_args();
        assert_eq!(Plan::from_args(line.clone()), Ok(plan.clone()));
        // "defaults" is no option: it travels as such and reads back as none.
        assert!(plan.mounts[4].options.is_empty());
        assert!(
            line.windows(2)
                .any(|w| w[0] == "sysfs" && w[1] == "defaults")
        );
        assert_eq!(plan.program(), "/usr/local/bin/banger-agent");
    }

    #[test]
    fn options_are_read_as_an_fstab_writes_them() {
        let m = Mount::new("/img", "/mnt", "ext4", "loop,mkdir,ro");
        assert!(m.has("loop") && m.has("mkdir") && m.has("ro"));
        assert!(!m.has("bind"));
        assert!(Mount::new("a", "b", "ext4", "defaults").options.is_empty());
    }

    #[test]
    fn a_bad_command_line_says_what_is_wrong() {
        assert_eq!(
            Plan::from_args(args(&["--", ""])),
            Err(PlanError::NoCommand)
        );
        assert_eq!(
            Plan::from_args(args(&["--umask", "022"])),
            Err(PlanError::NoCommand)
        );
        assert_eq!(
            Plan::from_args(args(&["--umask", "999", "--", "x"])),
            Err(PlanError::BadUmask("999".into()))
        );
        assert_eq!(
            Plan::from_args(args(&["--umask", "1777", "--", "x"])),
            Err(PlanError::BadUmask("1777".into()))
        );
        assert_eq!(
            Plan::from_args(args(&["--mount", "a", "b", "ext4"])),
            Err(PlanError::MissingValue(
                "--mount",
                "SOURCE TARGET TYPE OPTIONS"
            ))
        );
        assert_eq!(
            Plan::from_args(args(&["--chroot"])),
            Err(PlanError::MissingValue("--chroot", "a directory"))
        );
        assert_eq!(
            Plan::from_args(args(&["--fork", "--", "x"])),
            Err(PlanError::UnknownOption("--fork".into()))
        );
        let plan = Plan::from_args(args(&["--umask", "022", "--", "agent", "--listen"]));
        assert_eq!(
            plan.map(|p| (p.umask, p.command.len())),
            Ok((Some(0o022), 2))
        );
    }
}
