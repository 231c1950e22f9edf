//! The files the customisation writes into a guest root, as text: kept here, apart from the
//! code that writes them, so their contents are unit-tested.

/// Where the guest-setup script goes in the image.
pub const GUEST_SETUP_PATH: &str = "usr/local/lib/banger/guest-setup";

/// Where root's home skeleton goes: copied into `/root` (the work disk) at boot when missing.
pub const ROOT_SKEL_DIR: &str = "usr/local/share/banger/root-skel";

/// Where sshd also looks for root's keys (so the key works whatever the work disk holds).
pub const SYSTEM_AUTHORIZED_KEYS: &str = "etc/ssh/authorized_keys/root";

/// The systemd unit of the guest agent, as the agent crate ships it.
pub const AGENT_UNIT: &str = include_str!("../../agent/packaging/banger-agent.service");

/// `/etc/banger/agent.toml` as the agent crate ships it (exec enabled).
pub const AGENT_CONFIG: &str = include_str!("../../agent/packaging/agent.toml");

/// The runit service of the agent (Void).
pub const AGENT_RUNIT_RUN: &str = include_str!("../../agent/packaging/runit/banger-agent/run");

/// The runit log service of the agent (Void).
pub const AGENT_RUNIT_LOG_RUN: &str =
    include_str!("../../agent/packaging/runit/banger-agent/log/run");

/// `/etc/fstab`: the root drive (Firecracker's first virtio-blk, `root=/dev/vda`) and the
/// work disk at `/root`. `nofail`: a VM booted without a work disk still comes up.
pub const FSTAB: &str = "\
# banger guest: /dev/vda is the VM's root (a copy-on-write of the image), /dev/vdb its work disk.
/dev/vda  /      ext4  defaults,noatime                                 0 1
/dev/vdb  /root  ext4  defaults,noatime,nofail,x-systemd.device-timeout=10s  0 2
";

/// `/etc/hosts`.
pub const HOSTS: &str = "\
127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
";

/// Put at the top of `/etc/ssh/sshd_config`: sshd takes the first value of each keyword, so
/// these win over anything later in the file or in its `Include`d drop-ins.
pub const SSHD_BLOCK: &str = "\
# banger: root logs in with the runtime bundle's key only. sshd uses the first value of each
# keyword, so this block (at the top) wins over the rest of the file and its drop-ins.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u
# end banger
";

/// `sshd_config` with [`SSHD_BLOCK`] at the top (once, however often it is applied).
pub fn sshd_config(existing: &str) -> String {
    let rest = match (
        existing.find("# banger: root logs in"),
        existing.find("# end banger\n"),
    ) {
        (Some(start), Some(end)) if start < end => {
            format!(
                "{}{}",
                &existing[..start],
                &existing[end + "# end banger\n".len()..]
            )
        }
        _ => existing.to_owned(),
    };
    format!("{SSHD_BLOCK}\n{}", rest.trim_start_matches('\n'))
}

/// The boot-time set-up of a banger guest, run once per boot after the work disk is mounted and
/// before sshd and the agent start (systemd unit [`GUEST_SETUP_UNIT`]; on Void a runit
/// core-service). `BANGER_GUEST_ROOT` prefixes every path so tests run it against a directory.
pub const GUEST_SETUP: &str = r#"#!/bin/sh
# banger guest set-up: run at every boot, after /root (the VM's work disk) is mounted and before
# sshd and banger-agent start. Idempotent.
#  - /root is the work disk, empty on a new VM: give it root's shell skeleton (.bashrc,
#    .profile) and the runtime bundle's SSH key when they are missing; never overwrite.
#  - the resolver: the first DNS server of the kernel's ip= argument, else its gateway.
#  - the hostname: the ip= hostname field when the kernel did not set it already.
#  - SSH host keys: made on first boot, so VMs of one image do not share them.
R="${BANGER_GUEST_ROOT:-}"
skel="$R/usr/local/share/banger/root-skel"

mkdir -p "$R/root"
chmod 0700 "$R/root"
for f in .bashrc .profile; do
    if [ ! -e "$R/root/$f" ] && [ -e "$skel/$f" ]; then
        cp -p "$skel/$f" "$R/root/$f"
    fi
done
if [ -s "$skel/.ssh/authorized_keys" ]; then
    mkdir -p "$R/root/.ssh"
    chmod 0700 "$R/root/.ssh"
    while IFS= read -r key; do
        [ -n "$key" ] || continue
        grep -qxF "$key" "$R/root/.ssh/authorized_keys" 2>/dev/null ||
            printf '%s\n' "$key" >> "$R/root/.ssh/authorized_keys"
    done < "$skel/.ssh/authorized_keys"
    chmod 0600 "$R/root/.ssh/authorized_keys"
fi

ip_arg=""
if [ -r "$R/proc/cmdline" ]; then
    for word in $(cat "$R/proc/cmdline"); do
        case "$word" in ip=*) ip_arg="${word#ip=}" ;; esac
    done
fi
if [ -n "$ip_arg" ]; then
    # ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>
    old_ifs="$IFS"; IFS=:
    set -- $ip_arg
    IFS="$old_ifs"
    gateway="${3:-}"; name="${5:-}"; dns0="${8:-}"
    nameserver="${dns0:-$gateway}"
    if [ -n "$nameserver" ]; then
        rm -f "$R/etc/resolv.conf"
        printf '# written by banger guest-setup from the ip= boot argument\nnameserver %s\n' \
            "$nameserver" > "$R/etc/resolv.conf"
    fi
    if [ -z "$R" ] && [ -n "$name" ]; then
        hostname "$name" 2>/dev/null || true
    fi
fi

if [ -z "$R" ] && command -v ssh-keygen >/dev/null 2>&1; then
    ssh-keygen -A >/dev/null 2>&1 || true
fi
exit 0
"#;

/// The systemd unit that runs [`GUEST_SETUP`].
pub const GUEST_SETUP_UNIT: &str = "\
[Unit]
Description=banger guest set-up (work disk home, resolver and hostname from ip=, SSH host keys)
After=local-fs.target root.mount
Before=ssh.service banger-agent.service systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/banger/guest-setup

[Install]
WantedBy=multi-user.target
";

/// A drop-in for `serial-getty@ttyS0.service`: root is logged in on the serial console (only the
/// host's operator can reach it: it is the Firecracker process's stdin/stdout).
pub const SERIAL_AUTOLOGIN: &str = "\
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
";

/// Void: a runit core-service (sourced by stage 1 after the file systems are mounted) that runs
/// the guest set-up.
pub const VOID_CORE_SERVICE: &str = "\
# banger guest set-up (see /usr/local/lib/banger/guest-setup); sourced by runit stage 1.
/usr/local/lib/banger/guest-setup || true
";

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// Runs the guest set-up against `root` with `cmdline` as /proc/cmdline.
    fn run_setup(root: &Path, cmdline: &str) {
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("proc/cmdline"), cmdline).unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(GUEST_SETUP)
            .env("BANGER_GUEST_ROOT", root)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn skel(root: &Path) {
        let skel = root.join(ROOT_SKEL_DIR);
        std::fs::create_dir_all(skel.join(".ssh")).unwrap();
        std::fs::write(skel.join(".bashrc"), "# skel bashrc\n").unwrap();
        std::fs::write(skel.join(".profile"), "# skel profile\n").unwrap();
        std::fs::write(skel.join(".ssh/authorized_keys"), "ssh-ed25519 AAAA key\n").unwrap();
    }

    #[test]
    fn guest_setup_gives_an_empty_work_disk_a_home_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        skel(root);
        run_setup(
            root,
            "console=ttyS0 reboot=k ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off\n",
        );
        let home = root.join("root");
        assert_eq!(
            std::fs::read_to_string(home.join(".bashrc")).unwrap(),
            "# skel bashrc\n"
        );
        assert_eq!(
            std::fs::read_to_string(home.join(".profile")).unwrap(),
            "# skel profile\n"
        );
        assert_eq!(
            std::fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap(),
            "ssh-ed25519 AAAA key\n"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&home.join(".ssh")), 0o700);
        assert_eq!(mode(&home.join(".ssh/authorized_keys")), 0o600);
        let resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap();
        assert!(resolv.ends_with("nameserver 10.0.0.1\n"), "{resolv}");
    }

    #[test]
    fn guest_setup_never_overwrites_the_users_files_and_adds_the_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        skel(root);
        std::fs::create_dir_all(root.join("root/.ssh")).unwrap();
        std::fs::write(root.join("root/.bashrc"), "# mine\n").unwrap();
        std::fs::write(
            root.join("root/.ssh/authorized_keys"),
            "ssh-rsa BBBB other\n",
        )
        .unwrap();
        let cmdline = "ip=10.0.0.2::10.0.0.1:255.255.255.0:web:eth0:off:10.0.0.53\n";
        run_setup(root, cmdline);
        run_setup(root, cmdline);
        assert_eq!(
            std::fs::read_to_string(root.join("root/.bashrc")).unwrap(),
            "# mine\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("root/.ssh/authorized_keys")).unwrap(),
            "ssh-rsa BBBB other\nssh-ed25519 AAAA key\n"
        );
        // The first DNS server of ip= wins over the gateway.
        let resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap();
        assert!(resolv.ends_with("nameserver 10.0.0.53\n"), "{resolv}");
    }

    #[test]
    fn guest_setup_without_ip_leaves_the_resolver_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        skel(root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
        run_setup(root, "console=ttyS0\n");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 9.9.9.9\n"
        );
    }

    #[test]
    fn the_sshd_block_goes_on_top_once_and_turns_passwords_off() {
        let debian = "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n";
        let once = sshd_config(debian);
        assert!(once.starts_with(SSHD_BLOCK), "{once}");
        assert!(once.ends_with(debian), "{once}");
        assert_eq!(sshd_config(&once), once);
        let first = once
            .lines()
            .find(|l| l.starts_with("PasswordAuthentication"))
            .unwrap();
        assert_eq!(first, "PasswordAuthentication no");
    }

    #[test]
    fn fstab_mounts_the_work_disk_at_root_without_blocking_boot() {
        let work = FSTAB.lines().find(|l| l.starts_with("/dev/vdb")).unwrap();
        let fields: Vec<&str> = work.split_whitespace().collect();
        assert_eq!(fields[1], "/root");
        assert_eq!(fields[2], "ext4");
        assert!(fields[3].split(',').any(|o| o == "nofail"), "{work}");
    }

    #[test]
    fn the_agent_packaging_is_the_agent_crates() {
        assert!(AGENT_UNIT.contains("ExecStart=/usr/local/bin/banger-agent"));
        assert!(AGENT_UNIT.contains("WantedBy=multi-user.target"));
        assert!(AGENT_CONFIG.contains("allow_exec = true"));
        assert!(AGENT_RUNIT_RUN.contains("exec /usr/local/bin/banger-agent"));
        assert!(GUEST_SETUP_UNIT.contains("ExecStart=/usr/local/lib/banger/guest-setup"));
        assert!(GUEST_SETUP_UNIT.contains("Before=ssh.service banger-agent.service"));
    }
}
