//! What to build, and the checks that run before anything is built.
//!
//! Everything here is input validation: an unknown suite, a size below the minimum, a missing
//! SSH key, a missing agent binary or an unwritable state directory is refused up front with a
//! message that says how to fix it, before any file is written.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::BuildError;

/// The Debian suites banger knows how to build (debootstrap has scripts for them and the
/// guest customisation is written for their systemd).
pub const KNOWN_SUITES: &[&str] = &["bookworm", "trixie", "bullseye", "sid"];

/// The default suite: Debian's current stable when this was written.
pub const DEFAULT_SUITE: &str = "bookworm";

/// The default Debian mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The smallest image accepted: a minimal Debian with systemd and OpenSSH needs about 250 MiB,
/// so anything below this cannot hold any supported image.
pub const MIN_SIZE_MIB: u64 = 256;

/// The default image size. The file is sparse: unused space costs no disk.
pub const DEFAULT_SIZE_MIB: u64 = 4096;

/// The largest image accepted (1 TiB): a typo guard.
pub const MAX_SIZE_MIB: u64 = 1 << 20;

/// A Debian suite from [`KNOWN_SUITES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite(String);

impl Suite {
    /// The suite's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Suite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if KNOWN_SUITES.contains(&s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "unknown Debian suite {s:?}: expected one of {}",
                KNOWN_SUITES.join(", ")
            ))
        }
    }
}

/// An image size in MiB, between [`MIN_SIZE_MIB`] and [`MAX_SIZE_MIB`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageSize(u64);

impl ImageSize {
    /// The size in MiB.
    pub fn mib(self) -> u64 {
        self.0
    }

    /// A size in MiB, checked against the limits.
    pub fn from_mib(mib: u64) -> Result<Self, String> {
        if mib < MIN_SIZE_MIB {
            return Err(format!(
                "image size {} is too small: the minimum is {MIN_SIZE_MIB}M",
                format_mib(mib)
            ));
        }
        if mib > MAX_SIZE_MIB {
            return Err(format!(
                "image size {} is too large: the maximum is 1T",
                format_mib(mib)
            ));
        }
        Ok(Self(mib))
    }
}

impl Default for ImageSize {
    fn default() -> Self {
        Self(DEFAULT_SIZE_MIB)
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mib(self.0))
    }
}

impl FromStr for ImageSize {
    type Err = String;
    /// MiB as a number (`2048`) or a size with a unit (`512M`, `4G`, `1T`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let shape = || format!("the image size must be MiB or a size like 512M or 4G, got {s:?}");
        let n: u64 = num.parse().map_err(|_| shape())?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "m" | "mb" | "mib" => 1,
            "g" | "gb" | "gib" => 1024,
            "t" | "tb" | "tib" => 1024 * 1024,
            _ => return Err(shape()),
        };
        Self::from_mib(n.checked_mul(factor).ok_or_else(shape)?)
    }
}

/// `512M`, `4G`.
pub fn format_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// A Debian package name (or a Void one: the same rules are a safe subset of both): lowercase
/// letters, digits, `+`, `-`, `.`, starting with a letter or digit. Checked so a name can never
/// be taken for an option by debootstrap or xbps.
pub fn check_package_name(p: &str) -> Result<(), String> {
    let ok = p.len() >= 2
        && p.len() <= 100
        && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid package name {p:?}: lowercase letters, digits, '+', '-' and '.', at least \
             two characters, starting with a letter or digit"
        ))
    }
}

/// The distribution and where its files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// Debian, bootstrapped from a mirror with debootstrap.
    Debian {
        /// The suite.
        suite: Suite,
        /// The mirror URL.
        mirror: String,
        /// Packages from a tarball made by `debootstrap --make-tarball` instead of the mirror
        /// (offline builds, CI caches).
        tarball: Option<PathBuf>,
    },
    /// Void Linux, from a rootfs tarball the user downloaded.
    Void {
        /// The rootfs tarball (`void-x86_64-ROOTFS-*.tar.xz`).
        tarball: PathBuf,
        /// The xbps repository for extra packages (Void's default when omitted).
        mirror: Option<String>,
    },
}

impl Family {
    /// `debian` or `void`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Debian { .. } => "debian",
            Self::Void { .. } => "void",
        }
    }
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The image's name (already a valid image name; also names the output file).
    pub name: String,
    /// What to build from.
    pub family: Family,
    /// The image size.
    pub size: ImageSize,
    /// Extra packages.
    pub packages: Vec<String>,
    /// Add the language-agnostic developer baseline ([`crate::packages::DEV_BASELINE`]).
    pub dev_baseline: bool,
    /// banger's state directory: the output goes to `<state_dir>/images/<name>.ext4`, scratch
    /// work to `<state_dir>/images/.build-<name>-<pid>`.
    pub state_dir: PathBuf,
    /// The public key root logs in with (the runtime bundle's `<state_dir>/ssh/id_ed25519.pub`).
    pub ssh_public_key: PathBuf,
    /// The `banger-agent` binary to install.
    pub agent_bin: PathBuf,
}

/// The runtime bundle's key pair, relative to the state directory.
pub const BUNDLE_PUBLIC_KEY: &str = "ssh/id_ed25519.pub";

/// The directory images are written to, relative to the state directory.
pub const IMAGES_DIR: &str = "images";

impl BuildSpec {
    /// `<state_dir>/images`.
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join(IMAGES_DIR)
    }

    /// `<state_dir>/images/<name>.ext4`: where the finished image goes.
    pub fn output(&self) -> PathBuf {
        self.images_dir().join(format!("{}.ext4", self.name))
    }

    /// Every package to add to the base system.
    pub fn all_packages(&self) -> Vec<String> {
        let mut all: Vec<String> = match &self.family {
            Family::Debian { .. } => crate::packages::DEBIAN_BASE
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            Family::Void { .. } => Vec::new(),
        };
        if self.dev_baseline {
            let baseline = match &self.family {
                Family::Debian { .. } => crate::packages::DEV_BASELINE,
                Family::Void { .. } => crate::packages::VOID_DEV_BASELINE,
            };
            all.extend(baseline.iter().map(|s| (*s).to_owned()));
        }
        all.extend(self.packages.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        all.retain(|p| seen.insert(p.clone()));
        all
    }

    /// The checks that run before anything is done. Returns the first problem found.
    pub fn validate(&self) -> Result<(), BuildError> {
        for p in &self.packages {
            check_package_name(p).map_err(BuildError::Invalid)?;
        }
        if let Family::Debian {
            tarball: Some(t), ..
        } = &self.family
            && !t.is_file()
        {
            return Err(BuildError::Invalid(format!(
                "the debootstrap tarball {} does not exist or is not a file",
                t.display()
            )));
        }
        if let Family::Void { tarball, .. } = &self.family
            && !tarball.is_file()
        {
            return Err(BuildError::Invalid(format!(
                "the Void rootfs tarball {} does not exist or is not a file (download \
                 void-x86_64-ROOTFS-<date>.tar.xz from \
                 https://repo-default.voidlinux.org/live/current/)",
                tarball.display()
            )));
        }
        check_ssh_key(&self.ssh_public_key)?;
        check_agent(&self.agent_bin)?;
        check_writable(&self.images_dir())?;
        let out = self.output();
        if out.exists() {
            return Err(BuildError::Conflict(format!(
                "{} already exists: remove it (and `banger image remove {}` if it is registered) \
                 or build with another --name",
                out.display(),
                self.name
            )));
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(BuildError::Invalid(
                "image builds need root (debootstrap, chroot and device nodes in the image): \
                 run as root or with sudo"
                    .into(),
            ));
        }
        for tool in required_tools(&self.family) {
            if find_in_path(tool).is_none() {
                return Err(BuildError::Invalid(format!(
                    "{tool} is not installed: run ./scripts/setup (or apt-get install {})",
                    tool_package(tool)
                )));
            }
        }
        Ok(())
    }
}

/// The host tools a build of `family` runs.
fn required_tools(family: &Family) -> Vec<&'static str> {
    let mut t = vec!["mkfs.ext4", "e2fsck", "debugfs", "unshare", "chroot", "tar"];
    if matches!(family, Family::Debian { .. }) {
        t.push("debootstrap");
    }
    t
}

/// The Debian package that ships `tool`.
fn tool_package(tool: &str) -> &'static str {
    match tool {
        "debootstrap" => "debootstrap",
        "unshare" => "util-linux",
        "chroot" => "coreutils",
        "tar" => "tar xz-utils",
        _ => "e2fsprogs",
    }
}

/// `tool` on `PATH` (plus the sbin directories, which a non-login root shell may lack).
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The SSH public key exists and looks like one.
pub fn check_ssh_key(path: &Path) -> Result<(), BuildError> {
    let how = format!(
        "create it with `ssh-keygen -t ed25519 -N '' -f {}` (or run ./scripts/setup)",
        path.with_extension("").display()
    );
    let text = std::fs::read_to_string(path).map_err(|e| {
        BuildError::Invalid(format!(
            "the SSH public key {} cannot be read ({e}): {how}",
            path.display()
        ))
    })?;
    let line = text.trim();
    if !line.starts_with("ssh-") && !line.starts_with("ecdsa-") {
        return Err(BuildError::Invalid(format!(
            "{} is not an OpenSSH public key: {how}",
            path.display()
        )));
    }
    Ok(())
}

/// The agent binary exists and is executable.
fn check_agent(path: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(BuildError::Invalid(format!(
            "the guest agent binary {} is missing or not executable: build it with \
             `cargo build -p banger-agent` (it is looked up beside the banger binary)",
            path.display()
        ))),
    }
}

/// `dir` exists (or can be made) and a file can be created in it.
pub fn check_writable(dir: &Path) -> Result<(), BuildError> {
    let unwritable = |e: std::io::Error| {
        BuildError::Invalid(format!(
            "the state directory is not writable: cannot write to {} ({e}); pick another \
             --state-dir or fix its permissions",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    tempfile::Builder::new()
        .prefix(".probe-")
        .tempfile_in(dir)
        .map_err(unwritable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_suites_parse_and_others_are_refused_with_the_list() {
        for s in KNOWN_SUITES {
            assert_eq!(s.parse::<Suite>().unwrap().as_str(), *s);
        }
        let e = "buster".parse::<Suite>().unwrap_err();
        assert!(e.contains("unknown Debian suite \"buster\""), "{e}");
        assert!(e.contains("bookworm, trixie, bullseye, sid"), "{e}");
        assert!("".parse::<Suite>().is_err());
        assert!("Bookworm".parse::<Suite>().is_err());
    }

    #[test]
    fn sizes_parse_with_units_and_respect_the_limits() {
        assert_eq!("4G".parse::<ImageSize>().unwrap().mib(), 4096);
        assert_eq!("512m".parse::<ImageSize>().unwrap().mib(), 512);
        assert_eq!("300".parse::<ImageSize>().unwrap().mib(), 300);
        assert_eq!("1T".parse::<ImageSize>().unwrap().mib(), 1 << 20);
        let small = "100M".parse::<ImageSize>().unwrap_err();
        assert!(
            small.contains("too small") && small.contains("256M"),
            "{small}"
        );
        for bad in ["", "G", "4X", "-1G", "2T", "99999999999999999999G"] {
            assert!(bad.parse::<ImageSize>().is_err(), "{bad:?}");
        }
        assert_eq!(ImageSize::default().to_string(), "4G");
        assert_eq!(format_mib(300), "300M");
    }

    #[test]
    fn package_names_that_could_be_options_or_paths_are_refused() {
        for ok in ["git", "build-essential", "g++", "python3.11", "libc6"] {
            check_package_name(ok).unwrap();
        }
        for bad in ["-x", "--foo", "a", "Git", "a b", "a/b", "a,b", "pkg;rm"] {
            assert!(check_package_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_ssh_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ssh/id_ed25519.pub");
        let e = check_ssh_key(&key).unwrap_err().to_string();
        assert!(e.contains("ssh-keygen -t ed25519"), "{e}");
        assert!(
            e.contains(&dir.path().join("ssh/id_ed25519").display().to_string()),
            "{e}"
        );
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        assert!(check_ssh_key(&key).is_err());
        std::fs::write(&key, "ssh-ed25519 AAAAC3Nza root@host\n").unwrap();
        check_ssh_key(&key).unwrap();
    }

    #[test]
    fn a_state_dir_under_a_file_is_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = check_writable(&file.join("images"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("state directory is not writable"), "{e}");
        check_writable(&dir.path().join("images")).unwrap();
        // The probe file is gone.
        assert_eq!(
            std::fs::read_dir(dir.path().join("images"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn packages_are_deduplicated_and_the_baseline_is_behind_the_flag() {
        let mut spec = BuildSpec {
            name: "deb".into(),
            family: Family::Debian {
                suite: "bookworm".parse().unwrap(),
                mirror: DEFAULT_MIRROR.into(),
                tarball: None,
            },
            size: ImageSize::default(),
            packages: vec!["git".into(), "openssh-server".into()],
            dev_baseline: false,
            state_dir: "/var/lib/banger".into(),
            ssh_public_key: "/k.pub".into(),
            agent_bin: "/a".into(),
        };
        let base = spec.all_packages();
        assert!(base.contains(&"openssh-server".to_owned()));
        assert!(!base.contains(&"build-essential".to_owned()));
        assert_eq!(base.iter().filter(|p| *p == "openssh-server").count(), 1);
        spec.dev_baseline = true;
        let dev = spec.all_packages();
        assert!(dev.contains(&"build-essential".to_owned()));
        assert_eq!(dev.iter().filter(|p| *p == "git").count(), 1);
        assert_eq!(
            spec.output(),
            PathBuf::from("/var/lib/banger/images/deb.ext4")
        );
    }
}
