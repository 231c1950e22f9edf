//! Turns a bootstrapped root tree into a banger guest: the agent and its service, SSH for root
//! with the runtime bundle's key only, a root shell environment that survives the work disk
//! being mounted over `/root`, the serial console, networking left to the kernel's `ip=`, and
//! the work disk in `/etc/fstab`. Plain file operations on the tree: nothing runs inside it.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;

use crate::files;

/// The guest's service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// systemd (Debian).
    Systemd,
    /// runit (Void).
    Runit,
}

/// Where Void's runit looks for enabled services.
pub const RUNIT_DEFAULT_DIR: &str = "etc/runit/runsvdir/default";

/// The service manager of the tree at `root`, if it has a known one. systemd wins: Debian ships
/// `/etc/sv` and `/etc/runit` too (runit-helper), but boots systemd.
pub fn detect_init(root: &Path) -> Option<Init> {
    if root.join("lib/systemd/systemd").exists() || root.join("usr/lib/systemd/systemd").exists() {
        Some(Init::Systemd)
    } else if root.join(RUNIT_DEFAULT_DIR).is_dir() || root.join("etc/sv").is_dir() {
        Some(Init::Runit)
    } else {
        None
    }
}

/// Customises the tree at `root` (see the module doc). `ssh_key` is the public key line.
pub fn customise(root: &Path, init: Init, agent_bin: &Path, ssh_key: &str) -> io::Result<()> {
    // The agent and its config.
    let agent = root.join("usr/local/bin/banger-agent");
    mkdirs(agent.parent())?;
    fs::copy(agent_bin, &agent).map_err(|e| ctx(e, "installing the agent binary"))?;
    chmod(&agent, 0o755)?;
    let config = root.join("etc/banger/agent.toml");
    if !config.exists() {
        write(&config, files::AGENT_CONFIG, 0o644)?;
    }

    // Identity and mounts: each VM gets its own machine id, hostname and host keys.
    write(&root.join("etc/fstab"), files::FSTAB, 0o644)?;
    write(&root.join("etc/hosts"), files::HOSTS, 0o644)?;
    remove_if_exists(&root.join("etc/hostname"))?;
    write(&root.join("etc/machine-id"), "", 0o444)?;
    remove_if_exists(&root.join("var/lib/dbus/machine-id"))?;
    for e in read_dir_names(&root.join("etc/ssh"))? {
        if e.starts_with("ssh_host_") {
            remove_if_exists(&root.join("etc/ssh").join(&e))?;
        }
    }

    // SSH: the bundle's key for root, no passwords.
    let sshd = root.join("etc/ssh/sshd_config");
    let existing = fs::read_to_string(&sshd).map_err(|e| {
        ctx(
            e,
            "reading /etc/ssh/sshd_config (is the OpenSSH server in the image?)",
        )
    })?;
    write(&sshd, &files::sshd_config(&existing), 0o644)?;
    let key = format!("{}\n", ssh_key.trim());
    write(&root.join(files::SYSTEM_AUTHORIZED_KEYS), &key, 0o644)?;
    chmod(&root.join("etc/ssh/authorized_keys"), 0o755)?;

    // Root's home: a skeleton copied into the work disk at boot, and the same files in the
    // image's own /root (seen when a VM has no work disk).
    let skel = root.join(files::ROOT_SKEL_DIR);
    for f in [".bashrc", ".profile"] {
        let content = fs::read_to_string(root.join("etc/skel").join(f))
            .unwrap_or_else(|_| default_skel(f).to_owned());
        write(&skel.join(f), &content, 0o644)?;
        write(&root.join("root").join(f), &content, 0o644)?;
    }
    write(&skel.join(".ssh/authorized_keys"), &key, 0o600)?;
    chmod(&skel.join(".ssh"), 0o700)?;
    write(&root.join("root/.ssh/authorized_keys"), &key, 0o600)?;
    chmod(&root.join("root/.ssh"), 0o700)?;
    chmod(&root.join("root"), 0o700)?;
    if root.join("bin/bash").exists() || root.join("usr/bin/bash").exists() {
        set_root_shell(root, "/bin/bash")?;
    }

    write(
        &root.join(files::GUEST_SETUP_PATH),
        files::GUEST_SETUP,
        0o755,
    )?;
    match init {
        Init::Systemd => systemd(root),
        Init::Runit => runit(root),
    }
}

fn systemd(root: &Path) -> io::Result<()> {
    let units = root.join("etc/systemd/system");
    write(
        &units.join("banger-agent.service"),
        files::AGENT_UNIT,
        0o644,
    )?;
    write(
        &units.join("banger-guest-setup.service"),
        files::GUEST_SETUP_UNIT,
        0o644,
    )?;
    let wants = units.join("multi-user.target.wants");
    link(
        "/etc/systemd/system/banger-agent.service",
        &wants.join("banger-agent.service"),
    )?;
    link(
        "/etc/systemd/system/banger-guest-setup.service",
        &wants.join("banger-guest-setup.service"),
    )?;
    // The serial console: Firecracker's only console.
    link(
        "/lib/systemd/system/serial-getty@.service",
        &units.join("getty.target.wants/serial-getty@ttyS0.service"),
    )?;
    write(
        &units.join("serial-getty@ttyS0.service.d/autologin.conf"),
        files::SERIAL_AUTOLOGIN,
        0o644,
    )?;
    // Networking is the kernel's (ip=): no DHCP client or network manager may fight it. The
    // Debian images have none; this undoes one a user's --packages pulled in.
    for unit in ["systemd-networkd.service", "NetworkManager.service"] {
        remove_if_exists(&wants.join(unit))?;
    }
    Ok(())
}

fn runit(root: &Path) -> io::Result<()> {
    let sv = root.join("etc/sv/banger-agent");
    write(&sv.join("run"), files::AGENT_RUNIT_RUN, 0o755)?;
    write(&sv.join("log/run"), files::AGENT_RUNIT_LOG_RUN, 0o755)?;
    let enabled = root.join(RUNIT_DEFAULT_DIR);
    link("/etc/sv/banger-agent", &enabled.join("banger-agent"))?;
    for service in ["sshd", "agetty-ttyS0"] {
        if root.join("etc/sv").join(service).is_dir() {
            link(&format!("/etc/sv/{service}"), &enabled.join(service))?;
        }
    }
    // Networking is the kernel's (ip=): Void enables dhcpcd by default.
    for service in ["dhcpcd", "dhcpcd-eth0", "wpa_supplicant", "NetworkManager"] {
        remove_if_exists(&enabled.join(service))?;
    }
    write(
        &root.join("etc/runit/core-services/99-banger.sh"),
        files::VOID_CORE_SERVICE,
        0o644,
    )
}

/// The shell skeleton when the distribution ships none.
fn default_skel(name: &str) -> &'static str {
    match name {
        ".bashrc" => {
            "# ~/.bashrc: banger's default for root\n[ -z \"$PS1\" ] && return\n\
             HISTCONTROL=ignoreboth\nshopt -s histappend checkwinsize\n\
             PS1='\\u@\\h:\\w\\$ '\nalias ls='ls --color=auto'\nalias ll='ls -alF'\n"
        }
        _ => {
            "# ~/.profile: banger's default for root\n\
             if [ -n \"$BASH_VERSION\" ] && [ -f \"$HOME/.bashrc\" ]; then . \"$HOME/.bashrc\"; fi\n"
        }
    }
}

/// Sets root's login shell in `/etc/passwd`.
fn set_root_shell(root: &Path, shell: &str) -> io::Result<()> {
    let passwd = root.join("etc/passwd");
    let Ok(text) = fs::read_to_string(&passwd) else {
        return Ok(());
    };
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.split(':').collect();
            if fields.first() == Some(&"root") && fields.len() == 7 {
                fields[6] = shell;
            }
            fields.join(":")
        })
        .collect();
    fs::write(&passwd, format!("{}\n", out.join("\n")))
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn mkdirs(dir: Option<&Path>) -> io::Result<()> {
    match dir {
        Some(d) => fs::create_dir_all(d).map_err(|e| ctx(e, &format!("creating {}", d.display()))),
        None => Ok(()),
    }
}

fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| ctx(e, &format!("chmod {}", p.display())))
}

/// Writes `content` to `p` (parents made) with `mode`, replacing a symlink rather than
/// following it out of the tree.
fn write(p: &Path, content: &str, mode: u32) -> io::Result<()> {
    mkdirs(p.parent())?;
    remove_if_exists(p)?;
    fs::write(p, content).map_err(|e| ctx(e, &format!("writing {}", p.display())))?;
    chmod(p, mode)
}

/// Makes `at` a symlink to `target` (replacing whatever was there).
fn link(target: &str, at: &Path) -> io::Result<()> {
    mkdirs(at.parent())?;
    remove_if_exists(at)?;
    symlink(target, at).map_err(|e| ctx(e, &format!("linking {}", at.display())))
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| ctx(e, &format!("removing {}", p.display())))
}

fn read_dir_names(dir: &Path) -> io::Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(d) => Ok(d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ctx(e, &format!("reading {}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree that looks like a bootstrapped Debian (only what customisation touches).
    fn debian_tree(root: &Path) {
        // Debian has runit-helper's directories too: systemd must still win.
        for d in [
            "lib/systemd",
            "etc/ssh",
            "etc/skel",
            "root",
            "bin",
            "etc/sv/ssh",
            RUNIT_DEFAULT_DIR,
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("lib/systemd/systemd"), "").unwrap();
        fs::write(root.join("bin/bash"), "").unwrap();
        fs::write(
            root.join("etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\n#PasswordAuthentication yes\n",
        )
        .unwrap();
        fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        fs::write(root.join("etc/skel/.bashrc"), "# debian skel\n").unwrap();
        fs::write(root.join("etc/hostname"), "buildhost\n").unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/usr/sbin/nologin\n",
        )
        .unwrap();
    }

    fn agent(dir: &Path) -> std::path::PathBuf {
        let a = dir.join("banger-agent");
        fs::write(&a, "#!/bin/sh\n").unwrap();
        a
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_debian_tree_gets_the_agent_ssh_console_and_work_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        debian_tree(&root);
        assert_eq!(detect_init(&root), Some(Init::Systemd));
        customise(
            &root,
            Init::Systemd,
            &agent(dir.path()),
            "ssh-ed25519 AAAA k\n",
        )
        .unwrap();
        assert!(!root.join("etc/sv/banger-agent").exists());

        assert_eq!(mode(&root.join("usr/local/bin/banger-agent")), 0o755);
        let units = root.join("etc/systemd/system");
        assert_eq!(
            fs::read_link(units.join("multi-user.target.wants/banger-agent.service")).unwrap(),
            Path::new("/etc/systemd/system/banger-agent.service")
        );
        assert_eq!(
            fs::read_to_string(units.join("banger-agent.service")).unwrap(),
            files::AGENT_UNIT
        );
        assert!(
            fs::symlink_metadata(units.join("getty.target.wants/serial-getty@ttyS0.service"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            fs::read_link(units.join("multi-user.target.wants/banger-guest-setup.service")).is_ok()
        );
        assert!(
            fs::read_to_string(root.join("etc/ssh/sshd_config"))
                .unwrap()
                .starts_with(files::SSHD_BLOCK)
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/ssh/authorized_keys/root")).unwrap(),
            "ssh-ed25519 AAAA k\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
            "ssh-ed25519 AAAA k\n"
        );
        assert_eq!(mode(&root.join("root")), 0o700);
        assert_eq!(
            fs::read_to_string(root.join(files::ROOT_SKEL_DIR).join(".bashrc")).unwrap(),
            "# debian skel\n"
        );
        // No .profile in this skel: banger's default.
        assert!(
            fs::read_to_string(root.join("root/.profile"))
                .unwrap()
                .contains(".bashrc")
        );
        assert!(!root.join("etc/hostname").exists());
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert_eq!(
            fs::read_to_string(root.join("etc/fstab")).unwrap(),
            files::FSTAB
        );
        assert_eq!(fs::read_to_string(root.join("etc/machine-id")).unwrap(), "");
        assert!(
            fs::read_to_string(root.join("etc/passwd"))
                .unwrap()
                .starts_with("root:x:0:0:root:/root:/bin/bash\ndaemon:")
        );
        assert_eq!(mode(&root.join(files::GUEST_SETUP_PATH)), 0o755);
    }

    #[test]
    fn a_void_tree_gets_runit_services_and_loses_dhcpcd() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in [
            RUNIT_DEFAULT_DIR,
            "etc/sv/sshd",
            "etc/sv/agetty-ttyS0",
            "etc/ssh",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/ssh/sshd_config"), "").unwrap();
        symlink(
            "/etc/sv/dhcpcd",
            root.join(RUNIT_DEFAULT_DIR).join("dhcpcd"),
        )
        .unwrap();
        assert_eq!(detect_init(&root), Some(Init::Runit));
        customise(&root, Init::Runit, &agent(dir.path()), "ssh-ed25519 AAAA k").unwrap();
        let enabled = root.join(RUNIT_DEFAULT_DIR);
        assert_eq!(
            fs::read_link(enabled.join("banger-agent")).unwrap(),
            Path::new("/etc/sv/banger-agent")
        );
        assert!(fs::read_link(enabled.join("sshd")).is_ok());
        assert!(fs::read_link(enabled.join("agetty-ttyS0")).is_ok());
        assert!(fs::symlink_metadata(enabled.join("dhcpcd")).is_err());
        assert_eq!(mode(&root.join("etc/sv/banger-agent/run")), 0o755);
        assert!(root.join("etc/runit/core-services/99-banger.sh").is_file());
    }

    #[test]
    fn a_tree_without_sshd_config_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("lib/systemd")).unwrap();
        let e = customise(&root, Init::Systemd, &agent(dir.path()), "ssh-ed25519 A k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("OpenSSH server"), "{e}");
    }

    #[test]
    fn a_tree_without_an_init_is_not_detected() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_init(dir.path()), None);
    }
}
