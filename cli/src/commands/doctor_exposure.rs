//! `banger doctor`'s permissions check: nothing under the state or runtime directory may be
//! reachable by users other than its owner.
//!
//! A hypervisor API or vsock socket another user can reach lets that user drive the VM and run
//! commands as root in it (and, through the API, write files as root on the host); logs and
//! databases carry guest output and records. So an exposed path fails the check. Sockets are
//! 0777 by requirement (the launch's umask 000); one counts only when the directories
//! above it let others in (see `banger_bus::private::exposed`).

use banger_bus::config::CommonConfig;
use banger_bus::private::{self, Exposure};

use super::doctor::{Check, Level};

/// How many exposed paths the detail names before it says "and N more".
const NAMED: usize = 5;

/// The check's name in doctor's output.
pub const NAME: &str = "permissions";

/// One check over the state and runtime directories.
pub fn check(config: &CommonConfig) -> Check {
    let mut found = private::exposed(&config.state_dir);
    found.extend(private::exposed(&config.runtime_dir));
    judge(
        &found,
        &format!(
            "{} and {}",
            config.state_dir.display(),
            config.runtime_dir.display()
        ),
    )
}

fn judge(found: &[Exposure], roots: &str) -> Check {
    if found.is_empty() {
        return Check {
            name: NAME,
            level: Level::Ok,
            detail: format!("{roots}: nothing is reachable by other users"),
            fix: None,
        };
    }
    let sockets = found
        .iter()
        .filter(|e| e.kind == private::Kind::Socket)
        .count();
    let mut named: Vec<String> = found
        .iter()
        .take(NAMED)
        .map(|e| format!("{} {} ({:04o})", e.kind.as_str(), e.path.display(), e.mode))
        .collect();
    if found.len() > NAMED {
        named.push(format!("and {} more", found.len() - NAMED));
    }
    Check {
        name: NAME,
        level: Level::Fail,
        detail: format!(
            "{} path(s) reachable by other users ({sockets} socket(s)): {}",
            found.len(),
            named.join(", ")
        ),
        fix: Some(format!(
            "restart the stack (`banger down; banger up`: every service closes its directories \
             when it starts), or by hand: chmod -R go-rwx {roots}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_exposed_is_ok() {
        let c = judge(&[], "/s and /r");
        assert_eq!(c.level, Level::Ok);
        assert!(c.fix.is_none());
    }

    #[test]
    fn an_exposed_socket_fails_and_is_named() {
        let found: Vec<Exposure> = (0..7)
            .map(|i| Exposure {
                path: format!("/run/banger/vm-controller/{i}/api.sock").into(),
                kind: if i == 0 {
                    private::Kind::Socket
                } else {
                    private::Kind::Dir
                },
                mode: 0o777,
            })
            .collect();
        let c = judge(&found, "/s and /r");
        assert_eq!(c.level, Level::Fail);
        assert!(c.detail.contains("7 path(s)"), "{}", c.detail);
        assert!(c.detail.contains("1 socket(s)"), "{}", c.detail);
        assert!(
            c.detail
                .contains("socket /run/banger/vm-controller/0/api.sock (0777)"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("and 2 more"), "{}", c.detail);
        assert!(c.fix.unwrap().contains("chmod -R go-rwx"));
    }
}
