//! Repairing a stale nested home on a work disk (the earlier bangerd's `flattenNestedWorkHome`).
//!
//! The work disk is mounted at `/root` in the guest, so the top of its file system *is* the
//! guest's home. Older images and an earlier bug copied the image's `/root` *into* the disk as a
//! directory, leaving the guest with `/root/root/...` and its dotfiles and SSH keys out of
//! place. On every (re)start stord looks for a top-level `root` directory on the work disk and
//! moves its contents up a level.
//!
//! How: each entry of the nested tree is moved individually with `rename` (same file system:
//! atomic, keeps owner, mode, timestamps and extended attributes; nothing is read as a lesser
//! user, so a root-owned `0700` tree is no obstacle, which is what the Go version got wrong).
//! Where both levels hold a directory of the same name the two are merged recursively. Where
//! both hold a file (or a file and a directory), the top-level entry wins, because that is
//! what the guest has been using at `/root`; the nested one is kept, with everything else that
//! could not move, in `/.banger-nested-root` (or `-2`, `-3`, ...) so nothing is ever lost and
//! the nested layout is gone either way.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The nested home's name at the top of the work disk.
pub const NESTED: &str = "root";
/// Where entries that could not move are kept.
pub const LEFTOVERS: &str = ".banger-nested-root";

/// What a repair did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlattenReport {
    /// Whether a nested home was found.
    pub found: bool,
    /// Entries moved up (paths relative to the top).
    pub moved: Vec<PathBuf>,
    /// Entries left nested because the top level already had them.
    pub conflicts: Vec<PathBuf>,
    /// Where the leftovers were kept, if any.
    pub leftovers: Option<PathBuf>,
}

/// Why a repair failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct FlattenError {
    /// What was being done.
    pub step: &'static str,
    /// On what.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

fn ferr<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FlattenError + 'a {
    move |source| FlattenError {
        step,
        path: path.to_owned(),
        source,
    }
}

/// Flattens `top/root` into `top` (see the module doc).
pub fn flatten_nested_home(top: &Path) -> Result<FlattenReport, FlattenError> {
    let nested = top.join(NESTED);
    let mut report = FlattenReport::default();
    match std::fs::symlink_metadata(&nested) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => return Ok(report), // a file or symlink named root: not the stale layout
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(ferr("inspecting", &nested)(e)),
    }
    report.found = true;
    // The nested directory is going away; make sure it can be traversed and emptied whatever
    // mode it was left with (the earlier tool created it 0700 as another user).
    let mut perms = std::fs::metadata(&nested)
        .map_err(ferr("inspecting", &nested))?
        .permissions();
    perms.set_mode(perms.mode() | 0o700);
    std::fs::set_permissions(&nested, perms).map_err(ferr("opening up", &nested))?;

    merge_into(&nested, top, Path::new(""), &mut report)?;

    match std::fs::remove_dir(&nested) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            let keep = free_name(top)?;
            std::fs::rename(&nested, &keep).map_err(ferr("keeping the leftovers in", &keep))?;
            report.leftovers = keep.strip_prefix(top).map(Path::to_owned).ok();
        }
        Err(e) => return Err(ferr("removing", &nested)(e)),
    }
    Ok(report)
}

/// Moves every entry of `from` into `to`, merging directories; `rel` is `from` relative to the
/// nested root, for the report.
fn merge_into(
    from: &Path,
    to: &Path,
    rel: &Path,
    report: &mut FlattenReport,
) -> Result<(), FlattenError> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(ferr("listing", from))?
        .collect::<Result<_, _>>()
        .map_err(ferr("listing", from))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let src = entry.path();
        let dst = to.join(&name);
        let rel_child = rel.join(&name);
        match std::fs::symlink_metadata(&dst) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::rename(&src, &dst).map_err(ferr("moving up", &src))?;
                report.moved.push(rel_child);
            }
            Err(e) => return Err(ferr("inspecting", &dst)(e)),
            Ok(dst_meta) => {
                let src_is_dir = entry
                    .file_type()
                    .map_err(ferr("inspecting", &src))?
                    .is_dir();
                if src_is_dir && dst_meta.file_type().is_dir() {
                    merge_into(&src, &dst, &rel_child, report)?;
                    // Empty once everything moved; left in place (with its conflicts) if not.
                    match std::fs::remove_dir(&src) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
                        Err(e) => return Err(ferr("removing", &src)(e)),
                    }
                } else {
                    report.conflicts.push(rel_child);
                }
            }
        }
    }
    Ok(())
}

/// A name for the leftovers that is not taken yet.
fn free_name(top: &Path) -> Result<PathBuf, FlattenError> {
    for n in 1..1000 {
        let name = if n == 1 {
            LEFTOVERS.to_owned()
        } else {
            format!("{LEFTOVERS}-{n}")
        };
        let p = top.join(name);
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(ferr("inspecting", &p)(e)),
            Ok(_) => {}
        }
    }
    Err(FlattenError {
        step: "finding a free name for the leftovers in",
        path: top.to_owned(),
        source: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn write(p: &Path, body: &str, mode: u32) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_disk_without_a_nested_home_is_left_alone() {
        let top = tempfile::tempdir().unwrap();
        write(&top.path().join(".bashrc"), "top", 0o644);
        let r = flatten_nested_home(top.path()).unwrap();
        assert_eq!(r, FlattenReport::default());
        // A *file* named root is the user's, not the stale layout.
        write(&top.path().join("root"), "mine", 0o600);
        assert!(!flatten_nested_home(top.path()).unwrap().found);
        assert!(top.path().join("root").is_file());
    }

    #[test]
    fn the_nested_home_moves_up_with_owners_and_modes() {
        let top = tempfile::tempdir().unwrap();
        let t = top.path();
        let nested = t.join("root");
        write(&nested.join(".profile"), "profile", 0o644);
        write(
            &nested.join(".ssh/authorized_keys"),
            "ssh-ed25519 AAAA key",
            0o600,
        );
        std::fs::set_permissions(nested.join(".ssh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::chown(nested.join(".ssh/authorized_keys"), Some(1000), Some(1000))
            .unwrap();
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o700)).unwrap();

        let r = flatten_nested_home(t).unwrap();
        assert!(r.found);
        assert_eq!(
            r.moved,
            vec![PathBuf::from(".profile"), PathBuf::from(".ssh")]
        );
        assert!(r.conflicts.is_empty() && r.leftovers.is_none());
        assert!(!nested.exists());
        assert_eq!(
            std::fs::read_to_string(t.join(".profile")).unwrap(),
            "profile"
        );
        let key = t.join(".ssh/authorized_keys");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::metadata(&key).unwrap().uid(), 1000);
        assert_eq!(mode(&t.join(".ssh")), 0o700);
    }

    /// The regression the Go version needed: the nested tree is root-owned and 0700 (and holds
    /// 0700 directories), and it overlaps the top level. Overlapping directories are merged,
    /// overlapping files keep the top-level copy, the nested copy is kept aside, and the nested
    /// layout is gone.
    #[test]
    fn an_overlapping_root_owned_0700_nested_home_is_merged_without_losing_anything() {
        let top = tempfile::tempdir().unwrap();
        let t = top.path();
        let nested = t.join("root");
        // Top level: what the guest has been using.
        write(&t.join(".bashrc"), "top bashrc", 0o644);
        write(&t.join(".ssh/known_hosts"), "host key", 0o644);
        std::fs::set_permissions(t.join(".ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Nested: the stale copy, locked down.
        write(&nested.join(".bashrc"), "nested bashrc", 0o600);
        write(&nested.join(".ssh/authorized_keys"), "key", 0o600);
        write(&nested.join("notes/todo.txt"), "todo", 0o600);
        for d in [nested.join(".ssh"), nested.join("notes"), nested.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
        }

        let r = flatten_nested_home(t).unwrap();
        assert!(r.found);
        assert_eq!(
            r.moved,
            vec![
                PathBuf::from(".ssh/authorized_keys"),
                PathBuf::from("notes")
            ]
        );
        assert_eq!(r.conflicts, vec![PathBuf::from(".bashrc")]);
        assert_eq!(r.leftovers, Some(PathBuf::from(LEFTOVERS)));

        assert!(!nested.exists(), "the nested layout is gone");
        assert_eq!(
            std::fs::read_to_string(t.join(".bashrc")).unwrap(),
            "top bashrc"
        );
        assert_eq!(
            std::fs::read_to_string(t.join(".ssh/known_hosts")).unwrap(),
            "host key"
        );
        assert_eq!(
            std::fs::read_to_string(t.join(".ssh/authorized_keys")).unwrap(),
            "key"
        );
        assert_eq!(mode(&t.join(".ssh/authorized_keys")), 0o600);
        assert_eq!(
            mode(&t.join(".ssh")),
            0o755,
            "the top-level directory keeps its mode"
        );
        assert_eq!(
            std::fs::read_to_string(t.join("notes/todo.txt")).unwrap(),
            "todo"
        );
        assert_eq!(mode(&t.join("notes")), 0o700);
        assert_eq!(
            std::fs::read_to_string(t.join(LEFTOVERS).join(".bashrc")).unwrap(),
            "nested bashrc",
            "the shadowed nested file is kept"
        );
        // Running again finds nothing to do.
        assert!(!flatten_nested_home(t).unwrap().found);
    }
}
