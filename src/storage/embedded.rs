//! `--storage=embedded`: one core's durable store under `--data_dir/core-N/`. The index (users,
//! unacked messages, memberships) lives in memory on the core; every change is also appended to
//! a checksummed log. With `--fsync=never` an append made while nothing is queued is written
//! at once by the publishing task (one `pwrite`, answered in the same turn); otherwise the
//! core's committer task group-commits whatever has queued up while its previous group was in
//! flight (one `pwrite` into the page cache, and one io_uring `fdatasync` with
//! `--fsync=always`) and then wakes the waiting publishers. The log append is
//! a plain `pwrite` on the core, as Redis appends its AOF: on ext4 io_uring hands every buffered
//! write to a kernel worker thread, whose wake-ups cost more than the copy (persisted unicast
//! 35k -> 42k publishes/s); an I/O thread per core was slower still (two cross-thread wake-ups
//! per publish). Slow or big operations (fdatasync, snapshots, renames) stay on io_uring.
//!
//! Message bodies live only on disk: per unacked message the index holds a `Loc` (file,
//! offset, length, expiry: 16 bytes; the seq is implied, see `seqlog`), and `offline` reads the records back
//! (`bodies`). An append knows where its record will land before it is written: the log is
//! appended in issue order, so `Inner::tail` (the end of the log once everything issued is
//! written) is the position of the next write, and the committer checks each write lands where
//! it was told (after a failed write the tail is set back to the file's real end; writes issued
//! against the old tail fail). Start-up replays the newest snapshot and the log after it; a
//! background compaction writes a fresh snapshot, copying the bodies still needed into it, moves
//! the index onto the snapshot and only then deletes the files it replaces.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::future::poll_fn;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use glommio::io::{BufferedFile, Directory, OpenOptions};
use glommio::sync::Semaphore;

use super::bodies::{Bodies, FileId, Loc, ReadError};
use super::log::{self, Decoded, Header, IdemRec, Record};
use super::memory::Index;
use super::tickets::{Tickets, Wait};
use super::{IdemRecord, Storage, StorageError, StoredMsg, UserMeta};
use crate::protocol::MsgBody;

/// Entries per log record of a channel fan-out (keeps records far below `log::MAX_RECORD`).
const ENTRIES_PER_RECORD: usize = 65_536;
/// Compact when the log since the last snapshot exceeds this and twice the snapshot.
const COMPACT_MIN_BYTES: u64 = 64 << 20;
/// While writes fail, the probe runs after this, doubling up to `PROBE_MAX`.
const PROBE_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const PROBE_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// The probe's scratch write (a page: what the smallest failed append needed).
const PROBE_BYTES: usize = 4096;

/// What the committer is asked to do, in order.
enum IoOp {
    Write {
        ticket: u64,
        /// `(segment, offset)` the bytes must land at (`Inner::tail` when issued).
        at: (u64, u64),
        bytes: Vec<u8>,
    },
    /// Close the current log segment and continue in `wal-<segment>`.
    Rotate {
        ticket: u64,
        segment: u64,
    },
    /// Append to `snap-<segment>.tmp` (`first`: create it); with `done`, make it the snapshot.
    Snapshot {
        ticket: u64,
        segment: u64,
        bytes: Vec<u8>,
        first: bool,
        done: bool,
    },
    /// Delete every file the snapshot `snap-<segment>` replaces.
    Prune {
        ticket: u64,
        segment: u64,
    },
    Close {
        ticket: u64,
    },
}

struct Inner {
    index: Index<Loc>,
    /// Read handles for the bodies the index points at.
    bodies: Bodies,
    /// `(segment, length)` of the log once everything issued so far is written: where the
    /// next write lands.
    tail: Cell<(u64, u64)>,
    /// `(segment, length)` of the log written so far (set by the writer): records before it
    /// can be read back.
    written: Rc<Cell<(u64, u64)>>,
    /// Issued and not yet taken by the committer.
    ops: RefCell<VecDeque<IoOp>>,
    /// The committer, parked while `ops` is empty.
    committer: RefCell<Option<Waker>>,
    /// The files; the committer takes them out while it carries out a group.
    writer: RefCell<Option<Writer>>,
    tickets: Tickets,
    /// Why writes fail now (None: healthy). Set by a failed write; cleared by the next write
    /// that succeeds or by the probe. Meanwhile new writes are refused at once.
    failing: RefCell<Option<Rc<str>>>,
    /// The probe task runs (one per failure).
    probing: Cell<bool>,
    /// The committer has stopped (after `Close`).
    closed: Cell<bool>,
    /// Set while a batch of publishes starts (in one poll): their appends queue for the
    /// committer, one group write, instead of a `pwrite` each.
    corked: Cell<bool>,
    segment: Cell<u64>,
    since_snapshot: Cell<u64>,
    last_snapshot: Cell<u64>,
    /// One permit: held by the compaction that runs (one at a time: each rotates the log).
    compaction: Rc<Semaphore>,
    dir: PathBuf,
    header: Header,
    /// Itself, for the probe task it spawns.
    me: Weak<Inner>,
}

pub struct EmbeddedStore {
    inner: Rc<Inner>,
}

impl EmbeddedStore {
    /// While `on`, appends wait for the committer's group write (see `Inner::corked`).
    pub fn set_corked(&self, on: bool) {
        self.inner.corked.set(on);
    }
}

/// What recovery found, for the start-up log.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub files: usize,
    pub bytes: u64,
    pub records: u64,
    pub millis: u128,
}

impl EmbeddedStore {
    /// Opens (creating if needed) core `core`'s store in `dir`, replaying what is there. Must
    /// run on the core's executor: it spawns the committer task there.
    pub fn open(
        dir: &Path,
        core: u32,
        cores: u32,
        fsync: bool,
    ) -> Result<(Self, Recovery), StorageError> {
        // glommio opens paths with no base directory (dirfd -1), so a relative path (the
        // default config's `--data_dir=data`) failed with EBADF at the first write: anchor it
        // to the working directory once, here.
        let dir = &std::path::absolute(dir).map_err(|e| {
            StorageError::Unavailable(format!("cannot resolve {}: {e}", dir.display()))
        })?;
        let header = Header {
            snapshot: false,
            core,
            cores,
        };
        let started = std::time::Instant::now();
        let index = Index::new();
        let (next_segment, mut rec, snap_bytes) =
            recover(dir, header, &index, crate::stats::unix_now())?;
        rec.millis = started.elapsed().as_millis();

        // The directory and the segment are created at the first write, so a start that is
        // refused (another core's store is damaged) leaves nothing behind.
        let written = Rc::new(Cell::new((next_segment, 0)));
        let writer = Writer::new(
            dir.to_path_buf(),
            header,
            fsync,
            next_segment,
            written.clone(),
        );
        let inner = Rc::new_cyclic(|me| Inner {
            index,
            bodies: Bodies::new(dir),
            tail: Cell::new((next_segment, log::HEADER_LEN as u64)),
            written,
            ops: RefCell::default(),
            committer: RefCell::default(),
            writer: RefCell::new(Some(writer)),
            tickets: Tickets::default(),
            failing: RefCell::default(),
            probing: Cell::new(false),
            closed: Cell::new(false),
            corked: Cell::new(false),
            segment: Cell::new(next_segment),
            since_snapshot: Cell::new(0),
            last_snapshot: Cell::new(snap_bytes),
            compaction: Rc::new(Semaphore::new(1)),
            dir: dir.to_path_buf(),
            header,
            me: me.clone(),
        });
        glommio::spawn_local(commit_loop(Rc::downgrade(&inner))).detach();
        Ok((EmbeddedStore { inner }, rec))
    }

    /// Writes a snapshot now (normally triggered by log growth).
    pub async fn compact(&self) -> Result<(), StorageError> {
        compact(self.inner.clone()).await
    }

    /// Waits for everything issued, then stops the committer (fsyncing the log).
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        if self.inner.closed.get() {
            return Ok(());
        }
        self.inner
            .issue(true, |ticket| IoOp::Close { ticket })
            .await
    }

    /// Why writes fail now, if they do (for `/health`).
    pub fn failing(&self) -> Option<String> {
        self.inner.failing.borrow().as_ref().map(|e| e.to_string())
    }
}

impl Inner {
    /// Queues `op` for the committer.
    fn queue(&self, op: IoOp) {
        self.ops.borrow_mut().push_back(op);
        if let Some(w) = self.committer.borrow_mut().take() {
            w.wake();
        }
    }

    /// Why a write issued now cannot be carried out: the store is closed or failing.
    fn refusal(&self) -> Option<StorageError> {
        if self.closed.get() {
            return Some(StorageError::Unavailable(format!(
                "the store in {} is closed",
                self.dir.display()
            )));
        }
        let failing = self.failing.borrow();
        failing
            .as_ref()
            .map(|e| StorageError::Unavailable(e.to_string()))
    }

    /// With `--fsync=never`, when nothing is queued and the committer is not carrying out a
    /// group (so everything issued before is written), appends `bytes` at once with `pwrite`
    /// and returns its outcome: the publisher answers in the same task turn. Waiting for the
    /// committer task instead cost 30% of the unicast rate (50k vs 71k/s on one core: the
    /// answer left a scheduler turn later, and the idle client had to be woken for each
    /// delivery). `None`: queue it for the committer (`--fsync=always` keeps the group commit
    /// for its fsync).
    fn append_inline(&self, bytes: &[u8], to: (u64, u64)) -> Option<Result<(), StorageError>> {
        if self.corked.get() || !self.ops.borrow().is_empty() {
            return None;
        }
        let mut slot = self.writer.borrow_mut();
        let w = slot.as_mut()?;
        if w.fsync || w.trim_to.is_some() {
            return None;
        }
        let segment = w.segment;
        // No segment open yet: the committer creates it (io_uring, and a directory sync).
        let (f, len) = w.file.as_mut()?;
        if (segment, *len) != to {
            // Not where the index was told: the committer refuses it.
            return None;
        }
        self.tickets.issue();
        let at = *len;
        match append_at(f, bytes, at) {
            Ok(()) => {
                *len += bytes.len() as u64;
                w.written.set((segment, *len));
                Some(Ok(()))
            }
            Err(e) => {
                w.undo(w.segment, Some(at));
                self.tail.set(w.end());
                drop(slot);
                Some(Err(StorageError::Unavailable(
                    self.write_failed(&e).to_string(),
                )))
            }
        }
    }

    /// Enters the failing state after a failed write (its tail already trimmed, or the trim
    /// pending): later writes are refused until a write succeeds again, which the probe task
    /// tries with a bounded backoff. Returns the error for the write's waiters.
    fn write_failed(&self, e: &std::io::Error) -> Rc<str> {
        let msg: Rc<str> = Rc::from(format!(
            "writing the store in {} failed: {e}",
            self.dir.display()
        ));
        if self.failing.borrow().is_none() {
            tracing::error!(dir = %self.dir.display(), error = %e,
                "store write failed: refusing writes until a probe write succeeds");
        }
        *self.failing.borrow_mut() = Some(msg.clone());
        if !self.probing.replace(true) {
            let me = self.me.clone();
            glommio::spawn_local(probe_loop(me)).detach();
        }
        msg
    }

    /// Leaves the failing state (a write or the probe succeeded).
    fn writable_again(&self) {
        if self.failing.borrow_mut().take().is_some() {
            tracing::warn!(dir = %self.dir.display(), "store writable again");
        }
    }

    /// Appends `bytes` to the log at `tail` (which the caller read just before, in the same
    /// turn, to know where its records land); resolves once it is written (synced with
    /// --fsync=always).
    fn write(self: &Rc<Self>, bytes: Vec<u8>) -> Wait<'_> {
        if let Some(e) = self.refusal() {
            self.tickets.issue();
            return self.tickets.settled(Err(e));
        }
        let n = bytes.len() as u64;
        let at = self.tail.get();
        self.tail.set((at.0, at.1 + n));
        let wait = match self.append_inline(&bytes, at) {
            Some(res) => self.tickets.settled(res),
            None => {
                let wait = self.tickets.issue_awaited();
                let ticket = wait.ticket();
                self.queue(IoOp::Write { ticket, at, bytes });
                wait
            }
        };
        let since = self.since_snapshot.get() + n;
        self.since_snapshot.set(since);
        if since > COMPACT_MIN_BYTES.max(2 * self.last_snapshot.get()) {
            if let Ok(permit) = self.compaction.try_acquire_static_permit(1) {
                let me = self.clone();
                glommio::spawn_local(async move {
                    let res = write_snapshot(&me).await;
                    drop(permit);
                    if let Err(e) = res {
                        tracing::error!(error = %e, "store compaction failed");
                    }
                })
                .detach();
            }
        }
        wait
    }

    /// Issues the op `make` numbers for the committer (refused while failing, except a close);
    /// its outcome.
    fn issue(&self, close: bool, make: impl FnOnce(u64) -> IoOp) -> Wait<'_> {
        if let Some(e) = self.refusal() {
            if self.closed.get() || !close {
                self.tickets.issue();
                return self.tickets.settled(Err(e));
            }
        }
        let wait = self.tickets.issue_awaited();
        self.queue(make(wait.ticket()));
        wait
    }
}

/// The committer: takes everything issued since its last turn as one group, writes it (one
/// write per group, one fdatasync with --fsync=always), then wakes the group's waiters. Issues
/// made while a group is in flight form the next group. One task per store, on its core.
async fn commit_loop(inner: Weak<Inner>) {
    loop {
        let group: Vec<IoOp> = {
            let batch = poll_fn(|cx| {
                let Some(inner) = inner.upgrade() else {
                    return Poll::Ready(None);
                };
                let mut ops = inner.ops.borrow_mut();
                if ops.is_empty() {
                    *inner.committer.borrow_mut() = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(Some(ops.drain(..).collect()))
            })
            .await;
            match batch {
                Some(g) => g,
                None => return,
            }
        };
        // Taken in the same poll that drained `ops`: no inline append can slip in between.
        let Some(mut writer) = inner.upgrade().and_then(|i| i.writer.borrow_mut().take()) else {
            return;
        };
        let (last, closing, res) = writer.commit(group).await;
        let Some(inner) = inner.upgrade() else { return };
        match res {
            Ok(()) => {
                inner.writable_again();
                inner.tickets.resolve(last, None);
            }
            Err(e) => {
                // Writes issued against the old tail fail when the committer reaches them.
                inner.tail.set(writer.end());
                inner.tickets.resolve(last, Some(&inner.write_failed(&e)));
            }
        }
        if closing {
            inner.closed.set(true);
            // Anything issued after the close has nobody to write it.
            inner
                .tickets
                .resolve(u64::MAX, Some(&Rc::from("the store is closed")));
            return;
        }
        // Back only now that the group is resolved: an inline append after this point
        // follows everything written so far.
        *inner.writer.borrow_mut() = Some(writer);
    }
}

/// While the store is failing: every `PROBE_MIN`..`PROBE_MAX` (doubling), a small write into
/// the data directory (and the trim still owed, if any); when it succeeds, writes are
/// accepted again. Ends then, or when the store is gone.
async fn probe_loop(inner: Weak<Inner>) {
    let mut backoff = PROBE_MIN;
    loop {
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(PROBE_MAX);
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.get() || inner.failing.borrow().is_none() {
            inner.probing.set(false);
            return;
        }
        // The committer holds the writer while it carries out a group: try next round.
        let Some(mut writer) = inner.writer.borrow_mut().take() else {
            continue;
        };
        let res = writer.probe();
        *inner.writer.borrow_mut() = Some(writer);
        match res {
            Ok(()) => {
                inner.writable_again();
                inner.probing.set(false);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "store probe failed"),
        }
    }
}

/// Unacked messages whose records a compaction copies, read and written this many at a time.
const COPY_BATCH: usize = 4096;
/// A compaction's walks over the index give the core back after about this many users and
/// messages (a user with many messages counts for each).
const YIELD_EVERY: usize = 16_384;

/// A compaction numbers what it copies with `u32`s (a core holding over 4 G unacked messages
/// would need some 64 GB for its index alone).
fn too_many_to_compact() -> StorageError {
    StorageError::Unavailable(
        "store compaction: more than 4,294,967,295 unacked messages on one core".into(),
    )
}

/// Writes a snapshot of the index, then lets the committer replace the older files with it.
/// Runs in slices (yielding between them); changes made meanwhile are in the log segment
/// started at the beginning, and replaying them over the snapshot gives the same state
/// because every record is an idempotent "set".
/// A compaction now, after the one running, if any (they rotate the log: one at a time).
async fn compact(inner: Rc<Inner>) -> Result<(), StorageError> {
    let _permit = inner
        .compaction
        .acquire_static_permit(1)
        .await
        .map_err(|e| StorageError::Unavailable(format!("store compaction: {e}")))?;
    write_snapshot(&inner).await
}

impl Inner {
    /// Whether the record at `l` is written (so it can be read back).
    fn readable(&self, l: &Loc) -> bool {
        let f = l.file();
        // The index points into a snapshot only once it is complete.
        if f.is_snap() {
            return true;
        }
        let (segment, len) = self.written.get();
        f.segment() < segment || (f.segment() == segment && l.end() <= len)
    }

    /// The messages at `locs`, waiting first for any still being written.
    async fn read(self: &Rc<Self>, locs: &[Loc]) -> Result<Vec<(MsgBody, u64)>, ReadError> {
        if !locs.iter().all(|l| self.readable(l)) {
            // Queued behind every earlier write: once it resolves they are all written.
            self.write(Vec::new()).await.map_err(ReadError::Failed)?;
            if let Some(l) = locs.iter().find(|l| !self.readable(l)) {
                return Err(ReadError::Failed(StorageError::Unavailable(format!(
                    "the record at byte {} of {} was never written",
                    l.offset(),
                    l.file().name()
                ))));
            }
        }
        self.bodies.read(locs).await
    }
}

async fn write_snapshot(inner: &Rc<Inner>) -> Result<(), StorageError> {
    if let Some(e) = inner.refusal() {
        return Err(e);
    }
    let started = std::time::Instant::now();
    let segment = inner.segment.get() + 1;
    inner.segment.set(segment);
    drop(inner.issue(false, |ticket| IoOp::Rotate { ticket, segment }));
    inner.tail.set((segment, log::HEADER_LEN as u64));
    inner.since_snapshot.set(0);
    // Every file below it is replaced by this snapshot; appends from now on go to
    // `wal-<segment>`, above it.
    let cut = FileId::snap(segment);
    let snap = FileId::snap(segment);

    let mut total = 0u64;
    let mut buf = Vec::with_capacity(1 << 20);
    log::encode_header(
        &mut buf,
        Header {
            snapshot: true,
            ..inner.header
        },
    );
    let first = Cell::new(true);
    let send = |buf: &mut Vec<u8>, total: &mut u64, done: bool| {
        *total += buf.len() as u64;
        let bytes = std::mem::take(buf);
        inner.issue(false, |ticket| IoOp::Snapshot {
            ticket,
            segment,
            bytes,
            first: first.replace(false),
            done,
        })
    };
    // At most one chunk waits for the committer at a time. It writes everything queued as one
    // group, so chunks issued without waiting (as before) piled up ahead of the publishes:
    // at ~90 M stored, a `/pub/batch` got no answer for over 60 s during a compaction.
    let mut in_flight = None;
    // Every unacked message held in the replaced files, sorted by where its record is, so
    // the records are read in file order and a shared body (a channel message) is one run of
    // entries, copied once: (where, seq, the user's index in `uids`, its index in `fixed`).
    let mut live: Vec<(Loc, u64, u32, u32)> = Vec::new();
    // The same messages in the index's order (user by user, ascending seq): each one's old
    // record key and, once copied, where it is in the snapshot. Pointing the index at the
    // snapshot is then one walk in step with it, no search (a binary search per message was
    // a cache miss per step: 40 % of a core during a 4 M-message compaction).
    let mut fixed: Vec<(u64, Option<Loc>)> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let uids = inner.index.uids();
    let mut since_yield = 0usize;
    for (i, uid) in uids.iter().enumerate() {
        let user = u32::try_from(i).map_err(|_| too_many_to_compact())?;
        let before = fixed.len();
        inner.index.visit_user(uid, |meta, msgs| {
            log::encode_meta(&mut buf, uid, meta.max_seq, meta.last_ack);
            for (seq, loc) in msgs {
                if loc.file() < cut {
                    let at = u32::try_from(fixed.len()).unwrap_or(u32::MAX);
                    live.push((*loc, seq, user, at));
                    fixed.push((loc.key(), None));
                }
            }
        });
        ends.push(fixed.len());
        since_yield += 1 + fixed.len() - before;
        if since_yield >= YIELD_EVERY {
            since_yield = 0;
            if buf.len() > 4 << 20 {
                if let Some(w) = in_flight.take() {
                    w.await?;
                }
                in_flight = Some(send(&mut buf, &mut total, false));
            }
            glommio::yield_if_needed().await;
        }
    }
    if fixed.len() > u32::MAX as usize {
        return Err(too_many_to_compact());
    }
    let listed = started.elapsed();
    live.sort_unstable_by_key(|(l, seq, _, _)| (l.key(), *seq));
    let sorted = started.elapsed();
    let mut entries: Vec<(Rc<str>, u64)> = Vec::new();
    let mut copied = 0usize;
    let mut i = 0;
    while i < live.len() {
        // A batch of whole groups (one group: the entries of one record).
        let mut j = (i + COPY_BATCH).min(live.len());
        while j < live.len() && live[j].0 == live[j - 1].0 {
            j += 1;
        }
        let mut locs: Vec<Loc> = Vec::new();
        for (l, _, _, _) in &live[i..j] {
            if locs.last() != Some(l) {
                locs.push(*l);
            }
        }
        let msgs = inner.read(&locs).await.map_err(StorageError::from)?;
        let mut k = i;
        for (old, (body, exp)) in locs.iter().zip(msgs) {
            entries.clear();
            let first = k;
            while k < j && live[k].0 == *old {
                entries.push((uids[live[k].2 as usize].clone(), live[k].1));
                k += 1;
            }
            let at = total + buf.len() as u64;
            let len = encode_message(&mut buf, &body, exp, &entries);
            let new = Loc::new(snap, at, len, exp);
            for e in &live[first..k] {
                fixed[e.3 as usize].1 = Some(new);
            }
            copied += 1;
        }
        i = j;
        if buf.len() > 4 << 20 {
            if let Some(w) = in_flight.take() {
                w.await?;
            }
            in_flight = Some(send(&mut buf, &mut total, false));
        }
        glommio::yield_if_needed().await;
    }
    drop(live);
    for (cid, members) in inner.index.channel_list() {
        for uid in members {
            log::encode_sub(&mut buf, &cid, &uid, true);
        }
    }
    // Keys still in their window: a restart after this snapshot must still answer repeats.
    for r in inner.index.idem_list(crate::stats::unix_now()) {
        log::encode_idem(&mut buf, idem_rec(&r));
    }
    if let Some(w) = in_flight.take() {
        w.await?;
    }
    send(&mut buf, &mut total, true).await?;
    inner.last_snapshot.set(total);
    let written = started.elapsed();

    // The snapshot is in place: point the index at it, then drop the files it replaces. A
    // user's messages in the old files now are those listed above less any acked or expired
    // since, in the same order: walked in step with its run of `fixed`.
    let mut lost = 0usize;
    let mut since_yield = 0usize;
    let mut start = 0;
    for (uid, &end) in uids.iter().zip(&ends) {
        let run = &fixed[start..end];
        let mut at = 0;
        inner.index.update_user(uid, |loc| {
            if loc.file() < cut {
                let key = loc.key();
                while at < run.len() && run[at].0 != key {
                    at += 1;
                }
                match run.get(at).and_then(|r| r.1) {
                    Some(new) => {
                        *loc = new;
                        at += 1;
                    }
                    None => lost += 1,
                }
            }
        });
        since_yield += 1 + end - start;
        start = end;
        if since_yield >= YIELD_EVERY {
            since_yield = 0;
            glommio::yield_if_needed().await;
        }
    }
    if lost > 0 {
        // Every message in the old files was listed above and new ones go to the new log:
        // keep the old files rather than lose a body.
        tracing::error!(dir = %inner.dir.display(), lost,
            "store compaction: messages not copied into the snapshot; old files kept");
        return Ok(());
    }
    let repointed = started.elapsed();
    inner
        .issue(false, |ticket| IoOp::Prune { ticket, segment })
        .await?;
    inner.bodies.forget_below(cut);
    drop(fixed);
    let pruned = started.elapsed();
    release_free_memory();
    // Where the time went, as elapsed ms at the end of each step (the core serves between
    // the steps' slices; the sort is one step).
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    tracing::info!(
        dir = %inner.dir.display(),
        bytes = total,
        messages = copied,
        listed_ms = ms(listed),
        sorted_ms = ms(sorted),
        written_ms = ms(written),
        repointed_ms = ms(repointed),
        pruned_ms = ms(pruned),
        ms = ms(started.elapsed()),
        "store snapshot written"
    );
    Ok(())
}

/// Hands the heap's free pages back to the kernel. A compaction's lists (tens of bytes per
/// stored message, freed at its end) otherwise stay in the server's RSS: glibc raises its mmap
/// threshold after the first big free, so the next big lists come from the heap, which it
/// trims only from the top (measured: +80 B RSS per stored message after one compaction).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Encodes a message for `entries`: with one recipient one record holding both, else a body
/// record and its recipients after it (so one recipient's read is the body alone). Returns the
/// length of the record that holds the body (the first one written).
fn encode_message(
    out: &mut Vec<u8>,
    body: &MsgBody,
    expires_at: u64,
    entries: &[(Rc<str>, u64)],
) -> usize {
    let start = out.len();
    if entries.len() <= 1 {
        log::encode_append(out, body, expires_at, entries);
        return out.len() - start;
    }
    log::encode_body(out, body, expires_at);
    let len = out.len() - start;
    for chunk in entries.chunks(ENTRIES_PER_RECORD) {
        log::encode_refs(out, chunk);
    }
    len
}

fn seg_name(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:010}.log")
}

/// Replays the newest snapshot and every log segment after it into `index`. Returns the next
/// segment number, what was read, and the snapshot's size.
fn recover(
    dir: &Path,
    header: Header,
    index: &Index<Loc>,
    now: u64,
) -> Result<(u64, Recovery, u64), StorageError> {
    let mut wals = Vec::new();
    let mut snaps = Vec::new();
    // Segment -> the length its acknowledged part ends at (see `unacked_marker`).
    let mut unacked: HashMap<u64, (u64, PathBuf)> = HashMap::new();
    if !dir.exists() {
        return Ok((1, Recovery::default(), 0));
    }
    let entries = fs::read_dir(dir)
        .map_err(|e| StorageError::Unavailable(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let num = |p: &str| {
            name.strip_prefix(p)
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
        };
        if name.ends_with(".tmp") {
            // An unfinished snapshot (or probe): the files it would have replaced are all
            // still here.
            let _ = fs::remove_file(entry.path());
        } else if let Some((seg, len)) = parse_marker(&name) {
            unacked.insert(seg, (len, entry.path()));
        } else if let Some(n) = num("wal-") {
            wals.push(n);
        } else if let Some(n) = num("snap-") {
            snaps.push(n);
        }
    }
    wals.sort_unstable();
    snaps.sort_unstable();
    let mut rec = Recovery::default();
    let mut snap_bytes = 0;
    let mut files: Vec<FileId> = Vec::new();
    let from = snaps.last().copied();
    if let Some(s) = from {
        files.push(FileId::snap(s));
    }
    for &w in &wals {
        if from.is_none_or(|s| w >= s) {
            files.push(FileId::wal(w));
        }
    }
    for &file in &files {
        let marker = (!file.is_snap())
            .then(|| unacked.remove(&file.segment()))
            .flatten();
        let bytes = replay_file(dir, file, header, index, now, &mut rec, marker)?;
        if file.is_snap() {
            snap_bytes = bytes;
        }
    }
    for (_, path) in unacked.values() {
        // A marker for a segment no longer there (compacted away) says nothing.
        let _ = fs::remove_file(path);
    }
    let next = wals
        .last()
        .copied()
        .max(snaps.last().copied())
        .map_or(1, |n| n + 1);
    Ok((next, rec, snap_bytes))
}

/// `(segment, length)` of an `unacked_marker` name.
fn parse_marker(name: &str) -> Option<(u64, u64)> {
    let (seg, len) = name.split_once(".log.unacked-")?;
    Some((seg.strip_prefix("wal-")?.parse().ok()?, len.parse().ok()?))
}

/// Cuts what a failed, never acknowledged write left past `good` in `path` (its marker says
/// so), once the part before it has replayed cleanly; then removes the marker.
fn trim_unacked(
    path: &Path,
    data_len: usize,
    good: u64,
    marker: &Path,
) -> Result<(), StorageError> {
    if data_len as u64 > good {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(good))
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot trim {}: {e}", path.display()))
            })?;
        tracing::warn!(
            file = %path.display(),
            bytes = data_len as u64 - good,
            at = good,
            "trimmed the tail of a write that failed and was never acknowledged"
        );
    }
    let _ = fs::remove_file(marker);
    Ok(())
}

fn corrupt(path: &Path, what: &str, hint: &str) -> StorageError {
    StorageError::Corrupt(format!(
        "{}: {what}. The server did not start and changed nothing. {hint}",
        path.display()
    ))
}

/// Replays one file into `index`. `unacked`: the length its acknowledged part ends at, and the
/// marker that says so (bytes past it are dropped, the records before must be whole).
fn replay_file(
    dir: &Path,
    file: FileId,
    expect: Header,
    index: &Index<Loc>,
    now: u64,
    rec: &mut Recovery,
    unacked: Option<(u64, PathBuf)>,
) -> Result<u64, StorageError> {
    let path = &dir.join(file.name());
    let is_snap = file.is_snap();
    let restore = "Restore this directory from a backup, or move the file aside to start \
                   without what it holds.";
    let cannot = |e: std::io::Error| {
        StorageError::Unavailable(format!("cannot read {}: {e}", path.display()))
    };
    let f = File::open(path).map_err(cannot)?;
    let file_len = f.metadata().map_err(cannot)?.len() as usize;
    // Bytes past an unacknowledged tail are not read (they are trimmed below).
    let end = match &unacked {
        Some((good, _)) => (*good as usize).max(log::HEADER_LEN).min(file_len),
        None => file_len,
    };
    let mut win = Window::new(f, end);
    win.fill(0, WINDOW_BYTES).map_err(cannot)?;
    let h = log::decode_header(win.from(0)).map_err(|what| corrupt(path, what, restore))?;
    if h.snapshot != is_snap {
        return Err(corrupt(path, "file type does not match its name", restore));
    }
    if h.cores != expect.cores || h.core != expect.core {
        return Err(StorageError::Corrupt(format!(
            "{} was written by core {} of {} but is opened as core {} of {}: users are placed \
             by core count, so start with --cores={} (or use a new --data_dir)",
            path.display(),
            h.core,
            h.cores,
            expect.core,
            expect.cores,
            h.cores
        )));
    }
    let mut pos = log::HEADER_LEN;
    // The latest body record (type 8): the recipient records after it refer to it.
    let mut body: Option<Loc> = None;
    while pos < end {
        match log::decode(win.from(pos)) {
            Decoded::Record(r, n) => {
                let here = (file, pos as u64, n);
                if let Err(what) = apply(index, r, here, &mut body, now) {
                    return Err(corrupt(
                        path,
                        &format!("{what} in the record at byte {pos}"),
                        restore,
                    ));
                }
                rec.records += 1;
                pos += n;
            }
            Decoded::Incomplete if win.held_from(pos) < end - pos => {
                // The record runs past the window: read on (a record is at most MAX_RECORD).
                let want = win.held_from(pos) + WINDOW_BYTES;
                win.fill(pos, want).map_err(cannot)?;
            }
            Decoded::Incomplete => {
                // A torn write can only be the end of the file: if any complete record
                // follows, this record's length itself is damaged.
                if let Some(next) = (pos + 1..end)
                    .find(|&o| matches!(log::decode(win.from(o)), Decoded::Record(..)))
                {
                    return Err(corrupt(
                        path,
                        &format!(
                            "the record at byte {pos} is damaged (its length runs past the end \
                             of the file, yet complete records follow at byte {next})"
                        ),
                        restore,
                    ));
                }
                return Err(corrupt(
                    path,
                    &format!(
                        "the file ends inside a record that starts at byte {pos} (file size {end}): \
                         its last write was cut short (power loss, full disk?)",
                    ),
                    &format!(
                        "To keep every complete record and drop only the cut one, run \
                         `truncate -s {pos} {}` and start again.",
                        path.display()
                    ),
                ));
            }
            Decoded::Corrupt(what) => {
                return Err(corrupt(
                    path,
                    &format!("{what} in the record at byte {pos} (file size {end})"),
                    restore,
                ));
            }
        }
    }
    if let Some((good, marker)) = &unacked {
        trim_unacked(path, file_len, *good, marker)?;
    }
    rec.files += 1;
    rec.bytes += end as u64;
    Ok(end as u64)
}

/// How much of a file recovery reads at a time (more for a record longer than that): a
/// snapshot holds every stored body, and read whole it was a buffer as big as the file (7.6 GB
/// per core at 100 M stored).
const WINDOW_BYTES: usize = if cfg!(test) { 4096 } else { 32 << 20 };

/// The bytes `[base, base + buf.len())` of a file being replayed, read forward as needed.
struct Window {
    f: File,
    buf: Vec<u8>,
    base: usize,
    /// Where reading stops.
    end: usize,
}

impl Window {
    fn new(f: File, end: usize) -> Window {
        Window {
            f,
            buf: Vec::new(),
            base: 0,
            end,
        }
    }

    /// The bytes held from `pos` on (`pos` at or after `base`).
    fn from(&self, pos: usize) -> &[u8] {
        &self.buf[pos - self.base..]
    }

    fn held_from(&self, pos: usize) -> usize {
        self.base + self.buf.len() - pos
    }

    /// Drops what is before `pos` and reads until `want` bytes from `pos` on are held, or
    /// the end.
    fn fill(&mut self, pos: usize, want: usize) -> std::io::Result<()> {
        self.buf.drain(..pos - self.base);
        self.base = pos;
        let target = pos.saturating_add(want).min(self.end);
        let have = self.base + self.buf.len();
        if target > have {
            let n = target - have;
            let at = self.buf.len();
            self.buf.resize(at + n, 0);
            self.f.read_exact(&mut self.buf[at..])?;
        }
        Ok(())
    }
}

/// Applies record `r`, found at `at` (file, offset, length), to `index`. `body`: the latest
/// body record so far in the file.
fn apply(
    index: &Index<Loc>,
    r: Record<'_>,
    at: (FileId, u64, usize),
    body: &mut Option<Loc>,
    now: u64,
) -> Result<(), &'static str> {
    let (file, offset, len) = at;
    match r {
        Record::Append {
            expires,
            entries,
            idem,
            ..
        } => {
            if let Some(r) = idem {
                index.apply_idem(&idem_record(r), now);
            }
            let loc = Loc::new(file, offset, len, expires);
            index.apply_append(&loc, &entries, now);
        }
        Record::Body { expires, .. } => *body = Some(Loc::new(file, offset, len, expires)),
        Record::Refs { entries } => {
            let loc = body.ok_or("a recipient list with no message before it")?;
            index.apply_append(&loc, &entries, now);
        }
        Record::Idem(r) => index.apply_idem(&idem_record(r), now),
        Record::Ack { uid, last_ack } => index.apply_ack(uid, last_ack),
        Record::Sub { cid, uid } => index.apply_sub(cid, uid, true),
        Record::Unsub { cid, uid } => index.apply_sub(cid, uid, false),
        Record::Meta {
            uid,
            max_seq,
            last_ack,
        } => index.apply_meta(uid, UserMeta { max_seq, last_ack }),
    }
    Ok(())
}

fn idem_record(r: IdemRec<'_>) -> IdemRecord {
    IdemRecord {
        id: r.id.to_string(),
        fingerprint: r.fingerprint,
        answer: r.answer,
        expires_at: r.expires,
    }
}

fn idem_rec(r: &IdemRecord) -> IdemRec<'_> {
    IdemRec {
        id: &r.id,
        fingerprint: r.fingerprint,
        answer: r.answer,
        expires: r.expires_at,
    }
}

/// The committer's side: owns the files; runs on the core (log appends by `pwrite`, the rest by
/// io_uring).
struct Writer {
    dir: PathBuf,
    header: Header,
    fsync: bool,
    /// The current log segment, created by the first write into it, and its length.
    segment: u64,
    file: Option<(BufferedFile, u64)>,
    snap: Option<(u64, BufferedFile, u64)>,
    buf: Vec<u8>,
    /// The current segment must be cut back to this length (bytes past it were never
    /// acknowledged) before anything else is written: a trim that failed, retried.
    trim_to: Option<u64>,
    /// `(segment, length)` written so far, shared with the store (`Inner::written`).
    written: Rc<Cell<(u64, u64)>>,
}

/// Writes `bytes` at `pos`; returns the length. A short write (a full disk) is an error: what
/// it left is trimmed, and the store refuses writes until a probe succeeds.
async fn write_all_at(f: &BufferedFile, bytes: Vec<u8>, pos: u64) -> std::io::Result<u64> {
    let total = bytes.len();
    let n = f.write_at(bytes, pos).await.map_err(std::io::Error::from)?;
    if n < total {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {total} bytes"),
        ));
    }
    Ok(total as u64)
}

/// Writes all of `bytes` at `pos` with `pwrite` on the calling thread: a copy into the page
/// cache, microseconds for a group. It can block only where the kernel throttles dirty pages,
/// which a disk that keeps up never reaches. A full disk is an error: what it left is trimmed
/// (`Writer::undo`).
fn append_at(f: &BufferedFile, bytes: &[u8], pos: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    borrowed(f).write_all_at(bytes, pos)
}

/// `f`'s descriptor as a `File`, for the synchronous calls glommio does not offer.
fn borrowed(f: &BufferedFile) -> std::mem::ManuallyDrop<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: the descriptor stays owned by `f`, which outlives the returned value (a borrow
    // in every caller); ManuallyDrop keeps it from closing the descriptor.
    std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(f.as_raw_fd()) })
}

/// The marker file that says the bytes of segment `segment` from `len` on were never
/// acknowledged: present only while a trim after a failed write is owed, so a start that
/// finds it trims them (`recover`) instead of refusing a torn tail.
fn unacked_marker(segment: u64, len: u64) -> String {
    format!("{}.unacked-{len}", seg_name("wal", segment))
}

/// Makes the directory's entries (a created or renamed file) survive a crash.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let d = Directory::open(dir).await.map_err(std::io::Error::from)?;
    d.sync().await.map_err(std::io::Error::from)?;
    d.close().await.map_err(std::io::Error::from)
}

impl Writer {
    fn new(
        dir: PathBuf,
        header: Header,
        fsync: bool,
        segment: u64,
        written: Rc<Cell<(u64, u64)>>,
    ) -> Self {
        Writer {
            dir,
            header,
            fsync,
            segment,
            file: None,
            snap: None,
            buf: Vec::new(),
            trim_to: None,
            written,
        }
    }

    /// Where the next write lands once everything handed over so far is written.
    fn end(&self) -> (u64, u64) {
        let len = self
            .file
            .as_ref()
            .map_or(log::HEADER_LEN as u64, |(_, l)| *l);
        (self.segment, len + self.buf.len() as u64)
    }

    /// Creates `name` (it must not exist) with its header; returns it and its length.
    async fn create(&self, name: &str, snapshot: bool) -> std::io::Result<(BufferedFile, u64)> {
        // A metadata call of microseconds, once per new segment or snapshot.
        fs::create_dir_all(&self.dir)?;
        let f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .buffered_open(self.dir.join(name))
            .await
            .map_err(std::io::Error::from)?;
        let mut h = Vec::new();
        log::encode_header(
            &mut h,
            Header {
                snapshot,
                ..self.header
            },
        );
        match write_all_at(&f, h, 0).await {
            Ok(len) => Ok((f, len)),
            Err(e) => {
                // A file without its whole header would stop the next start: remove it.
                let _ = f.close().await;
                let _ = fs::remove_file(self.dir.join(name));
                Err(e)
            }
        }
    }

    /// After a failed write: forgets what was not written, drops an unfinished snapshot and
    /// cuts the current segment back to what was acknowledged before the failed group
    /// (`start_*`: its segment and length then), so no later record lands behind a torn one.
    fn undo(&mut self, start_segment: u64, start_len: Option<u64>) {
        self.buf = Vec::new();
        if let Some((n, _, _)) = self.snap.take() {
            let _ = fs::remove_file(self.dir.join(format!("snap-{n:010}.tmp")));
        }
        if let Some((_, len)) = &mut self.file {
            let good = match start_len {
                Some(l) if self.segment == start_segment => l,
                _ => log::HEADER_LEN as u64,
            };
            *len = good;
            self.trim_to = Some(good);
            // Nothing past `good` can be read back (it may have been, mid-group).
            self.written.set((self.segment, good));
        }
        if let Err(e) = self.trim() {
            tracing::error!(error = %e, "trimming the store's unacknowledged tail failed (retried)");
        }
    }

    /// Carries out the trim owed, if any. A marker file covers the moment in between, should
    /// the process end there; it stays while the trim keeps failing.
    fn trim(&mut self) -> std::io::Result<()> {
        let Some(good) = self.trim_to else {
            return Ok(());
        };
        let Some((f, _)) = &self.file else {
            self.trim_to = None;
            return Ok(());
        };
        let marker = self.dir.join(unacked_marker(self.segment, good));
        let _ = File::create(&marker);
        borrowed(f).set_len(good)?;
        let _ = fs::remove_file(&marker);
        self.trim_to = None;
        Ok(())
    }

    /// Whether writes can succeed again: carries out a trim still owed, then writes
    /// `PROBE_BYTES` into a scratch file of the data directory and removes it (the log is not
    /// touched; a leftover `.tmp` is removed at start-up). Synchronous, like the log appends,
    /// so the committer never finds the writer missing.
    fn probe(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.trim()?;
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join("probe.tmp");
        let res = File::create(&path).and_then(|f| f.write_all_at(&[0u8; PROBE_BYTES], 0));
        let _ = fs::remove_file(&path);
        res
    }

    /// Ends the current segment; the next write starts `wal-<n>`.
    async fn rotate(&mut self, n: u64) -> std::io::Result<()> {
        if let Some((f, _)) = self.file.take() {
            f.fdatasync().await.map_err(std::io::Error::from)?;
            f.close().await.map_err(std::io::Error::from)?;
        }
        self.segment = n;
        // The closed segments are all written; nothing of `wal-<n>` yet.
        self.written.set((n, 0));
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.trim()?;
        if self.file.is_none() {
            self.file = Some(self.create(&seg_name("wal", self.segment), false).await?);
            // The new file's name must survive a crash too.
            sync_dir(&self.dir).await?;
        }
        let (f, len) = self.file.as_mut().expect("just opened");
        append_at(f, &self.buf, *len)?;
        *len += self.buf.len() as u64;
        self.written.set((self.segment, *len));
        self.buf.clear();
        if self.buf.capacity() > 1 << 20 {
            // A burst's big buffer is not kept for the quiet that follows.
            self.buf = Vec::new();
        }
        Ok(())
    }

    async fn snapshot(
        &mut self,
        segment: u64,
        bytes: Vec<u8>,
        first: bool,
        done: bool,
    ) -> std::io::Result<()> {
        let tmp = format!("snap-{segment:010}.tmp");
        // A snapshot is only whole when every part of it was written after its rotation: a
        // failure in between (which dropped the file) ends it.
        let started = self.snap.as_ref().is_some_and(|(n, _, _)| *n == segment);
        if !(if first {
            self.segment == segment
        } else {
            started
        }) {
            return Err(std::io::Error::other(
                "snapshot abandoned: a write failed since it began",
            ));
        }
        if first {
            let _ = fs::remove_file(self.dir.join(&tmp));
            let f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .buffered_open(self.dir.join(&tmp))
                .await
                .map_err(std::io::Error::from)?;
            self.snap = Some((segment, f, 0));
        }
        let (_, f, len) = self.snap.as_mut().expect("just set");
        *len += write_all_at(f, bytes, *len).await?;
        if done {
            let (_, f, _) = self.snap.take().expect("just set");
            f.fdatasync().await.map_err(std::io::Error::from)?;
            f.close().await.map_err(std::io::Error::from)?;
            glommio::io::rename(
                self.dir.join(&tmp),
                self.dir.join(seg_name("snap", segment)),
            )
            .await
            .map_err(std::io::Error::from)?;
            sync_dir(&self.dir).await?;
        }
        Ok(())
    }

    /// Deletes every file before segment `segment`, which its snapshot replaces.
    async fn prune(&mut self, segment: u64) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let n = name
                .strip_suffix(".log")
                .and_then(|r| r.strip_prefix("wal-").or_else(|| r.strip_prefix("snap-")))
                .and_then(|n| n.parse::<u64>().ok());
            if n.is_some_and(|n| n < segment) {
                glommio::io::remove(entry.path())
                    .await
                    .map_err(std::io::Error::from)?;
            }
        }
        Ok(())
    }

    /// Carries out one group in order; returns its last ticket, whether it closed the store,
    /// and the first error (after which the rest of the group is skipped).
    async fn commit(&mut self, group: Vec<IoOp>) -> (u64, bool, std::io::Result<()>) {
        let start = (self.segment, self.file.as_ref().map(|(_, l)| *l));
        let (last, closing, res) = self.carry_out(group).await;
        if res.is_err() {
            self.undo(start.0, start.1);
        }
        (last, closing, res)
    }

    async fn carry_out(&mut self, group: Vec<IoOp>) -> (u64, bool, std::io::Result<()>) {
        let mut last = 0;
        let mut closing = false;
        let mut res: std::io::Result<()> = Ok(());
        let mut wrote = false;
        for op in group {
            if res.is_err() {
                last = ticket_of(&op);
                continue;
            }
            res = match op {
                IoOp::Write { ticket, at, bytes } => {
                    last = ticket;
                    wrote = true;
                    if at != self.end() {
                        // Told to land where an earlier, failed write was: its caller's
                        // index would point at other bytes.
                        res = Err(std::io::Error::other(
                            "an earlier write failed; this one was placed after it",
                        ));
                        continue;
                    }
                    if self.buf.is_empty() {
                        self.buf = bytes;
                    } else {
                        self.buf.extend_from_slice(&bytes);
                    }
                    if self.buf.len() > 8 << 20 {
                        self.flush().await
                    } else {
                        Ok(())
                    }
                }
                IoOp::Rotate { ticket, segment } => {
                    last = ticket;
                    match self.flush().await {
                        Ok(()) => self.rotate(segment).await,
                        e => e,
                    }
                }
                IoOp::Snapshot {
                    ticket,
                    segment,
                    bytes,
                    first,
                    done,
                } => {
                    last = ticket;
                    match self.flush().await {
                        Ok(()) => self.snapshot(segment, bytes, first, done).await,
                        e => e,
                    }
                }
                IoOp::Prune { ticket, segment } => {
                    last = ticket;
                    self.prune(segment).await
                }
                IoOp::Close { ticket } => {
                    last = ticket;
                    closing = true;
                    match self.flush().await {
                        Ok(()) => match self.file.take() {
                            Some((f, _)) => match f.fdatasync().await {
                                Ok(()) => f.close().await.map_err(std::io::Error::from),
                                Err(e) => Err(e.into()),
                            },
                            None => Ok(()),
                        },
                        e => e,
                    }
                }
            };
        }
        if res.is_ok() {
            res = self.flush().await;
        }
        if res.is_ok() && wrote && self.fsync {
            if let Some((f, _)) = &self.file {
                res = f.fdatasync().await.map_err(std::io::Error::from);
            }
        }
        (last, closing, res)
    }
}

fn ticket_of(op: &IoOp) -> u64 {
    match op {
        IoOp::Write { ticket, .. }
        | IoOp::Rotate { ticket, .. }
        | IoOp::Snapshot { ticket, .. }
        | IoOp::Prune { ticket, .. }
        | IoOp::Close { ticket } => *ticket,
    }
}

impl Storage for EmbeddedStore {
    async fn load_user(&self, uid: &str) -> Result<UserMeta, StorageError> {
        Ok(self.inner.index.meta(uid))
    }

    async fn append(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError> {
        let inner = &self.inner;
        let mut bytes = Vec::with_capacity(64 + body.body.len() + entries.len() * 24);
        let len = encode_message(&mut bytes, body, expires_at, entries);
        // Where `write` puts it (read in the same turn).
        let (segment, at) = inner.tail.get();
        let loc = Loc::new(FileId::wal(segment), at, len, expires_at);
        // In the index at once, so a snapshot that starts meanwhile has it; taken back if the
        // write fails (the shard shows a seq only once it is written, see `Shard::settle`).
        inner.index.apply_append(&loc, entries, 0);
        let res = inner.write(bytes).await;
        if res.is_err() {
            inner.index.unapply_append(entries);
        }
        res
    }

    /// One record holds the message and its key (the first of its records, when a fan-out
    /// is split), so a restart finds both or neither.
    async fn append_keyed(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
        idem: &IdemRecord,
    ) -> Result<(), StorageError> {
        let inner = &self.inner;
        let (segment, at) = inner.tail.get();
        let mut bytes = Vec::with_capacity(96 + body.body.len() + entries.len() * 24);
        let mut chunks = entries.chunks(ENTRIES_PER_RECORD);
        let first = chunks.next().unwrap_or_default();
        log::encode_append_keyed(&mut bytes, body, expires_at, first, idem_rec(idem));
        let file = FileId::wal(segment);
        let loc = Loc::new(file, at, bytes.len(), expires_at);
        inner.index.apply_append(&loc, first, 0);
        for chunk in chunks {
            let start = bytes.len();
            log::encode_append(&mut bytes, body, expires_at, chunk);
            let loc = Loc::new(file, at + start as u64, bytes.len() - start, expires_at);
            inner.index.apply_append(&loc, chunk, 0);
        }
        inner.index.apply_idem(idem, crate::stats::unix_now());
        let res = inner.write(bytes).await;
        if res.is_err() {
            inner.index.unapply_append(entries);
            inner.index.unapply_idem(&idem.id);
        }
        res
    }

    async fn put_idem(&self, idem: &IdemRecord) -> Result<(), StorageError> {
        self.inner.index.apply_idem(idem, crate::stats::unix_now());
        let mut bytes = Vec::with_capacity(48 + idem.id.len());
        log::encode_idem(&mut bytes, idem_rec(idem));
        let res = self.inner.write(bytes).await;
        if res.is_err() {
            self.inner.index.unapply_idem(&idem.id);
        }
        res
    }

    async fn idem_get(&self, id: &str, now: u64) -> Result<Option<IdemRecord>, StorageError> {
        Ok(self.inner.index.idem(id, now))
    }

    fn idem_held(&self, now: u64) -> usize {
        self.inner.index.idem_len(now)
    }

    async fn set_ack(&self, uid: &str, last_ack: u64) -> Result<(), StorageError> {
        self.inner.index.apply_ack(uid, last_ack);
        let mut bytes = Vec::with_capacity(32 + uid.len());
        log::encode_ack(&mut bytes, uid, last_ack);
        self.inner.write(bytes).await
    }

    async fn offline(
        &self,
        uid: &str,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<StoredMsg>, StorageError> {
        // Twice at most: a compaction may replace a file between listing and reading.
        let mut again = true;
        loop {
            let listed = self.inner.index.list(uid, after, upto, limit, now);
            let locs: Vec<Loc> = listed.iter().map(|(_, l)| *l).collect();
            match self.inner.read(&locs).await {
                Ok(msgs) => {
                    return Ok(listed
                        .iter()
                        .zip(msgs)
                        .map(|((seq, _), (body, expires_at))| StoredMsg {
                            seq: *seq,
                            expires_at,
                            body: Rc::new(body),
                        })
                        .collect())
                }
                Err(ReadError::Gone(_)) if again => again = false,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn subscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        self.inner.index.apply_sub(cid, uid, true);
        let mut bytes = Vec::with_capacity(32 + cid.len() + uid.len());
        log::encode_sub(&mut bytes, cid, uid, true);
        self.inner.write(bytes).await
    }

    async fn unsubscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        self.inner.index.apply_sub(cid, uid, false);
        let mut bytes = Vec::with_capacity(32 + cid.len() + uid.len());
        log::encode_sub(&mut bytes, cid, uid, false);
        self.inner.write(bytes).await
    }

    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        Ok(self.inner.index.members(cid))
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StorageError> {
        // Memory now; the disk copy goes at the next snapshot, which skips expired messages.
        Ok(self.inner.index.purge(now))
    }

    /// An empty write, queued behind every earlier one (and synced with --fsync=always).
    async fn flush(&self) -> Result<(), StorageError> {
        self.inner.write(Vec::new()).await
    }

    /// Failing after a write failed, until a write or the probe succeeds again.
    async fn check(&self) -> Result<(), StorageError> {
        self.inner.refusal().map_or(Ok(()), Err)
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgType;

    fn body(text: &str) -> Rc<MsgBody> {
        Rc::new(MsgBody {
            kind: MsgType::User,
            from: "op".into(),
            channel: None,
            body: text.into(),
        })
    }

    /// Recovery reads a file a window at a time (4 KiB under test): records cut by a window's
    /// end, and ones longer than a window, come back whole; a torn last record is still found.
    #[test]
    fn recovery_reads_files_a_window_at_a_time() {
        let dir = std::env::temp_dir().join(format!("ipush-window-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let d = dir.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let texts: Vec<String> = (0..300)
                    .map(|i| {
                        let long = if i % 97 == 5 { 9000 } else { 60 + i % 50 };
                        format!("m{i} {}", "x".repeat(long))
                    })
                    .collect();
                let (s, _) = EmbeddedStore::open(&d, 0, 1, false).unwrap();
                let uid: Rc<str> = Rc::from("w");
                for (i, t) in texts.iter().enumerate() {
                    let at = [(uid.clone(), i as u64 + 1)];
                    s.append(&body(t), 4_000_000_000, &at).await.unwrap();
                }
                s.shutdown().await.unwrap();

                let (s, _) = EmbeddedStore::open(&d, 0, 1, false).unwrap();
                let got = s.offline("w", 0, u64::MAX, 1000, 1).await.unwrap();
                let got: Vec<String> = got.iter().map(|m| m.body.body.to_string()).collect();
                assert_eq!(got, texts);
                s.shutdown().await.unwrap();

                let wal = fs::read_dir(&d)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.to_string_lossy().ends_with(".log"))
                    .unwrap();
                let len = fs::metadata(&wal).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&wal)
                    .unwrap()
                    .set_len(len - 3)
                    .unwrap();
                match EmbeddedStore::open(&d, 0, 1, false) {
                    Err(StorageError::Corrupt(e)) => {
                        assert!(e.contains("ends inside a record"), "{e}")
                    }
                    Err(e) => panic!("{e}"),
                    Ok(_) => panic!("a torn last record was not found"),
                }
            })
            .unwrap()
            .join()
            .unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
