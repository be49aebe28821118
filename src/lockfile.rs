//! Exclusive lock files held for the life of the process (main thread): `ipush.lock` in an
//! embedded `--data_dir` and the `--pid_file`, so a second server on the same directory or pid
//! file is refused instead of silently sharing it.
//!
//! The lock is `flock(LOCK_EX | LOCK_NB)` on the open file: the kernel drops it when the process
//! ends, however it ends (a `kill -9` leaves no stale lock, only a stale file). The holder's pid
//! is written into the file once the server is ready; a refused server names the holder from
//! `/proc/locks` (which is right even while the holder is still starting) or else from the
//! file. Acquiring never truncates or rewrites the file, so a refused start changes nothing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a lock file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is locked by another running process ({})", .path.display(), holder_text(*.pid))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when it could be found.
        pid: Option<u32>,
    },
    /// The file could not be opened or locked.
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("pid {p}"),
        None => "pid unknown".to_string(),
    }
}

/// A file locked exclusively until this value is dropped (or the process ends).
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Opens (creating it if missing, never truncating) and locks `path`.
    pub fn acquire(path: &Path) -> Result<LockFile, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = file
                    .metadata()
                    .ok()
                    .and_then(|m| flock_holder(m.ino()))
                    .or_else(|| pid_in(&mut file));
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            return Err(io(e));
        }
        Ok(LockFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Replaces the file's contents with this process's pid and a newline.
    pub fn write_pid(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file
            .write_all(format!("{}\n", std::process::id()).as_bytes())
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid written in the file, if it holds one.
fn pid_in(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// The pid holding a `flock` on inode `ino`, from `/proc/locks`.
fn flock_holder(ino: u64) -> Option<u32> {
    parse_proc_locks(&std::fs::read_to_string("/proc/locks").ok()?, ino)
}

/// Finds the holder of a granted FLOCK on inode `ino` in `/proc/locks` text, lines like
/// `1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF` (waiters are marked `->` and skipped).
fn parse_proc_locks(text: &str, ino: u64) -> Option<u32> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            return None;
        }
        let file_ino: u64 = f[5].rsplit(':').next()?.parse().ok()?;
        (file_ino == ino).then(|| f[4].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines() {
        let text = "1: POSIX  ADVISORY  WRITE 11 00:19:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 99 00:2f:1234 0 EOF\n";
        assert_eq!(parse_proc_locks(text, 1234), Some(4242));
        assert_eq!(parse_proc_locks(text, 77), None, "POSIX locks are not ours");
        assert_eq!(parse_proc_locks(text, 5), None);
        assert_eq!(parse_proc_locks("", 5), None);
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_pid() {
        let dir = std::env::temp_dir().join(format!("ipush-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.lock");
        let mut a = LockFile::acquire(&path).unwrap();
        a.write_pid().unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts just as another process would.
        match LockFile::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(a);
        let b = LockFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(b.path()).unwrap(),
            format!("{}\n", std::process::id()),
            "acquiring does not rewrite the file"
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
