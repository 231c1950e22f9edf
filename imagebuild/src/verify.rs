//! `banger image verify`: checks an image file without mounting it (e2fsck -fn, debugfs) and
//! reports each check, so a broken image says what is broken instead of failing at boot.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::customise::RUNIT_DEFAULT_DIR;
use crate::debugfs::{DebugfsError, Image, Kind};
use crate::files;

/// The agent inside an image.
pub const AGENT_PATH: &str = "/usr/local/bin/banger-agent";

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`filesystem`, `agent`, ...).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Every check of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The image file.
    pub image: PathBuf,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// Checks the image at `image`. `expected_key` is the public key root must accept (the runtime
/// bundle's); without it any key counts. Errors only when the image cannot be read at all.
pub fn verify(image: &Path, expected_key: Option<&str>) -> Result<Report, DebugfsError> {
    let img = Image(image);
    img.open()?;
    let checks = vec![
        fsck(image),
        agent(&img)?,
        agent_service(&img)?,
        ssh_key(&img, expected_key)?,
        sshd_passwords(&img)?,
        work_disk(&img)?,
    ];
    Ok(Report {
        image: image.to_owned(),
        checks,
    })
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
    }
}

fn fsck(image: &Path) -> Check {
    let Some(e2fsck) = crate::spec::find_in_path("e2fsck") else {
        return check("filesystem", false, "e2fsck is not installed (e2fsprogs)");
    };
    match Command::new(e2fsck).arg("-fn").arg(image).output() {
        Ok(o) if o.status.success() => check("filesystem", true, "e2fsck -fn: clean"),
        Ok(o) => check(
            "filesystem",
            false,
            format!(
                "e2fsck -fn found problems ({}):\n{}",
                o.status,
                crate::run::tail(
                    &format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    8
                )
            ),
        ),
        Err(e) => check("filesystem", false, format!("running e2fsck: {e}")),
    }
}

fn agent(img: &Image<'_>) -> Result<Check, DebugfsError> {
    Ok(match img.stat(AGENT_PATH)? {
        None => check("agent", false, format!("{AGENT_PATH} is missing")),
        Some(s) if s.kind != Kind::Regular => check(
            "agent",
            false,
            format!("{AGENT_PATH} is not a regular file"),
        ),
        Some(s) if s.mode & 0o111 == 0 => check(
            "agent",
            false,
            format!("{AGENT_PATH} is not executable (mode {:04o})", s.mode),
        ),
        Some(s) => check("agent", true, format!("{AGENT_PATH} (mode {:04o})", s.mode)),
    })
}

/// Whether `link` is a symlink whose target exists (relative targets resolved beside it).
fn link_resolves(img: &Image<'_>, link: &str) -> Result<Result<String, String>, DebugfsError> {
    let Some(s) = img.stat(link)? else {
        return Ok(Err(format!("{link} is missing")));
    };
    let Some(target) = s.link_target.filter(|_| s.kind == Kind::Symlink) else {
        // A slow (long) symlink has no "Fast link dest"; accept any symlink or a real entry.
        return Ok(
            if s.kind == Kind::Symlink || s.kind == Kind::Regular || s.kind == Kind::Directory {
                Ok(link.to_owned())
            } else {
                Err(format!("{link} is not a link"))
            },
        );
    };
    let abs = if target.starts_with('/') {
        target.clone()
    } else {
        let dir = link.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{target}")
    };
    Ok(if img.stat(&abs)?.is_some() {
        Ok(format!("{link} -> {target}"))
    } else {
        Err(format!("{link} -> {target}, which does not exist"))
    })
}

fn agent_service(img: &Image<'_>) -> Result<Check, DebugfsError> {
    const NAME: &str = "agent service";
    // systemd wins when present: Debian ships runit-helper's /etc/runit too.
    let systemd = img.stat("/usr/lib/systemd/systemd")?.is_some()
        || img.stat("/lib/systemd/systemd")?.is_some();
    let runit = !systemd
        && img
            .stat(&format!("/{RUNIT_DEFAULT_DIR}"))?
            .is_some_and(|s| s.kind == Kind::Directory);
    if runit {
        let link = format!("/{RUNIT_DEFAULT_DIR}/banger-agent");
        return Ok(match link_resolves(img, &link)? {
            Err(why) => check(NAME, false, format!("runit service not enabled: {why}")),
            Ok(_) => match img.stat("/etc/sv/banger-agent/run")? {
                Some(s) if s.kind == Kind::Regular && s.mode & 0o111 != 0 => {
                    check(NAME, true, format!("runit: {link} enabled"))
                }
                _ => check(
                    NAME,
                    false,
                    "runit: /etc/sv/banger-agent/run is missing or not executable",
                ),
            },
        });
    }
    let link = "/etc/systemd/system/multi-user.target.wants/banger-agent.service";
    Ok(match link_resolves(img, link)? {
        Ok(detail) => check(NAME, true, format!("systemd: {detail}")),
        Err(why) => check(NAME, false, format!("systemd unit not enabled: {why}")),
    })
}

/// The key type and base64 blob of a public key line (the comment does not matter).
fn key_id(line: &str) -> Option<(String, String)> {
    let mut f = line.split_whitespace();
    Some((f.next()?.to_owned(), f.next()?.to_owned()))
}

fn ssh_key(img: &Image<'_>, expected: Option<&str>) -> Result<Check, DebugfsError> {
    const NAME: &str = "ssh key for root";
    let want = expected.and_then(|k| key_id(k.trim()));
    let files = [
        format!("/{}", files::SYSTEM_AUTHORIZED_KEYS),
        "/root/.ssh/authorized_keys".to_owned(),
    ];
    for f in &files {
        let Some(text) = img.read(f)? else { continue };
        let found = text.lines().filter_map(key_id).any(|k| match &want {
            Some(w) => &k == w,
            None => k.0.starts_with("ssh-") || k.0.starts_with("ecdsa-"),
        });
        if found {
            let what = if want.is_some() {
                "the runtime bundle's key"
            } else {
                "a key (no bundle key on this host to compare with)"
            };
            return Ok(check(NAME, true, format!("{f} holds {what}")));
        }
    }
    Ok(check(
        NAME,
        false,
        format!(
            "neither {} holds {}",
            files.join(" nor "),
            if want.is_some() {
                "the runtime bundle's key"
            } else {
                "any key"
            }
        ),
    ))
}

/// The effective value of `PasswordAuthentication` in the global section of an sshd
/// configuration: the first one wins, `Include`s are read where they appear, and OpenSSH's
/// default is `yes`. `read` returns a file's text; `list` a directory's names.
pub(crate) fn effective_password_auth(
    read: &mut dyn FnMut(&str) -> Option<String>,
    list: &mut dyn FnMut(&str) -> Option<Vec<String>>,
) -> (String, String) {
    fn walk(
        path: &str,
        depth: u8,
        read: &mut dyn FnMut(&str) -> Option<String>,
        list: &mut dyn FnMut(&str) -> Option<Vec<String>>,
    ) -> Option<(String, String)> {
        if depth > 4 {
            return None;
        }
        let text = read(path)?;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(key) = words.next() else { continue };
            if key.starts_with('#') {
                continue;
            }
            let key = key.to_ascii_lowercase();
            if key == "match" {
                return None;
            }
            if key == "passwordauthentication" {
                return words
                    .next()
                    .map(|v| (v.to_ascii_lowercase(), path.to_owned()));
            }
            if key == "include" {
                for pattern in words {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_owned()
                    } else {
                        format!("/etc/ssh/{pattern}")
                    };
                    let mut included = match pattern.rsplit_once("/*") {
                        Some((dir, suffix)) => list(dir)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|n| n.ends_with(suffix))
                            .map(|n| format!("{dir}/{n}"))
                            .collect(),
                        None => vec![pattern],
                    };
                    included.sort();
                    for inc in included {
                        if let Some(found) = walk(&inc, depth + 1, read, list) {
                            return Some(found);
                        }
                    }
                }
            }
        }
        None
    }
    walk("/etc/ssh/sshd_config", 0, read, list)
        .unwrap_or_else(|| ("yes".into(), "OpenSSH's default".into()))
}

fn sshd_passwords(img: &Image<'_>) -> Result<Check, DebugfsError> {
    const NAME: &str = "sshd password login off";
    if img.stat("/usr/sbin/sshd")?.is_none() {
        return Ok(check(
            NAME,
            false,
            "/usr/sbin/sshd is missing: no SSH server",
        ));
    }
    let mut err = None;
    let (value, source) = {
        let mut read = |p: &str| match img.read(p) {
            Ok(t) => t,
            Err(e) => {
                err = Some(e);
                None
            }
        };
        let mut list = |p: &str| img.list(p).ok().flatten();
        effective_password_auth(&mut read, &mut list)
    };
    if let Some(e) = err {
        return Err(e);
    }
    Ok(check(
        NAME,
        value == "no",
        format!("PasswordAuthentication {value} ({source})"),
    ))
}

fn work_disk(img: &Image<'_>) -> Result<Check, DebugfsError> {
    const NAME: &str = "work disk at /root";
    let fstab = img.read("/etc/fstab")?.unwrap_or_default();
    let entry = fstab.lines().find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        !l.trim_start().starts_with('#') && f.len() >= 2 && f[1] == "/root"
    });
    Ok(match entry {
        Some(l) => check(
            NAME,
            true,
            format!(
                "/etc/fstab: {}",
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        ),
        None => check(NAME, false, "/etc/fstab has no entry for /root"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn effective(files: &[(&str, &str)]) -> (String, String) {
        let map: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let m2 = map.clone();
        effective_password_auth(&mut |p| map.get(p).cloned(), &mut |d| {
            let prefix = format!("{d}/");
            let names: Vec<String> = m2
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
                .collect();
            (!names.is_empty()).then_some(names)
        })
    }

    #[test]
    fn the_first_password_authentication_wins_through_includes() {
        let (v, src) = effective(&[
            (
                "/etc/ssh/sshd_config",
                "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n",
            ),
            (
                "/etc/ssh/sshd_config.d/50-cloud.conf",
                "PasswordAuthentication yes\n",
            ),
        ]);
        assert_eq!(v, "yes");
        assert_eq!(src, "/etc/ssh/sshd_config.d/50-cloud.conf");
        let with_banger = files::sshd_config(
            "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n",
        );
        let (v, _) = effective(&[
            ("/etc/ssh/sshd_config", with_banger.as_str()),
            (
                "/etc/ssh/sshd_config.d/50-cloud.conf",
                "PasswordAuthentication yes\n",
            ),
        ]);
        assert_eq!(v, "no");
    }

    #[test]
    fn unset_means_openssh_default_yes_and_match_blocks_are_not_global() {
        assert_eq!(
            effective(&[("/etc/ssh/sshd_config", "#PasswordAuthentication no\n")]).0,
            "yes"
        );
        assert_eq!(
            effective(&[(
                "/etc/ssh/sshd_config",
                "Match User bob\n  PasswordAuthentication no\n"
            )])
            .0,
            "yes"
        );
        assert_eq!(
            effective(&[("/etc/ssh/sshd_config", "passwordauthentication NO\n")]).0,
            "no"
        );
    }

    #[test]
    fn key_comparison_ignores_the_comment() {
        assert_eq!(
            key_id("ssh-ed25519 AAAA root@a"),
            key_id("ssh-ed25519 AAAA other")
        );
        assert_ne!(key_id("ssh-ed25519 AAAA"), key_id("ssh-ed25519 BBBB"));
        assert_eq!(key_id("garbage"), None);
    }
}
