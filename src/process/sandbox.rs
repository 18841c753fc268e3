//! How FFmpeg is started: as an unprivileged user when the server runs as root, with the data
//! directory as its working directory.
//!
//! The address rules in [`super::access`] cannot foresee every FFmpeg option that opens a file,
//! so the account FFmpeg runs under is the wall behind them: with the server as root, a process
//! definition must not be able to read `/etc/shadow` or write `/etc/cron.d`.
//!
//! Where the kernel has Landlock, FFmpeg is also confined: it may read system directories and
//! the data directory (plus `ffmpeg.read_paths`), and write only the public and `webrtc`
//! directories and devices. That holds whatever option or filter a definition found to open a
//! file, and whatever user FFmpeg runs as.
//!
//! The data directory may sit under a directory the FFmpeg user cannot enter (`/root/...`). The
//! child therefore changes into it while still root and is handed paths inside it relative to it,
//! so it never needs to walk the parents.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetError, RulesetStatus, ABI,
};
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};

/// The account and directory FFmpeg children get.
#[derive(Debug, Clone)]
pub struct Sandbox {
    data_dir: PathBuf,
    data_dir_c: CString,
    account: Option<(Uid, Gid)>,
    confinement: Option<Confinement>,
}

/// What a Landlock-confined FFmpeg may touch.
#[derive(Debug, Clone)]
struct Confinement {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
}

/// System directories FFmpeg reads: libraries, its own data, configuration (DNS, TLS roots,
/// fonts), and the kernel's views of processes and devices.
const SYSTEM_READ: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/run", "/proc", "/sys",
];

/// Devices: /dev/null for `-f null -`, render nodes and GPUs for hardware codecs, capture cards.
const SYSTEM_WRITE: &[&str] = &["/dev"];

/// The Landlock ABI the rules are written for; older kernels enforce what they know (best effort).
const LANDLOCK_ABI: ABI = ABI::V5;

/// Options of [`Sandbox::new`].
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions<'a> {
    /// `ffmpeg.user`.
    pub user: &'a str,
    /// Confine with Landlock (`ffmpeg.sandbox`).
    pub confine: bool,
    /// Directories FFmpeg writes into (the public and `webrtc` directories).
    pub writable: &'a [PathBuf],
    /// More directories FFmpeg may read (`ffmpeg.read_paths`).
    pub readable: &'a [PathBuf],
}

impl Sandbox {
    /// For FFmpeg children working in `data_dir`. `user` is taken only when the server runs as
    /// root; then `writable` (directories FFmpeg writes into) are handed to that user and the data
    /// directory is made enterable (not listable) by it.
    pub fn new(data_dir: &Path, options: &SandboxOptions) -> anyhow::Result<Sandbox> {
        let (user, writable) = (options.user, options.writable);
        let data_dir = data_dir.canonicalize()?;
        let account = if Uid::effective().is_root() && !user.is_empty() {
            let found = User::from_name(user)
                .with_context(|| format!("cannot look up ffmpeg.user {user:?}"))?
                .with_context(|| {
                    format!("ffmpeg.user {user:?} does not exist (create it, or set another unprivileged user)")
                })?;
            if found.uid.is_root() {
                None
            } else {
                Some((found.uid, found.gid))
            }
        } else {
            None
        };
        if let Some((uid, gid)) = account {
            prepare(&data_dir, writable, uid, gid)?;
            tracing::info!(
                user,
                uid = uid.as_raw(),
                "ffmpeg runs as an unprivileged user"
            );
        } else if Uid::effective().is_root() {
            tracing::warn!("ffmpeg.user is empty: FFmpeg runs as root and can reach every file");
        }
        let confinement = options.confine.then(|| Confinement {
            read: SYSTEM_READ
                .iter()
                .map(PathBuf::from)
                .chain([data_dir.clone()])
                .chain(options.readable.iter().cloned())
                .collect(),
            write: SYSTEM_WRITE
                .iter()
                .map(PathBuf::from)
                .chain(writable.iter().cloned())
                .collect(),
        });
        if let Some(confinement) = &confinement {
            match confinement.probe() {
                Ok(RulesetStatus::FullyEnforced) => {
                    tracing::info!("ffmpeg is confined by Landlock")
                }
                Ok(status) => {
                    tracing::warn!(
                        ?status,
                        "this kernel enforces Landlock only in part, or not at all"
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Landlock is not available; ffmpeg runs unconfined")
                }
            }
        }
        Ok(Sandbox {
            data_dir_c: CString::new(data_dir.as_os_str().as_bytes())
                .context("the data directory path contains a NUL byte")?,
            data_dir,
            account,
            confinement,
        })
    }

    /// A command for `binary` with `args` (paths inside the data directory made relative to it)
    /// that starts in the data directory as the FFmpeg user and dies with the server.
    pub fn command(&self, binary: &Path, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(binary);
        command.args(args.iter().map(|a| relativize(a, &self.data_dir)));
        // The server's settings (credentials, the JWT secret) may come from the environment;
        // FFmpeg's account can read its own /proc/<pid>/environ, so they stay out of it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STREAMCORE_") {
                command.env_remove(name);
            }
        }
        let dir = self.data_dir_c.clone();
        let account = self.account;
        // Built here, before the fork: opening the rule paths allocates.
        let mut ruleset = match self.confinement.as_ref().map(Confinement::ruleset) {
            Some(Ok(ruleset)) => Some(ruleset),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot build the Landlock rules; ffmpeg runs unconfined");
                None
            }
            None => None,
        };
        // SAFETY: only system calls on memory prepared before the fork; restrict_self allocates
        // nothing on success and its failure ends the child before exec.
        unsafe {
            command.pre_exec(move || {
                enter(&dir, account)?;
                if let Some(ruleset) = ruleset.take() {
                    ruleset
                        .restrict_self()
                        .map_err(|_| std::io::Error::from_raw_os_error(libc::EPERM))?;
                }
                Ok(())
            });
        }
        command
    }
}

impl Confinement {
    fn ruleset(&self) -> Result<RulesetCreated, RulesetError> {
        let abi = LANDLOCK_ABI;
        Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .create()?
            .add_rules(path_beneath_rules(&self.read, AccessFs::from_read(abi)))?
            .add_rules(path_beneath_rules(&self.write, AccessFs::from_all(abi)))
    }

    /// Restricts a throwaway thread (Landlock applies per thread) to learn what this kernel
    /// enforces, so the log says it once at start.
    fn probe(&self) -> Result<RulesetStatus, String> {
        let ruleset = self.ruleset().map_err(|e| e.to_string())?;
        std::thread::spawn(move || ruleset.restrict_self().map(|s| s.ruleset))
            .join()
            .map_err(|_| "the probe thread panicked".to_string())?
            .map_err(|e| e.to_string())
    }
}

/// Runs in the forked child before exec.
fn enter(dir: &CString, account: Option<(Uid, Gid)>) -> std::io::Result<()> {
    // The kernel kills FFmpeg if the server dies (even by SIGKILL), so a restarted server never
    // finds orphans still writing its outputs.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
    // SAFETY: plain system calls with valid pointers.
    unsafe {
        if libc::chdir(dir.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some((uid, gid)) = account {
            let groups = [gid.as_raw()];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid.as_raw()) != 0
                || libc::setuid(uid.as_raw()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Switching uid clears the death signal; set it again for the new identity.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Lets `uid` enter the data directory and own the directories it writes into; the server's own
/// files (database, JWT secret) keep mode 0600 and stay unreadable to it.
fn prepare(data_dir: &Path, writable: &[PathBuf], uid: Uid, gid: Gid) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data_dir)?.permissions().mode();
    // Search permission only: the FFmpeg user may open paths inside, but not list the directory.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode | 0o001))?;
    for dir in writable {
        std::fs::create_dir_all(dir)?;
        chown_tree(dir, uid, gid)
            .with_context(|| format!("cannot hand {} to the ffmpeg user", dir.display()))?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.uid() != uid.as_raw() {
        nix::unistd::chown(path, Some(uid), Some(gid))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Rewrites paths inside `data_dir` (alone, after `file:`, or as a `tee` leg) relative to it.
fn relativize(arg: &str, data_dir: &Path) -> String {
    let Some(prefix) = data_dir.to_str() else {
        return arg.to_string();
    };
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() || !arg.contains(prefix) {
        return arg.to_string();
    }
    arg.split('|')
        .map(|leg| {
            let (options, rest) = match leg.strip_prefix('[').and_then(|r| r.find(']')) {
                Some(i) => leg.split_at(i + 2),
                None => ("", leg),
            };
            let (scheme, path) = match rest.strip_prefix("file:") {
                Some(path) => ("file:", path),
                None => ("", rest),
            };
            let relative = if path == prefix {
                Some(".".to_string())
            } else {
                path.strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(|r| format!("./{r}"))
            };
            match relative {
                Some(relative) => format!("{options}{scheme}{relative}"),
                None => leg.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_data_directory_become_relative() {
        let dir = Path::new("/srv/data");
        assert_eq!(
            relativize("/srv/data/public/x.m3u8", dir),
            "./public/x.m3u8"
        );
        assert_eq!(relativize("file:/srv/data/a.mp4", dir), "file:./a.mp4");
        assert_eq!(
            relativize(
                "[f=hls]/srv/data/public/a.m3u8|[f=flv]rtmp://h/srv/data",
                dir
            ),
            "[f=hls]./public/a.m3u8|[f=flv]rtmp://h/srv/data"
        );
        assert_eq!(
            relativize("http://h/srv/data/x", dir),
            "http://h/srv/data/x"
        );
        assert_eq!(relativize("/srv/database", dir), "/srv/database");
        assert_eq!(relativize("-c:v", dir), "-c:v");
    }
}
