#!/bin/sh
# Installs the banger guest agent into a mounted guest root filesystem and enables it.
#
#   install-into-rootfs.sh ROOTFS [AGENT_BINARY]
#
# AGENT_BINARY defaults to target/release/banger-agent. The service manager is detected from
# the root filesystem: systemd (Debian images) gets banger-agent.service enabled for
# multi-user.target; runit (Void images) gets /etc/sv/banger-agent linked into the default
# runsvdir. /etc/banger/agent.toml is written with exec enabled unless one already exists.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${1:?usage: install-into-rootfs.sh ROOTFS [AGENT_BINARY]}
bin=${2:-target/release/banger-agent}

[ -d "$root" ] || { echo "install-into-rootfs: $root is not a directory" >&2; exit 1; }
[ -f "$bin" ] || { echo "install-into-rootfs: agent binary $bin not found" >&2; exit 1; }

install -D -m 0755 "$bin" "$root/usr/local/bin/banger-agent"
if [ ! -e "$root/etc/banger/agent.toml" ]; then
    install -D -m 0644 "$here/agent.toml" "$root/etc/banger/agent.toml"
fi

if [ -e "$root/lib/systemd/systemd" ] || [ -e "$root/usr/lib/systemd/systemd" ]; then
    install -D -m 0644 "$here/banger-agent.service" "$root/etc/systemd/system/banger-agent.service"
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    ln -sfn /etc/systemd/system/banger-agent.service \
        "$root/etc/systemd/system/multi-user.target.wants/banger-agent.service"
    echo "installed banger-agent (systemd) into $root"
elif [ -d "$root/etc/runit" ] || [ -d "$root/etc/sv" ]; then
    install -D -m 0755 "$here/runit/banger-agent/run" "$root/etc/sv/banger-agent/run"
    install -D -m 0755 "$here/runit/banger-agent/log/run" "$root/etc/sv/banger-agent/log/run"
    mkdir -p "$root/etc/runit/runsvdir/default"
    ln -sfn /etc/sv/banger-agent "$root/etc/runit/runsvdir/default/banger-agent"
    echo "installed banger-agent (runit) into $root"
else
    echo "install-into-rootfs: neither systemd nor runit found in $root" >&2
    exit 1
fi
