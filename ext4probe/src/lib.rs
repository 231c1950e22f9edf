//! Small questions about an ext4 image, answered from its on-disk structures: whether it holds
//! a regular file at a path (fcsim: does the root drive hold the agent?) and which directories
//! are at its top (stord: does a work disk hold a stale nested `/root/root`?).
//!
//! Both were asked of `debugfs`, a process (and its opening of the whole file system) per
//! question, which every boot paid and 100 guests booting at once paid 100 times; this reads
//! the same answers in a few small reads: the superblock, the group descriptor and inode of
//! each directory on the path, and that directory's blocks.
//!
//! Only the common layout is read: a revision-1 superblock with the `filetype` feature,
//! directories held in an extent tree or in the twelve direct block pointers of an ext2/3-style
//! inode. Anything else (inline data, encryption, case folding, `meta_bg`, a symbolic link on
//! the path, a malformed entry) is `None`: the caller then asks `debugfs`, so an unusual image
//! is still answered correctly, only more slowly. Like `debugfs`, it reads the image as it is on
//! disk (no journal replay). The callers' tests check the answers against `debugfs` on the
//! layouts `mkfs.ext4` makes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// Where the superblock starts.
const SUPERBLOCK_AT: u64 = 1024;
/// `s_magic`.
const EXT4_MAGIC: u16 = 0xEF53;
/// `INCOMPAT_FILETYPE`: directory entries carry the file type.
const INCOMPAT_FILETYPE: u32 = 0x2;
/// `INCOMPAT_META_BG`: group descriptors are spread over the disk.
const INCOMPAT_META_BG: u32 = 0x10;
/// `INCOMPAT_64BIT`: block numbers and descriptors are 64-bit.
const INCOMPAT_64BIT: u32 = 0x80;
/// `INCOMPAT_INLINE_DATA`, `INCOMPAT_ENCRYPT`, `INCOMPAT_CASEFOLD`: layouts not read here.
const INCOMPAT_UNREAD: u32 = 0x8000 | 0x1_0000 | 0x2_0000;
/// The root directory's inode number.
const ROOT_INODE: u32 = 2;
/// `S_IFMT` and `S_IFDIR`.
const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;
/// `EXT4_EXTENTS_FL`, `EXT4_INLINE_DATA_FL` (inode flags).
const EXTENTS_FL: u32 = 0x8_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// The extent header's magic.
const EXTENT_MAGIC: u16 = 0xF30A;
/// An extent longer than this is uninitialised (reads as zeros: no entries).
const EXTENT_INIT_MAX: u16 = 32_768;
/// Directory entry file types.
const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;
/// The largest directory read.
const MAX_DIR_BYTES: u64 = 16 << 20;
/// How deep an extent tree may be (ext4 itself allows 5).
const MAX_EXTENT_DEPTH: u16 = 5;

/// Whether the ext4 file system in `image` has a regular file at the absolute `path`; `None`
/// when the image or the path goes through a layout this module does not read (see the module
/// doc), or it cannot be read.
pub fn regular_file_at(image: &Path, path: &str) -> Option<bool> {
    let file = File::open(image).ok()?;
    let fs = Fs::open(&file).ok()??;
    let mut dir = ROOT_INODE;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(name) = parts.next() {
        let last = parts.peek().is_none();
        let Some((inode, file_type)) = fs.lookup(dir, name.as_bytes()).ok()?? else {
            return Some(false);
        };
        match (last, file_type) {
            (true, FT_REG) => return Some(true),
            (false, FT_DIR) => dir = inode,
            // A link is followed by debugfs on the way, and reported as a link at the end:
            // leave both to it.
            (_, 7) => return None,
            _ => return Some(false),
        }
    }
    Some(false)
}

/// The names of the directories at the top of the ext4 file system in `image` (without `.`
/// and `..`, in on-disk order); `None` when its layout is not one this crate reads, or it
/// cannot be read.
pub fn top_level_dirs(image: &Path) -> Option<Vec<String>> {
    let file = File::open(image).ok()?;
    let fs = Fs::open(&file).ok()??;
    let mut dirs = Vec::new();
    for block in fs.dir_blocks(ROOT_INODE).ok()?? {
        for (_, file_type, name) in entries(&block)? {
            if file_type == FT_DIR && name != b"." && name != b".." {
                dirs.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Some(dirs)
}

/// The geometry of an open file system.
struct Fs<'a> {
    f: &'a File,
    block_size: u64,
    inodes_per_group: u64,
    inode_size: u64,
    first_data_block: u64,
    wide: bool,
    desc_size: u64,
}

impl<'a> Fs<'a> {
    /// Reads the superblock; `None` for a layout not read here.
    fn open(f: &'a File) -> io::Result<Option<Self>> {
        let sb = read_at(f, SUPERBLOCK_AT, 1024)?;
        if le16(&sb, 0x38) != EXT4_MAGIC || le32(&sb, 0x4C) < 1 {
            return Ok(None);
        }
        let incompat = le32(&sb, 0x60);
        if incompat & INCOMPAT_FILETYPE == 0 || incompat & (INCOMPAT_META_BG | INCOMPAT_UNREAD) != 0
        {
            return Ok(None);
        }
        let log_block = le32(&sb, 0x18);
        let inodes_per_group = u64::from(le32(&sb, 0x28));
        let inode_size = u64::from(le16(&sb, 0x58));
        if log_block > 6 || inodes_per_group == 0 || inode_size < 128 {
            return Ok(None);
        }
        let wide = incompat & INCOMPAT_64BIT != 0;
        let desc_size = if wide { u64::from(le16(&sb, 0xFE)) } else { 32 };
        if desc_size < 32 {
            return Ok(None);
        }
        Ok(Some(Self {
            f,
            block_size: 1024u64 << log_block,
            inodes_per_group,
            inode_size,
            first_data_block: u64::from(le32(&sb, 0x14)),
            wide,
            desc_size,
        }))
    }

    /// The first 128 bytes of inode `n`.
    fn inode(&self, n: u32) -> io::Result<Vec<u8>> {
        let index = u64::from(n.saturating_sub(1));
        let (group, slot) = (index / self.inodes_per_group, index % self.inodes_per_group);
        let desc_at = (self.first_data_block + 1) * self.block_size + group * self.desc_size;
        let desc = read_at(self.f, desc_at, self.desc_size)?;
        let mut table = u64::from(le32(&desc, 0x08));
        if self.wide && self.desc_size >= 64 {
            table |= u64::from(le32(&desc, 0x28)) << 32;
        }
        read_at(
            self.f,
            table * self.block_size + slot * self.inode_size,
            128,
        )
    }

    /// The entry `name` of directory inode `dir`: its inode and file type; `Ok(None)` (inside)
    /// when absent, `None` (outside) for a layout not read here.
    fn lookup(&self, dir: u32, name: &[u8]) -> io::Result<Option<Option<(u32, u8)>>> {
        let Some(blocks) = self.dir_blocks(dir)? else {
            return Ok(None);
        };
        for block in blocks {
            let Some(found) = entries(&block) else {
                return Ok(None);
            };
            if let Some((inode, file_type, _)) = found.into_iter().find(|e| e.2 == name) {
                return Ok(Some(Some((inode, file_type))));
            }
        }
        Ok(Some(None))
    }

    /// The data blocks of directory inode `dir`, read; `None` for a layout not read here.
    fn dir_blocks(&self, dir: u32) -> io::Result<Option<Vec<Vec<u8>>>> {
        let inode = self.inode(dir)?;
        let flags = le32(&inode, 0x20);
        if le16(&inode, 0x00) & S_IFMT != S_IFDIR || flags & INLINE_DATA_FL != 0 {
            return Ok(None);
        }
        let size = u64::from(le32(&inode, 0x04)) | (u64::from(le32(&inode, 0x6C)) << 32);
        if size > MAX_DIR_BYTES {
            return Ok(None);
        }
        let count = size.div_ceil(self.block_size);
        let Some(blocks) = self.blocks(&inode[0x28..0x28 + 60], flags, count) else {
            return Ok(None);
        };
        blocks
            .into_iter()
            .map(|b| read_at(self.f, b * self.block_size, self.block_size))
            .collect::<io::Result<Vec<_>>>()
            .map(Some)
    }

    /// The physical blocks of the first `count` logical blocks of an inode with `i_block` and
    /// `flags`; `None` for a layout not read here.
    fn blocks(&self, i_block: &[u8], flags: u32, count: u64) -> Option<Vec<u64>> {
        if flags & EXTENTS_FL == 0 {
            if count > 12 {
                return None;
            }
            let n = usize::try_from(count).ok()?;
            return Some(
                (0..n)
                    .map(|i| u64::from(le32(i_block, i * 4)))
                    .filter(|&b| b != 0)
                    .collect(),
            );
        }
        let mut blocks = Vec::new();
        self.walk(i_block, MAX_EXTENT_DEPTH, count, &mut blocks)
            .ok()?
            .then_some(blocks)
    }

    /// Adds the blocks under the extent node `node` (header and entries) that hold the first
    /// `count` logical blocks to `blocks`; `false` when the tree is malformed.
    fn walk(
        &self,
        node: &[u8],
        depth_left: u16,
        count: u64,
        blocks: &mut Vec<u64>,
    ) -> io::Result<bool> {
        if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC {
            return Ok(false);
        }
        let depth = le16(node, 6);
        if depth > depth_left {
            return Ok(false);
        }
        let entries = usize::from(le16(node, 2)).min((node.len() - 12) / 12);
        for e in 0..entries {
            let at = 12 + e * 12;
            if depth > 0 {
                // An index entry: ei_block, ei_leaf_lo, ei_leaf_hi.
                let mut leaf = u64::from(le32(node, at + 4));
                if self.wide {
                    leaf |= u64::from(le16(node, at + 8)) << 32;
                }
                let child = read_at(self.f, leaf * self.block_size, self.block_size)?;
                if !self.walk(&child, depth - 1, count, blocks)? {
                    return Ok(false);
                }
                continue;
            }
            let logical = u64::from(le32(node, at));
            let len = le16(node, at + 4);
            if len > EXTENT_INIT_MAX {
                continue;
            }
            let mut start = u64::from(le32(node, at + 8));
            if self.wide {
                start |= u64::from(le16(node, at + 6)) << 32;
            }
            blocks.extend(
                (0..u64::from(len))
                    .filter(|i| logical + i < count)
                    .map(|i| start + i),
            );
        }
        Ok(true)
    }
}

/// The live entries of one directory block: inode, file type, name; `None` when an entry is
/// malformed.
fn entries(block: &[u8]) -> Option<Vec<(u32, u8, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= block.len() {
        let inode = le32(block, at);
        let rec_len = usize::from(le16(block, at + 4));
        let name_len = usize::from(block[at + 6]);
        if rec_len < 8 || at + rec_len > block.len() || 8 + name_len > rec_len {
            return None;
        }
        if inode != 0 {
            out.push((inode, block[at + 7], &block[at + 8..at + 8 + name_len]));
        }
        at += rec_len;
    }
    Some(out)
}

fn read_at(f: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_ext4_is_not_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let junk = tmp.path().join("junk");
        std::fs::write(&junk, vec![0u8; 8192]).unwrap();
        assert_eq!(top_level_dirs(&junk), None);
        assert_eq!(regular_file_at(&junk, "/bin/sh"), None);
        assert_eq!(top_level_dirs(&tmp.path().join("missing")), None);
        std::fs::write(&junk, b"short").unwrap();
        assert_eq!(top_level_dirs(&junk), None);
        assert_eq!(regular_file_at(&junk, "/bin/sh"), None);
    }

    #[test]
    fn a_block_with_a_malformed_entry_is_not_read() {
        // rec_len 4: shorter than an entry's header.
        let mut block = vec![0u8; 16];
        block[0] = 12;
        block[4] = 4;
        assert!(entries(&block).is_none());
        // One live entry "ab" (inode 12, a directory) filling the block, then nothing.
        let mut block = vec![0u8; 16];
        block[0] = 12;
        block[4] = 16;
        block[6] = 2;
        block[7] = FT_DIR;
        block[8..10].copy_from_slice(b"ab");
        assert_eq!(entries(&block), Some(vec![(12, FT_DIR, &b"ab"[..])]));
    }
}
