//! Reading an ext4 image without mounting it: `debugfs -R` (read-only) from e2fsprogs.

use std::path::Path;
use std::process::Command;

/// What kind of inode a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// What `debugfs stat` says about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The inode kind.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// A symlink's target.
    pub link_target: Option<String>,
}

/// An ext4 image file read through debugfs.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a>(pub &'a Path);

/// debugfs could not be run or refused the image.
#[derive(Debug, thiserror::Error)]
#[error("reading {image} with debugfs: {message}")]
pub struct DebugfsError {
    /// The image.
    pub image: String,
    /// What went wrong.
    pub message: String,
}

impl Image<'_> {
    fn run(&self, request: &str) -> Result<(String, String), DebugfsError> {
        let err = |message: String| DebugfsError {
            image: self.0.display().to_string(),
            message,
        };
        let debugfs = crate::spec::find_in_path("debugfs")
            .ok_or_else(|| err("debugfs is not installed (apt-get install e2fsprogs)".into()))?;
        let out = Command::new(debugfs)
            .arg("-R")
            .arg(request)
            .arg(self.0)
            .output()
            .map_err(|e| err(e.to_string()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || stderr.contains("Bad magic number") {
            return Err(err(stderr.trim().to_owned()));
        }
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
    }

    /// Checks that debugfs can open the image at all.
    pub fn open(&self) -> Result<(), DebugfsError> {
        let (_, stderr) = self.run("stats -h")?;
        if stderr.contains("while trying to open") || stderr.contains("while opening") {
            return Err(DebugfsError {
                image: self.0.display().to_string(),
                message: stderr.trim().to_owned(),
            });
        }
        Ok(())
    }

    /// The inode at `path`, without following a final symlink; `None` when it does not exist.
    pub fn stat(&self, path: &str) -> Result<Option<Stat>, DebugfsError> {
        let (out, _) = self.run(&format!("stat \"{path}\""))?;
        Ok(parse_stat(&out))
    }

    /// The contents of the regular file at `path`; `None` when it does not exist or is not a
    /// regular file.
    pub fn read(&self, path: &str) -> Result<Option<String>, DebugfsError> {
        match self.stat(path)? {
            Some(s) if s.kind == Kind::Regular => {
                let (out, _) = self.run(&format!("cat \"{path}\""))?;
                Ok(Some(out))
            }
            _ => Ok(None),
        }
    }

    /// The names in the directory `path` (without `.` and `..`); `None` when it is not one.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>, DebugfsError> {
        match self.stat(path)? {
            Some(s) if s.kind == Kind::Directory => {
                let (out, _) = self.run(&format!("ls -p \"{path}\""))?;
                Ok(Some(parse_ls(&out)))
            }
            _ => Ok(None),
        }
    }
}

/// Parses `debugfs stat` output.
pub(crate) fn parse_stat(out: &str) -> Option<Stat> {
    let first = out.lines().find(|l| l.contains("Type:"))?;
    let field = |name: &str| {
        first
            .split(name)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    let kind = match field("Type:")?.as_str() {
        "regular" => Kind::Regular,
        "directory" => Kind::Directory,
        "symlink" => Kind::Symlink,
        _ => Kind::Other,
    };
    let mode = u32::from_str_radix(&field("Mode:")?, 8).ok()?;
    let link_target = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fast link dest: "))
        .map(|t| t.trim().trim_matches('"').to_owned());
    Some(Stat {
        kind,
        mode,
        link_target,
    })
}

/// Parses `debugfs ls -p` output: `/inode/mode/uid/gid/name/size/` per entry.
pub(crate) fn parse_ls(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().split('/').nth(5).map(str::to_owned))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_output_is_parsed() {
        let out = "Inode: 12   Type: regular    Mode:  0755   Flags: 0x80000\n\
                   Generation: 1    Version: 0x00000000:00000001\n";
        assert_eq!(
            parse_stat(out),
            Some(Stat {
                kind: Kind::Regular,
                mode: 0o755,
                link_target: None
            })
        );
        let link = "Inode: 40   Type: symlink    Mode:  0777   Flags: 0x0\n\
                    Fast link dest: \"/etc/systemd/system/banger-agent.service\"\n";
        let s = parse_stat(link).unwrap();
        assert_eq!(s.kind, Kind::Symlink);
        assert_eq!(
            s.link_target.as_deref(),
            Some("/etc/systemd/system/banger-agent.service")
        );
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn ls_output_is_parsed() {
        let out = "/2/040755/0/0/./\n/2/040755/0/0/../\n/12/100644/0/0/a.conf/10/\n\n";
        assert_eq!(parse_ls(out), vec!["a.conf".to_owned()]);
    }

    #[test]
    fn a_real_image_is_read_without_mounting_it() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc/d")).unwrap();
        std::fs::write(tree.join("etc/hello"), "hi\n").unwrap();
        std::fs::write(tree.join("etc/d/x.conf"), "").unwrap();
        std::os::unix::fs::symlink("/etc/hello", tree.join("etc/link")).unwrap();
        let img = dir.path().join("img.ext4");
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("8M")
            .status();
        if !made.is_ok_and(|s| s.success()) {
            banger_testkit::skip("mkfs.ext4 (e2fsprogs) is not installed");
            return;
        }
        let image = Image(&img);
        image.open().unwrap();
        assert_eq!(image.read("/etc/hello").unwrap().as_deref(), Some("hi\n"));
        assert_eq!(image.read("/etc/missing").unwrap(), None);
        assert_eq!(image.read("/etc").unwrap(), None);
        assert_eq!(
            image.list("/etc/d").unwrap(),
            Some(vec!["x.conf".to_owned()])
        );
        let l = image.stat("/etc/link").unwrap().unwrap();
        assert_eq!(l.kind, Kind::Symlink);
        assert_eq!(l.link_target.as_deref(), Some("/etc/hello"));
        let not_ext4 = dir.path().join("junk");
        std::fs::write(&not_ext4, vec![0u8; 65536]).unwrap();
        assert!(Image(&not_ext4).open().is_err());
    }
}
