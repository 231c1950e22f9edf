//! The local stack's files are root's: `banger up` creates them owner-only and repairs what an
//! earlier version left open.
//!
//! `up` sets umask 077 before it creates anything, so the state and runtime directories, logs,
//! pid files, the stack file (bus credentials) and the managed nats-server's config and
//! JetStream store are owner-only from the start, and the processes it starts (the services,
//! nats-server) inherit the same umask. What an earlier version left open is tightened with a
//! warning that names each path (see `banger_bus::private` for why repair, not refusal).

use std::path::Path;

use banger_bus::private::{self, Repair};

use crate::stack::StackPaths;

/// Sets umask 077 and repairs the stack's own paths: the state and runtime directories
/// themselves, `<state>/logs`, `<state>/nats`, the stack file and `<runtime>/stack` (each
/// service repairs its own subtree when it starts). Prints one warning per repaired path.
pub fn secure(paths: &StackPaths) {
    private::restrict_umask();
    let mut repairs: Vec<Repair> = Vec::new();
    let mut failed = Vec::new();
    for dir in [&paths.state, &paths.runtime] {
        match private::secure_dir(dir) {
            Ok(r) => repairs.extend(r),
            Err(e) => failed.push((dir.clone(), e)),
        }
    }
    for tree in [
        paths.log_dir(),
        paths.nats_dir(),
        paths.stack_file(),
        paths.pid_dir(),
    ] {
        match private::secure_tree(&tree) {
            Ok(r) => repairs.extend(r),
            Err(e) => failed.push((tree, e)),
        }
    }
    for r in &repairs {
        eprintln!("{}", repaired_line(r));
    }
    for (path, e) in &failed {
        eprintln!(
            "warning: could not check that {} is closed to other users: {e}",
            path.display()
        );
    }
}

/// The warning for one repaired path.
fn repaired_line(r: &Repair) -> String {
    format!(
        "warning: {} was open to other users (mode {:04o}, left by an earlier version?); \
         repaired to {:04o}",
        display(&r.path),
        r.from,
        r.to
    )
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_repair_names_the_path_and_both_modes() {
        let line = repaired_line(&Repair {
            path: "/var/lib/banger/logs".into(),
            from: 0o755,
            to: 0o700,
        });
        assert!(line.contains("/var/lib/banger/logs"), "{line}");
        assert!(line.contains("0755") && line.contains("0700"), "{line}");
    }

    #[test]
    fn an_open_stack_is_closed() {
        let d = tempfile::tempdir().unwrap();
        let paths = StackPaths {
            state: d.path().join("state"),
            runtime: d.path().join("run"),
        };
        std::fs::create_dir_all(paths.log_dir()).unwrap();
        std::fs::create_dir_all(paths.pid_dir()).unwrap();
        std::fs::write(paths.log_file("netd"), "x").unwrap();
        let open = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        open(&paths.state, 0o755);
        open(&paths.runtime, 0o755);
        open(&paths.log_dir(), 0o755);
        open(&paths.log_file("netd"), 0o644);
        secure(&paths);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.state), 0o700);
        assert_eq!(mode(&paths.runtime), 0o700);
        assert_eq!(mode(&paths.log_dir()), 0o700);
        assert_eq!(mode(&paths.log_file("netd")), 0o600);
    }
}
