//! Where the embedded store's message records live (`Loc`, what its index holds per message)
//! and reading them back; owned by one core's `EmbeddedStore`, on that core.
//!
//! A read takes the records it is asked for in file order and reads each run of neighbouring
//! records with one read: `preadv2(RWF_NOWAIT)` on the core, which succeeds when the pages are
//! in the page cache, else an io_uring read, so a cold read never blocks the core. Every record
//! is checksummed again on the way in: a damaged one is a `Corrupt` error naming its file and
//! byte, never wrong bytes to a client.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::BufferedFile;

use super::log::{self, Decoded};
use super::seqlog::Held;
use super::StorageError;
use crate::protocol::MsgBody;

/// Bits of `Loc::at` that hold the offset (a segment is compacted long before 1 TiB).
const OFFSET_BITS: u32 = 40;
/// Records closer than this are read together, the gap included: one read instead of two.
const GAP: u64 = 4096;
/// The most one read takes.
const MAX_RUN: u64 = 1 << 20;

/// A store file: `snap-N` is `2N`, `wal-N` is `2N + 1`, so the files a snapshot replaces
/// (every snapshot and log before `wal-N`) are exactly those below `FileId::snap(N)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(u64);

impl FileId {
    pub fn wal(segment: u64) -> Self {
        FileId(segment * 2 + 1)
    }

    pub fn snap(segment: u64) -> Self {
        FileId(segment * 2)
    }

    pub fn segment(self) -> u64 {
        self.0 / 2
    }

    pub fn is_snap(self) -> bool {
        self.0.is_multiple_of(2)
    }

    pub fn name(self) -> String {
        let kind = if self.is_snap() { "snap" } else { "wal" };
        format!("{kind}-{:010}.log", self.segment())
    }
}

/// Where one stored message's body record lives, and its expiry: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// `file << OFFSET_BITS | offset`: sorting by it sorts by file, then position.
    at: u64,
    /// The whole record's length, framing included (never 0: its niche lets the index mark a
    /// run of missing seqs in the same 16 bytes).
    len: NonZeroU32,
    /// Unix seconds, `u32::MAX` for anything later (never, for a server of this century).
    exp: u32,
}

impl Loc {
    pub fn new(file: FileId, offset: u64, len: usize, expires_at: u64) -> Self {
        debug_assert!(offset < 1 << OFFSET_BITS, "a store file past 1 TiB");
        Loc {
            at: file.0 << OFFSET_BITS | offset,
            len: NonZeroU32::new(len as u32).unwrap_or(NonZeroU32::MIN),
            exp: expires_at.min(u32::MAX as u64) as u32,
        }
    }

    pub fn file(&self) -> FileId {
        FileId(self.at >> OFFSET_BITS)
    }

    pub fn offset(&self) -> u64 {
        self.at & ((1 << OFFSET_BITS) - 1)
    }

    pub fn end(&self) -> u64 {
        self.offset() + self.len.get() as u64
    }

    /// File and offset in one sortable key.
    pub fn key(&self) -> u64 {
        self.at
    }
}

impl Held for Loc {
    fn expires_at(&self) -> u64 {
        match self.exp {
            u32::MAX => u64::MAX,
            e => e as u64,
        }
    }
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// A file it needed is gone (a compaction replaced it meanwhile): list again.
    Gone(FileId),
    Failed(StorageError),
}

impl From<ReadError> for StorageError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Gone(f) => {
                StorageError::Unavailable(format!("store file {} vanished", f.name()))
            }
            ReadError::Failed(e) => e,
        }
    }
}

/// Open read handles of one store's files.
pub struct Bodies {
    dir: PathBuf,
    files: RefCell<HashMap<FileId, Rc<BufferedFile>>>,
}

impl Bodies {
    pub fn new(dir: &Path) -> Self {
        Bodies {
            dir: dir.to_path_buf(),
            files: RefCell::default(),
        }
    }

    /// Closes the handles of every file below `file` (they were deleted).
    pub fn forget_below(&self, file: FileId) {
        self.files.borrow_mut().retain(|f, _| *f >= file);
    }

    async fn file(&self, id: FileId) -> Result<Rc<BufferedFile>, ReadError> {
        if let Some(f) = self.files.borrow().get(&id) {
            return Ok(f.clone());
        }
        let path = self.dir.join(id.name());
        match BufferedFile::open(&path).await {
            Ok(f) => {
                let f = Rc::new(f);
                self.files.borrow_mut().insert(id, f.clone());
                Ok(f)
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                if e.kind() == std::io::ErrorKind::NotFound {
                    Err(ReadError::Gone(id))
                } else {
                    Err(ReadError::Failed(StorageError::Unavailable(format!(
                        "cannot open {}: {e}",
                        path.display()
                    ))))
                }
            }
        }
    }

    /// The message stored at each of `locs` and its expiry, in the order of `locs`.
    pub async fn read(&self, locs: &[Loc]) -> Result<Vec<(MsgBody, u64)>, ReadError> {
        let mut order: Vec<usize> = (0..locs.len()).collect();
        order.sort_unstable_by_key(|&i| locs[i].key());
        let mut out: Vec<Option<(MsgBody, u64)>> = locs.iter().map(|_| None).collect();
        let mut i = 0;
        while i < order.len() {
            // One run: records of one file, each starting within GAP of the last one's end.
            let first = locs[order[i]];
            let (start, mut end) = (first.offset(), first.end());
            let mut j = i + 1;
            while let Some(&k) = order.get(j) {
                let l = locs[k];
                if l.file() != first.file() || l.offset() > end + GAP || l.end() - start > MAX_RUN {
                    break;
                }
                end = end.max(l.end());
                j += 1;
            }
            let f = self.file(first.file()).await?;
            let path = self.dir.join(first.file().name());
            let buf = read_run(&f, start, (end - start) as usize)
                .await
                .map_err(|e| {
                    ReadError::Failed(StorageError::Unavailable(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )))
                })?;
            for &k in &order[i..j] {
                let l = locs[k];
                let at = (l.offset() - start) as usize;
                out[k] = Some(decode_at(&buf, at, l, &path)?);
            }
            i = j;
        }
        Ok(out
            .into_iter()
            .map(|m| m.expect("every loc read"))
            .collect())
    }
}

/// The message in the record that `buf[at..]` should start with, or a corruption error.
fn decode_at(buf: &[u8], at: usize, l: Loc, path: &Path) -> Result<(MsgBody, u64), ReadError> {
    let damaged = |what: &str| {
        ReadError::Failed(StorageError::Corrupt(format!(
            "{}: {what} in the record at byte {} (read back for a client; nothing was sent \
             from it)",
            path.display(),
            l.offset()
        )))
    };
    let bytes = buf
        .get(at..at + l.len.get() as usize)
        .ok_or_else(|| damaged("the file ends inside the record"))?;
    match log::decode(bytes) {
        Decoded::Record(r, n) if n == bytes.len() => {
            log::message_of(&r).ok_or_else(|| damaged("not a message record"))
        }
        Decoded::Record(..) => Err(damaged("a record of another length")),
        Decoded::Incomplete => Err(damaged("the record is cut short")),
        Decoded::Corrupt(what) => Err(damaged(what)),
    }
}

/// `len` bytes at `pos`: from the page cache without blocking if they are all there, else by
/// io_uring. Fewer bytes only at the end of the file.
async fn read_run(f: &BufferedFile, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: `iov` points into `buf`, alive and `len` bytes long for the call; the descriptor
    // is owned by `f`, open for the call.
    let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, pos as i64, libc::RWF_NOWAIT) };
    if n >= 0 && n as usize == len {
        return Ok(buf);
    }
    let got = f.read_at(pos, len).await.map_err(std::io::Error::from)?;
    Ok(got.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locs_pack_file_offset_and_expiry() {
        let l = Loc::new(FileId::wal(7), 123_456, 140, 1_700_000_000);
        assert_eq!(l.file(), FileId::wal(7));
        assert_eq!((l.offset(), l.end()), (123_456, 123_596));
        assert_eq!(l.expires_at(), 1_700_000_000);
        assert_eq!(
            Loc::new(FileId::snap(1), 0, 1, u64::MAX).expires_at(),
            u64::MAX
        );
        assert!(Loc::new(FileId::snap(7), 9, 1, 0).key() < l.key());
        assert!(FileId::wal(6) < FileId::snap(7) && FileId::snap(7) < FileId::wal(7));
        assert_eq!(FileId::wal(3).name(), "wal-0000000003.log");
        assert_eq!(FileId::snap(3).name(), "snap-0000000003.log");
        assert_eq!(std::mem::size_of::<Loc>(), 16);
        // A gap marker fits in the niche of `len`: the index is 16 bytes per message.
        assert_eq!(super::super::seqlog::slot_size::<Loc>(), 16);
    }
}
