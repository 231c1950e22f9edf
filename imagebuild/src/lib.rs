//! Builds banger guest images and checks image files.
//!
//! A build runs on the host that runs stord, as root, in the `banger` CLI process (the CLI
//! registers the result through stord's `image.register`). Its stages:
//!
//! ```text
//! validate → debootstrap (Debian) | unpack (Void tarball) → customise → mkfs → verify → (register)
//! ```
//!
//! - **validate** ([`spec`]): suite, size, package names, the SSH key, the agent binary, a
//!   writable state directory, no existing output, root, the host tools. Nothing is written
//!   before it passes.
//! - **debootstrap / unpack** ([`bootstrap`]): fills a root tree in a scratch directory
//!   (`<state_dir>/images/.build-<name>-<pid>`, [`scratch`]).
//! - **customise** ([`customise`], file contents in [`files`]): the agent and its service,
//!   SSH for root with the runtime bundle's key only, root's shell skeleton, the serial getty,
//!   networking left to the kernel's `ip=`, the work disk in fstab.
//! - **mkfs** ([`mkfs`]): checks the tree fits, then `mkfs.ext4 -d` into a sparse file in the
//!   scratch directory.
//! - **verify** ([`verify`]): the checks of `banger image verify` on that file, and the agent
//!   run inside the tree (`chroot ... banger-agent --version`: it proves the host-built binary
//!   runs against the image's C library).
//!
//! Only then is the image renamed to `<state_dir>/images/<name>.ext4`. On any error, or when
//! cancelled ([`Cancel`], Ctrl-C in the CLI), the scratch directory is removed and nothing is
//! left at the destination. Tools that mount run in private mount namespaces, so no mount
//! outlives them.

pub mod bootstrap;
pub mod customise;
pub mod debugfs;
mod error;
pub mod files;
pub mod mkfs;
pub mod packages;
mod run;
pub mod scratch;
pub mod spec;
pub mod verify;

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use error::BuildError;
pub use run::Cancel;
pub use spec::{BuildSpec, Family, ImageSize, Suite};
pub use verify::{Check, Report};

/// A stage of a build, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Input checks.
    Validate,
    /// debootstrap into the tree (Debian).
    Debootstrap,
    /// The rootfs tarball unpacked into the tree (Void).
    Unpack,
    /// The tree made a banger guest.
    Customise,
    /// The ext4 image made.
    Mkfs,
    /// The image checked.
    Verify,
    /// The image registered with stord (done by the caller).
    Register,
}

impl Stage {
    /// The stage's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Debootstrap => "debootstrap",
            Self::Unpack => "unpack",
            Self::Customise => "customise",
            Self::Mkfs => "mkfs",
            Self::Verify => "verify",
            Self::Register => "register",
        }
    }

    /// The stages of a build of `family`, register included.
    pub fn plan(family: &Family) -> [Stage; 6] {
        let fill = match family {
            Family::Debian { .. } => Self::Debootstrap,
            Family::Void { .. } => Self::Unpack,
        };
        [
            Self::Validate,
            fill,
            Self::Customise,
            Self::Mkfs,
            Self::Verify,
            Self::Register,
        ]
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a build reports its progress.
pub trait Progress {
    /// `stage` starts; `what` says what it does.
    fn start(&self, stage: Stage, what: &str);
    /// `stage` finished after `took`; `detail` says what came out.
    fn done(&self, stage: Stage, took: Duration, detail: &str);
}

/// A finished build.
#[derive(Debug)]
pub struct Built {
    /// The image file (`<state_dir>/images/<name>.ext4`).
    pub rootfs: PathBuf,
    /// The verify report of the image.
    pub report: Report,
    /// How long each stage took.
    pub timings: Vec<(Stage, Duration)>,
}

/// Builds the image `spec` describes (see the crate doc). Blocking; run it on a thread of its
/// own and cancel it through `cancel`.
pub fn build(
    spec: &BuildSpec,
    cancel: &Cancel,
    progress: &dyn Progress,
) -> Result<Built, BuildError> {
    let mut timings = Vec::new();
    let mut stage = |s: Stage, what: &str, f: &mut dyn FnMut() -> Result<String, BuildError>| {
        cancel.check()?;
        progress.start(s, what);
        let t = Instant::now();
        let detail = f()?;
        let took = t.elapsed();
        timings.push((s, took));
        progress.done(s, took, &detail);
        Ok::<(), BuildError>(())
    };

    stage(Stage::Validate, "checking the inputs", &mut || {
        spec.validate()?;
        Ok(format!(
            "{} image {:?}, {}",
            spec.family.name(),
            spec.name,
            spec.size
        ))
    })?;
    let key = std::fs::read_to_string(&spec.ssh_public_key)
        .map_err(|e| BuildError::Invalid(format!("reading the SSH key: {e}")))?;
    scratch::sweep_stale(&spec.images_dir());
    let scratch = scratch::Scratch::create(&spec.images_dir(), &spec.name).map_err(|e| {
        BuildError::stage(
            Stage::Validate,
            format!("creating the scratch directory: {e}"),
        )
    })?;
    let tree = scratch.tree();
    let packages = spec.all_packages();

    match &spec.family {
        Family::Debian {
            suite,
            mirror,
            tarball,
        } => {
            let from = tarball
                .as_ref()
                .map_or_else(|| mirror.clone(), |t| t.display().to_string());
            let what = format!("debootstrap {suite} from {from} (a few minutes)");
            stage(Stage::Debootstrap, &what, &mut || {
                bootstrap::debootstrap(
                    cancel,
                    suite.as_str(),
                    mirror,
                    &packages,
                    &tree,
                    tarball.as_deref(),
                )?;
                Ok(format!("{} packages added to minbase", packages.len()))
            })?;
        }
        Family::Void { tarball, .. } => {
            let what = format!("unpacking {}", tarball.display());
            stage(Stage::Unpack, &what, &mut || {
                bootstrap::unpack(cancel, tarball, &tree)?;
                Ok("tree unpacked".into())
            })?;
        }
    }

    stage(
        Stage::Customise,
        "installing the agent, SSH, console and mounts",
        &mut || {
            if let Family::Void { mirror, .. } = &spec.family {
                bootstrap::xbps_install(cancel, &tree, mirror.as_deref(), &packages)?;
            }
            let init = customise::detect_init(&tree).ok_or_else(|| {
                BuildError::stage(
                    Stage::Customise,
                    "the tree has neither systemd nor runit: not a Debian or Void root file system",
                )
            })?;
            customise::customise(&tree, init, &spec.agent_bin, &key)
                .map_err(|e| BuildError::stage(Stage::Customise, e.to_string()))?;
            Ok(format!("{init:?} guest"))
        },
    )?;

    stage(Stage::Mkfs, "making the ext4 image", &mut || {
        let tree_mib = mkfs::tree_mib(&tree)
            .map_err(|e| BuildError::stage(Stage::Mkfs, format!("measuring the tree: {e}")))?;
        mkfs::check_fits(tree_mib, spec.size)?;
        mkfs::mkfs(cancel, &tree, &scratch.image(), spec.size, "banger-root")?;
        Ok(format!(
            "{} image, {} of files",
            spec.size,
            spec::format_mib(tree_mib)
        ))
    })?;

    let mut report = None;
    stage(Stage::Verify, "checking the image", &mut || {
        let r = verify::verify(&scratch.image(), Some(&key))
            .map_err(|e| BuildError::stage(Stage::Verify, e.to_string()))?;
        if !r.passed() {
            let failed: Vec<String> = r
                .failed()
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            return Err(BuildError::stage(
                Stage::Verify,
                format!("the image failed its checks: {}", failed.join("; ")),
            ));
        }
        let version = run::run(
            cancel,
            Stage::Verify,
            Command::new("chroot")
                .arg(&tree)
                .arg(verify::AGENT_PATH)
                .arg("--version"),
        )
        .map_err(|e| match e {
            BuildError::Stage { stage, message } => BuildError::Stage {
                stage,
                message: format!(
                    "the agent does not run inside the image (is the image's C library older \
                     than the build host's? build a newer suite): {message}"
                ),
            },
            other => other,
        })?;
        let n = r.checks.len();
        report = Some(r);
        Ok(format!(
            "{n} checks passed; the agent runs inside the image ({})",
            version.trim()
        ))
    })?;

    let rootfs = spec.output();
    std::fs::rename(scratch.image(), &rootfs).map_err(|e| {
        BuildError::stage(
            Stage::Verify,
            format!("moving the image to {}: {e}", rootfs.display()),
        )
    })?;
    drop(scratch);
    let Some(mut report) = report else {
        return Err(BuildError::stage(Stage::Verify, "no report"));
    };
    report.image = rootfs.clone();
    Ok(Built {
        rootfs,
        report,
        timings,
    })
}

/// The `banger-agent` binary to put in images: beside `exe` (the running `banger`), or one
/// directory up (cargo's `target/debug/deps` layout in tests), else on `PATH`.
pub fn agent_beside(exe: &std::path::Path) -> PathBuf {
    const AGENT: &str = "banger-agent";
    let dir = exe.parent();
    let candidates = [
        dir.map(|d| d.join(AGENT)),
        dir.and_then(std::path::Path::parent).map(|p| p.join(AGENT)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| spec::find_in_path(AGENT))
        .unwrap_or_else(|| dir.map_or_else(|| PathBuf::from(AGENT), |d| d.join(AGENT)))
}
