//! The file systems processes write to and the HTTP layer serves: `disk` (the public directory)
//! and `mem` (in memory, mounted at `/memfs`), with datarhei's cleanup rules. Nothing here knows
//! about HTTP; names are absolute (`/dir/file`) inside each file system and never leave it.

pub mod cleanup;
pub mod disk;
pub mod glob;
pub mod mem;

use std::sync::Arc;
use std::time::SystemTime;

/// One file as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute name inside its file system (`/dir/file`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The name is not a file name inside the file system.
    #[error("{0}")]
    BadPath(String),
    /// The file is larger than one write may be, or than the whole file system.
    #[error("file is too big (at most {0} bytes)")]
    TooBig(u64),
    /// The file system is full and may not purge.
    #[error("not enough space on device")]
    Full,
    /// The disk failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which file system a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The public directory.
    Disk,
    /// The in-memory file system.
    Mem,
}

impl Kind {
    /// `disk`/`mem`, and datarhei's legacy `diskfs`/`memfs`.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "disk" | "diskfs" => Some(Kind::Disk),
            "mem" | "memfs" => Some(Kind::Mem),
            _ => None,
        }
    }
}

/// Both file systems.
#[derive(Debug, Clone)]
pub struct Filesystems {
    /// The public directory.
    pub disk: Arc<disk::DiskFs>,
    /// The in-memory file system.
    pub mem: Arc<mem::MemFs>,
}

impl Filesystems {
    /// Files of `kind` matching `pattern` (all when `None`). Blocking for `disk`.
    pub fn list(&self, kind: Kind, pattern: Option<&glob::Pattern>) -> Vec<FileInfo> {
        match kind {
            Kind::Disk => self.disk.list(pattern),
            Kind::Mem => self.mem.list(pattern),
        }
    }

    /// Deletes a file; its size, or `None` when there was none. Blocking for `disk`.
    pub fn remove(&self, kind: Kind, name: &str) -> Option<u64> {
        match kind {
            Kind::Disk => self.disk.remove(name),
            Kind::Mem => self.mem.remove(name),
        }
    }
}

/// A request path as a name inside a file system: `/`-rooted, without empty or `.` segments.
/// `..`, NUL and backslashes are refused rather than folded, so no spelling of a name can
/// reach outside the file system or mean different files on different layers.
pub fn clean_name(path: &str) -> Result<String, WriteError> {
    let mut out = String::with_capacity(path.len() + 1);
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                return Err(WriteError::BadPath(
                    "'..' is not allowed in a file name".into(),
                ))
            }
            s if s.contains(['\0', '\\']) => {
                return Err(WriteError::BadPath(
                    "NUL and '\\' are not allowed in a file name".into(),
                ))
            }
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() {
        return Err(WriteError::BadPath("a file name is needed".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside() {
        assert_eq!(clean_name("a/b.ts").unwrap(), "/a/b.ts");
        assert_eq!(clean_name("//a/./b.ts").unwrap(), "/a/b.ts");
        assert_eq!(clean_name("/etc/passwd").unwrap(), "/etc/passwd");
        for bad in ["../x", "a/../../x", "a/..", "", "/", "a\\..\\x", "a\0b"] {
            assert!(clean_name(bad).is_err(), "{bad:?}");
        }
    }
}
