//! Filling the root tree: debootstrap for Debian, the user's rootfs tarball for Void.
//!
//! Tools that mount anything run under `unshare --mount --propagation private`, so their
//! mounts (debootstrap mounts `/proc` and `/sys` in the target; the Void package step binds
//! `/dev`) live in a namespace that dies with them: nothing is left mounted, even on SIGKILL.

use std::path::Path;
use std::process::Command;

use crate::run::{Cancel, run};
use crate::{BuildError, Stage};

/// Environment variable: a directory debootstrap keeps downloaded packages in between builds
/// (`--cache-dir`); unset, every build downloads.
pub const DEBOOTSTRAP_CACHE_ENV: &str = "BANGER_DEBOOTSTRAP_CACHE";

/// `unshare --mount --propagation private --` before `argv`.
fn in_private_mounts(program: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", program]);
    c
}

/// The debootstrap command line.
pub(crate) fn debootstrap_command(
    suite: &str,
    mirror: &str,
    packages: &[String],
    tree: &Path,
    cache: Option<&Path>,
    tarball: Option<&Path>,
) -> Command {
    let mut c = in_private_mounts("debootstrap");
    c.arg("--variant=minbase").arg("--components=main");
    if !packages.is_empty() {
        c.arg(format!("--include={}", packages.join(",")));
    }
    if let Some(t) = tarball {
        c.arg(format!("--unpack-tarball={}", t.display()));
    } else if let Some(dir) = cache {
        c.arg(format!("--cache-dir={}", dir.display()));
    }
    c.arg(suite).arg(tree).arg(mirror);
    c
}

/// Bootstraps Debian `suite` into `tree`.
pub(crate) fn debootstrap(
    cancel: &Cancel,
    suite: &str,
    mirror: &str,
    packages: &[String],
    tree: &Path,
    tarball: Option<&Path>,
) -> Result<(), BuildError> {
    let cache = std::env::var_os(DEBOOTSTRAP_CACHE_ENV)
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute());
    if let Some(dir) = &cache {
        std::fs::create_dir_all(dir).map_err(|e| {
            BuildError::stage(
                Stage::Debootstrap,
                format!("creating the package cache {}: {e}", dir.display()),
            )
        })?;
    }
    run(
        cancel,
        Stage::Debootstrap,
        &mut debootstrap_command(suite, mirror, packages, tree, cache.as_deref(), tarball),
    )
    .map(drop)
    .map_err(|e| match e {
        BuildError::Stage { stage, message } => BuildError::Stage {
            stage,
            message: format!(
                "{message}\n(is {mirror} reachable, and are the package names right?)"
            ),
        },
        other => other,
    })
}

/// Unpacks a Void rootfs tarball into `tree`, owners and modes kept.
pub(crate) fn unpack(cancel: &Cancel, tarball: &Path, tree: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(tree)
        .map_err(|e| BuildError::stage(Stage::Unpack, format!("creating the tree: {e}")))?;
    run(
        cancel,
        Stage::Unpack,
        Command::new("tar")
            .args(["--extract", "--preserve-permissions", "--numeric-owner"])
            .arg("--file")
            .arg(tarball)
            .arg("--directory")
            .arg(tree),
    )
    .map(drop)
}

/// Installs `packages` into the Void tree with xbps inside a chroot (with `/proc`, `/sys`, `/dev`
/// and the host's resolver, all in a private mount namespace).
pub(crate) fn xbps_install(
    cancel: &Cancel,
    tree: &Path,
    mirror: Option<&str>,
    packages: &[String],
) -> Result<(), BuildError> {
    if packages.is_empty() {
        return Ok(());
    }
    if !tree.join("usr/bin/xbps-install").exists() {
        return Err(BuildError::stage(
            Stage::Customise,
            "the Void tree has no /usr/bin/xbps-install: extra packages cannot be installed \
             (is this a Void rootfs tarball?)",
        ));
    }
    let repo = mirror
        .map(|m| format!("--repository={m}"))
        .unwrap_or_default();
    let script = r#"set -e
root="$1"; repo="$2"; shift 2
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
exec chroot "$root" xbps-install -Suy $repo "$@""#;
    let mut c = in_private_mounts("sh");
    c.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(tree)
        .arg(repo)
        .args(packages);
    run(cancel, Stage::Customise, &mut c).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn debootstrap_runs_minbase_in_a_private_mount_namespace() {
        let c = debootstrap_command(
            "bookworm",
            "http://deb.debian.org/debian",
            &["openssh-server".into(), "git".into()],
            Path::new("/s/root"),
            None,
            None,
        );
        assert_eq!(
            argv(&c),
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "debootstrap",
                "--variant=minbase",
                "--components=main",
                "--include=openssh-server,git",
                "bookworm",
                "/s/root",
                "http://deb.debian.org/debian"
            ]
        );
        let cached = debootstrap_command(
            "sid",
            "http://m",
            &[],
            Path::new("/t"),
            Some(Path::new("/c")),
            None,
        );
        assert!(argv(&cached).contains(&"--cache-dir=/c".to_owned()));
        assert!(!argv(&cached).iter().any(|a| a.starts_with("--include")));
        let offline = debootstrap_command(
            "sid",
            "http://m",
            &[],
            Path::new("/t"),
            Some(Path::new("/c")),
            Some(Path::new("/p.tgz")),
        );
        assert!(argv(&offline).contains(&"--unpack-tarball=/p.tgz".to_owned()));
        assert!(!argv(&offline).iter().any(|a| a.starts_with("--cache-dir")));
    }

    #[test]
    fn a_tarball_unpacks_with_modes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("etc/sv")).unwrap();
        std::fs::write(src.join("etc/sv/run"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            src.join("etc/sv/run"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        let tarball = dir.path().join("void.tar.xz");
        let ok = Command::new("tar")
            .arg("-cJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        let tree = dir.path().join("tree");
        unpack(&Cancel::new(), &tarball, &tree).unwrap();
        let mode = std::fs::metadata(tree.join("etc/sv/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        let e = unpack(&Cancel::new(), &dir.path().join("missing.tar"), &tree)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unpack: tar"), "{e}");
    }
}
