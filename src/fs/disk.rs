//! The public directory as a file system: names map to files under its root and never out of
//! it, neither by `..` (refused by [`super::clean_name`]) nor by symbolic links (a name whose
//! real path leaves the root is treated as absent, and writes never go through a link).
//! Every call blocks; the HTTP layer runs them off the async workers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{glob::Pattern, FileInfo, WriteError};

/// The public directory.
#[derive(Debug)]
pub struct DiskFs {
    root: PathBuf,
}

impl DiskFs {
    /// `root` must exist; it is canonicalised so that links cannot move it later.
    pub fn new(root: &Path) -> std::io::Result<DiskFs> {
        Ok(DiskFs {
            root: root.canonicalize()?,
        })
    }

    fn joined(&self, name: &str) -> PathBuf {
        self.root.join(name.trim_start_matches('/'))
    }

    /// The real path of an existing file named `name`, if it is inside the root.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let real = self.joined(name).canonicalize().ok()?;
        (real.starts_with(&self.root) && real.is_file()).then_some(real)
    }

    /// Deletes a file (not a directory); its size, or `None` when there was none.
    pub fn remove(&self, name: &str) -> Option<u64> {
        let path = self.joined(name);
        // The link itself is removed, never its target; its directory must be inside.
        let parent = path.parent()?.canonicalize().ok()?;
        if !parent.starts_with(&self.root) {
            return None;
        }
        let meta = fs::symlink_metadata(&path).ok()?;
        if meta.is_dir() {
            return None;
        }
        fs::remove_file(&path).ok()?;
        Some(meta.len())
    }

    /// Starts writing `name`: a temporary file next to it, renamed over it by
    /// [`Upload::commit`]. Missing directories are created, but only under a real directory
    /// inside the root.
    pub fn create(&self, name: &str) -> Result<Upload, WriteError> {
        let path = self.joined(name);
        let parent = path
            .parent()
            .ok_or_else(|| WriteError::BadPath("a file name is needed".into()))?;
        let mut existing = parent.to_path_buf();
        while !existing.exists() {
            if !existing.pop() {
                break;
            }
        }
        let real = existing.canonicalize()?;
        if !real.starts_with(&self.root) {
            return Err(WriteError::BadPath(
                "the name leads out of the file system".into(),
            ));
        }
        fs::create_dir_all(parent)?;
        if !parent.canonicalize()?.starts_with(&self.root) {
            return Err(WriteError::BadPath(
                "the name leads out of the file system".into(),
            ));
        }
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(WriteError::BadPath("the name is a directory".into()));
        }
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = parent.join(format!(
            ".{file_name}.{}.upload",
            uuid::Uuid::new_v4().simple()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok(Upload {
            file: Some(file),
            temp,
            path,
        })
    }

    /// Every regular file under the root matching `pattern` (all when `None`), by name. Links
    /// are not followed.
    pub fn list(&self, pattern: Option<&Pattern>) -> Vec<FileInfo> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let path = entry.path();
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let upload = entry.file_name().to_string_lossy().ends_with(".upload");
                if !meta.is_file() || upload {
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let name = format!("/{}", rel.to_string_lossy());
                if pattern.is_none_or(|p| p.matches(&name)) {
                    out.push(FileInfo {
                        name,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// A file being written; dropped without [`Upload::commit`], it leaves nothing behind.
#[derive(Debug)]
pub struct Upload {
    file: Option<fs::File>,
    temp: PathBuf,
    path: PathBuf,
}

impl Upload {
    /// Appends a chunk.
    pub fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(chunk),
            None => Err(std::io::Error::other("upload already committed")),
        }
    }

    /// Puts the file in place; `true` when there was none before.
    pub fn commit(mut self) -> std::io::Result<bool> {
        if let Some(file) = self.file.take() {
            file.sync_data()?;
        }
        let created = fs::symlink_metadata(&self.path).is_err();
        fs::rename(&self.temp, &self.path)?;
        Ok(created)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(fs: &DiskFs, name: &str, data: &[u8]) -> Result<bool, WriteError> {
        let mut upload = fs.create(name)?;
        upload.write(data)?;
        Ok(upload.commit()?)
    }

    #[test]
    fn write_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let fs = DiskFs::new(dir.path()).unwrap();
        assert!(put(&fs, "/a/b/c.txt", b"hello").unwrap());
        assert!(!put(&fs, "/a/b/c.txt", b"hello!").unwrap());
        let listed = fs.list(Some(&Pattern::new("/a/**").unwrap()));
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].size), ("/a/b/c.txt", 6));
        assert!(fs.file("/a/b/c.txt").is_some());
        assert_eq!(fs.remove("/a/b/c.txt"), Some(6));
        assert_eq!(fs.remove("/a/b/c.txt"), None);
        // An abandoned upload leaves no file.
        drop(fs.create("/x.txt").unwrap());
        assert!(fs.list(None).is_empty());
    }

    #[test]
    fn links_do_not_lead_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fs = DiskFs::new(dir.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join("secret-link"),
        )
        .unwrap();
        assert!(fs.file("/out/secret").is_none());
        assert!(fs.file("/secret-link").is_none());
        assert!(matches!(
            fs.create("/out/new.txt"),
            Err(WriteError::BadPath(_))
        ));
        assert!(matches!(
            fs.create("/out/deeper/new.txt"),
            Err(WriteError::BadPath(_))
        ));
        assert_eq!(fs.remove("/out/secret"), None);
        assert!(outside.path().join("secret").exists());
        // Writing over a link replaces the link, not its target.
        put(&fs, "/secret-link", b"mine").unwrap();
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
        assert!(fs.list(None).iter().all(|f| !f.name.starts_with("/out")));
    }
}
