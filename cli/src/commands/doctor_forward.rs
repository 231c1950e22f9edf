//! `banger doctor`'s check for the conflict with Docker (or any firewall) over forwarded
//! traffic.
//!
//! When Docker turns IPv4 forwarding on, it sets iptables' `FORWARD` policy to DROP. With
//! iptables-nft that is an nftables base chain whose drop no accept in netd's own table can
//! override, so guests behind the bridge lose outbound traffic unless netd's accepts (comment
//! `banger:<table>`, in `DOCKER-USER` or `FORWARD`) are in place; netd adds them at start-up and
//! on every reconcile (see netd's `forward_accept` module). This check names the conflict and
//! says whether netd's fix is there.

use std::process::Command;

use banger_bus::config::CommonConfig;

use super::doctor::{Check, Level};

/// netd's defaults, when the config file does not set them.
const DEFAULT_BRIDGE: &str = "banger0";
const DEFAULT_TABLE: &str = "banger";

/// The check, from `iptables -S` on this host.
pub fn forward_policy_check(config: &CommonConfig) -> Check {
    let netd = config.file_table().get("netd");
    let get = |key: &str, default: &str| {
        netd.and_then(|t| t.get(key))
            .and_then(toml::Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let bridge = get("bridge", DEFAULT_BRIDGE);
    let table = get("nft_table", DEFAULT_TABLE);
    match Command::new("iptables").args(["-w", "-S"]).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check {
            name: "forward-policy",
            level: Level::Ok,
            detail: "iptables is not installed: no FORWARD policy to conflict with".into(),
            fix: None,
        },
        Err(e) => Check {
            name: "forward-policy",
            level: Level::Warn,
            detail: format!("could not run iptables: {e}"),
            fix: None,
        },
        Ok(o) if !o.status.success() => Check {
            name: "forward-policy",
            level: Level::Warn,
            detail: format!(
                "cannot read iptables' filter table: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            fix: Some("run `banger doctor` as root".into()),
        },
        Ok(o) => assess(&String::from_utf8_lossy(&o.stdout), &bridge, &table),
    }
}

/// Judges an `iptables -S` listing for `bridge` (netd's rules carry `banger:<table>`).
pub fn assess(listing: &str, bridge: &str, table: &str) -> Check {
    let drops = listing
        .lines()
        .any(|l| matches!(l.trim(), "-P FORWARD DROP" | "-P FORWARD REJECT"));
    if !drops {
        return Check {
            name: "forward-policy",
            level: Level::Ok,
            detail: "iptables' FORWARD policy accepts".into(),
            fix: None,
        };
    }
    let docker = listing.lines().any(|l| l.trim() == "-N DOCKER-USER");
    let who = if docker {
        "Docker set it (DOCKER-USER exists)"
    } else {
        "a firewall set it"
    };
    let comment = format!("--comment \"banger:{table}\"");
    let accepting = listing.lines().find(|l| {
        l.starts_with("-A ") && l.contains(&format!("-i {bridge} ")) && l.contains(&comment)
    });
    match accepting {
        Some(rule) => Check {
            name: "forward-policy",
            level: Level::Ok,
            detail: format!(
                "iptables' FORWARD policy is DROP ({who}); netd's accepts for {bridge} are in \
                 place ({})",
                rule.split_whitespace().nth(1).unwrap_or("?")
            ),
            fix: None,
        },
        None => {
            let chain = if docker { "DOCKER-USER" } else { "FORWARD" };
            Check {
                name: "forward-policy",
                level: Level::Warn,
                detail: format!(
                    "iptables' FORWARD policy is DROP ({who}) and netd's accepts for {bridge} are \
                     missing: guests behind {bridge} cannot reach beyond this host"
                ),
                fix: Some(format!(
                    "start or restart netd (banger down && banger up; with compose: docker \
                     compose restart netd): it adds them at start-up and every reconcile. By \
                     hand: iptables -I {chain} -i {bridge} -j ACCEPT; iptables -I {chain} -o \
                     {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N DOCKER\n\
                          -N DOCKER-USER\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\n";

    #[test]
    fn an_accepting_policy_is_fine() {
        let c = assess("-P INPUT ACCEPT\n-P FORWARD ACCEPT\n", "banger0", "banger");
        assert_eq!(c.level, Level::Ok);
    }

    #[test]
    fn dockers_drop_without_netds_accepts_is_named() {
        let c = assess(DOCKER, "banger0", "banger");
        assert_eq!(c.level, Level::Warn);
        assert!(c.detail.contains("Docker"), "{}", c.detail);
        assert!(c.detail.contains("banger0"), "{}", c.detail);
        assert!(
            c.fix
                .unwrap()
                .contains("iptables -I DOCKER-USER -i banger0")
        );
    }

    #[test]
    fn dockers_drop_with_netds_accepts_is_fine() {
        let listing = format!(
            "{DOCKER}-A DOCKER-USER -i banger0 -m comment --comment \"banger:banger\" -j ACCEPT\n"
        );
        let c = assess(&listing, "banger0", "banger");
        assert_eq!(c.level, Level::Ok, "{}", c.detail);
        assert!(c.detail.contains("DOCKER-USER"), "{}", c.detail);
        // Another table's rules are not ours.
        let c = assess(&listing, "banger0", "other");
        assert_eq!(c.level, Level::Warn);
    }

    #[test]
    fn a_plain_firewall_drop_points_at_forward() {
        let c = assess("-P FORWARD DROP\n", "br1", "banger");
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.unwrap().contains("iptables -I FORWARD -i br1"));
    }
}
