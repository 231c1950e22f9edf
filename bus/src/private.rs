//! Owner-only files and directories: how banger keeps its state and sockets away from other
//! local users.
//!
//! Everything banger keeps on a host is root's business: the databases, logs (serial logs carry
//! guest output), the stack file (bus credentials), pid files, and above all the hypervisor's
//! API and vsock sockets, which a requirement makes mode 0777 (the umask-000 launch in
//! `vm-controller`). A socket's mode is not what guards it; the directories above it are, the
//! way Firecracker's jailer confines its chroot. So:
//!
//! - directories are created mode [`DIR_MODE`] (0700) — at creation, never chmod-ed after a
//!   window ([`create_dir_all`]);
//! - files are created mode [`FILE_MODE`] (0600) ([`create_file`], [`write_file`]), and each
//!   service runs with umask 077 ([`restrict_umask`]) so that files made by libraries
//!   (SQLite's `-wal` and `-shm`, nats-server's JetStream store) are owner-only too;
//! - at start-up each service checks the trees it owns and **repairs** what an earlier version
//!   left open, logging a WARN for every path it tightened ([`secure_tree`],
//!   [`secure_and_warn`]). Repairing is friendlier than refusing to start: the only way to fix
//!   the tree is the same chmod, and an operator reading the log learns what was open;
//! - [`exposed`] finds what another user could reach (for `banger doctor`).
//!
//! The walk never follows symlinks and never leaves the filesystem it starts on, so a mounted
//! guest filesystem below a state directory is never touched. Sockets are left as they are: the
//! directory above them is their guard.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of every directory banger creates: only its owner (root) may list or enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file banger creates: only its owner may read or write it.
pub const FILE_MODE: u32 = 0o600;
/// The permission bits of group and others; none may be set on banger's paths.
const GROUP_OTHER: u32 = 0o077;
/// The permission bits of others (everyone who is neither the owner nor in the group).
const OTHER: u32 = 0o007;
/// Search (enter) permission for others.
const OTHER_SEARCH: u32 = 0o001;

/// Sets the process umask to 077, so every file and directory the process (and the libraries
/// it uses, and the processes it starts) creates is owner-only. Returns the previous umask.
pub fn restrict_umask() -> u32 {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(GROUP_OTHER)).bits()
}

/// Creates `path` and any missing parents, each mode 0700 from the start. Directories that
/// already exist are left as they are (see [`secure_tree`] for repairing them).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Opens `path` for appending, creating it mode 0600 (and its missing parents mode 0700). An
/// existing file keeps its content.
pub fn create_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Writes `contents` to `path`, created (or truncated) mode 0600; an existing file that was
/// open to others is tightened before anything is written to it.
pub fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // The mode only applies on creation; tighten a file an earlier version left open.
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(contents)
}

/// One path [`secure_tree`] tightened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The path.
    pub path: PathBuf,
    /// Its permission bits before.
    pub from: u32,
    /// Its permission bits now.
    pub to: u32,
}

/// Makes `root` and everything below it owner-only: every directory and regular file loses its
/// group and other bits (a directory 0755 becomes 0700, a file 0644 becomes 0600; owner bits
/// are kept). Sockets, symlinks and device files are left alone, and the walk stays on
/// `root`'s filesystem. A missing `root` is nothing to repair (whoever creates it later does
/// so owner-only). Returns what it changed.
///
/// # Errors
/// When `root` cannot be inspected or a path cannot be tightened. A path that disappears
/// during the walk (a VM stopping) is not an error.
pub fn secure_tree(root: &Path) -> io::Result<Vec<Repair>> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut repairs = Vec::new();
    walk(root, meta.dev(), &mut repairs)?;
    Ok(repairs)
}

/// Like [`secure_tree`] for `dir` alone, not what is below it (a directory shared by several
/// services, each of which secures its own subtree).
///
/// # Errors
/// When `dir` cannot be inspected or tightened.
pub fn secure_dir(dir: &Path) -> io::Result<Option<Repair>> {
    match fs::symlink_metadata(dir) {
        Ok(m) => tighten(dir, &m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn walk(path: &Path, dev: u64, repairs: &mut Vec<Repair>) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.dev() != dev {
        // A mount point (a guest's filesystem, a tmpfs): not ours to change.
        return Ok(());
    }
    if let Some(r) = tighten(path, &meta)? {
        repairs.push(r);
    }
    if meta.is_dir() {
        let entries = match fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            walk(&entry?.path(), dev, repairs)?;
        }
    }
    Ok(())
}

/// Removes group and other bits from a directory or regular file.
fn tighten(path: &Path, meta: &fs::Metadata) -> io::Result<Option<Repair>> {
    let kind = meta.file_type();
    if !(kind.is_dir() || kind.is_file()) {
        return Ok(None);
    }
    let from = meta.permissions().mode() & 0o7777;
    if from & GROUP_OTHER == 0 {
        return Ok(None);
    }
    let to = from & !GROUP_OTHER & 0o777;
    match fs::set_permissions(path, fs::Permissions::from_mode(to)) {
        Ok(()) => Ok(Some(Repair {
            path: path.to_owned(),
            from,
            to,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Secures each of `trees` (whole trees) and `dirs` (the directory alone) as
/// [`secure_tree`] and [`secure_dir`] do, logging a WARN for every path that was open and a
/// WARN (not a failure: the service still runs) when a path could not be checked.
pub fn secure_and_warn(trees: &[&Path], dirs: &[&Path]) -> Vec<Repair> {
    let mut all = Vec::new();
    let mut report = |root: &Path, result: io::Result<Vec<Repair>>| match result {
        Ok(repairs) => {
            for r in &repairs {
                tracing::warn!(
                    path = %r.path.display(),
                    from = format_args!("{:04o}", r.from),
                    to = format_args!("{:04o}", r.to),
                    "repaired permissions: this path was open to other users (left by an \
                     earlier version?); now owner-only"
                );
            }
            all.extend(repairs);
        }
        Err(e) => tracing::warn!(
            path = %root.display(),
            error = %e,
            "could not check that this path is closed to other users"
        ),
    };
    for dir in dirs {
        report(dir, secure_dir(dir).map(|r| r.into_iter().collect()));
    }
    for tree in trees {
        report(tree, secure_tree(tree));
    }
    all
}

/// What kind of path another user can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// A word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "directory",
            Self::File => "file",
            Self::Socket => "socket",
        }
    }
}

/// A path under a banger directory that users other than its owner can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The path.
    pub path: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Its permission bits.
    pub mode: u32,
}

/// Every directory, file and socket under `root` (and `root` itself) that a user who is not the
/// owner can actually reach: its mode grants others some access **and** others may enter
/// every directory on the way to it (including `root`'s ancestors). A 0777 socket inside a
/// 0700 directory is therefore not exposed; a 0755 directory whose parent others may enter
/// is. A missing `root` exposes nothing.
pub fn exposed(root: &Path) -> Vec<Exposure> {
    let reachable = root
        .ancestors()
        .skip(1)
        .all(|a| fs::metadata(a).is_ok_and(|m| m.mode() & OTHER_SEARCH != 0));
    let mut found = Vec::new();
    if reachable && let Ok(meta) = fs::symlink_metadata(root) {
        collect_exposed(root, &meta, &mut found);
    }
    found
}

fn collect_exposed(path: &Path, meta: &fs::Metadata, found: &mut Vec<Exposure>) {
    let kind = meta.file_type();
    let kind = if kind.is_dir() {
        Kind::Dir
    } else if kind.is_file() {
        Kind::File
    } else if kind.is_socket() {
        Kind::Socket
    } else {
        return;
    };
    let mode = meta.mode() & 0o7777;
    if mode & OTHER != 0 {
        found.push(Exposure {
            path: path.to_owned(),
            kind,
            mode,
        });
    }
    // Others reach what is below a directory only when they may enter it.
    if kind == Kind::Dir && mode & OTHER_SEARCH != 0 {
        let Ok(entries) = fs::read_dir(path) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if let Ok(m) = entry.path().symlink_metadata() {
                collect_exposed(&entry.path(), &m, found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn set(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    /// A temp dir others may enter (as /var/lib is), so exposure below it is visible.
    fn open_tempdir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        set(d.path(), 0o755);
        d
    }

    #[test]
    fn directories_and_files_are_created_owner_only_whatever_the_umask() {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b/c");
        create_dir_all(&dir).unwrap();
        let file = d.path().join("x/y.log");
        create_file(&file).unwrap();
        let written = d.path().join("z/stack.toml");
        write_file(&written, b"k = 1\n").unwrap();
        nix::sys::stat::umask(old);
        for p in ["a", "a/b", "a/b/c", "x", "z"] {
            assert_eq!(mode(&d.path().join(p)), 0o700, "{p}");
        }
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&written), 0o600);
    }

    #[test]
    fn write_file_tightens_a_file_left_open() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stack.toml");
        fs::write(&p, "old").unwrap();
        set(&p, 0o644);
        write_file(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
    }

    #[test]
    fn an_open_tree_is_repaired_and_every_repair_reported() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("state");
        fs::create_dir_all(root.join("vms/abc")).unwrap();
        fs::write(root.join("vms.sqlite"), "").unwrap();
        fs::write(root.join("vms/abc/serial.log"), "").unwrap();
        fs::write(root.join("private"), "").unwrap();
        set(&root, 0o755);
        set(&root.join("vms"), 0o755);
        set(&root.join("vms/abc"), 0o775);
        set(&root.join("vms.sqlite"), 0o644);
        set(&root.join("vms/abc/serial.log"), 0o666);
        set(&root.join("private"), 0o600);
        let sock = root.join("vms/abc/api.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        set(&sock, 0o777);

        let mut got: Vec<(String, u32, u32)> = secure_tree(&root)
            .unwrap()
            .iter()
            .map(|r| {
                let rel = r.path.strip_prefix(d.path()).unwrap();
                (rel.display().to_string(), r.from, r.to)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("state".to_owned(), 0o755, 0o700),
                ("state/vms".to_owned(), 0o755, 0o700),
                ("state/vms.sqlite".to_owned(), 0o644, 0o600),
                ("state/vms/abc".to_owned(), 0o775, 0o700),
                ("state/vms/abc/serial.log".to_owned(), 0o666, 0o600),
            ]
        );
        // The socket keeps the mode the launch requirement gives it; its directory guards it.
        assert_eq!(mode(&sock), 0o777);
        assert!(
            secure_tree(&root).unwrap().is_empty(),
            "a second pass is a no-op"
        );
        assert!(secure_tree(&d.path().join("missing")).unwrap().is_empty());
        assert!(!d.path().join("missing").exists(), "nothing is created");
    }

    #[test]
    fn secure_dir_leaves_what_is_below_alone() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("run");
        fs::create_dir_all(top.join("other")).unwrap();
        set(&top, 0o755);
        set(&top.join("other"), 0o755);
        let r = secure_dir(&top).unwrap().unwrap();
        assert_eq!((r.from, r.to), (0o755, 0o700));
        assert_eq!(mode(&top.join("other")), 0o755);
        assert_eq!(secure_dir(&top).unwrap(), None);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        set(&outside, 0o755);
        let root = d.path().join("state");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        secure_tree(&root).unwrap();
        assert_eq!(mode(&outside), 0o755);
    }

    #[test]
    fn exposure_counts_only_what_others_can_reach() {
        let d = open_tempdir();
        let root = d.path().join("run");
        let vm = root.join("vm-controller/abc");
        fs::create_dir_all(&vm).unwrap();
        set(&root, 0o755);
        set(&root.join("vm-controller"), 0o755);
        set(&vm, 0o700);
        let sock = vm.join("api.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        set(&sock, 0o777);
        let pid = root.join("vm-controller/x.pid");
        fs::write(&pid, "1").unwrap();
        set(&pid, 0o644);

        let mut got: Vec<(PathBuf, Kind)> = exposed(&root)
            .into_iter()
            .map(|e| (e.path, e.kind))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (root.clone(), Kind::Dir),
                (root.join("vm-controller"), Kind::Dir),
                (pid.clone(), Kind::File),
            ],
            "the socket in a 0700 dir is guarded by it"
        );

        // Open the VM's directory and the socket is a door.
        set(&vm, 0o755);
        assert!(
            exposed(&root)
                .iter()
                .any(|e| e.path == sock && e.kind == Kind::Socket)
        );

        // Close the top and nothing below it is reachable.
        set(&root, 0o700);
        assert!(exposed(&root).is_empty());
        assert!(exposed(&d.path().join("missing")).is_empty());
    }
}
