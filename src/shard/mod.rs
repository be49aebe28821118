//! The per-core world: `Shard` owns this core's users (seq counters, acks, streams), channel
//! member cache, counters, storage handle and links to the other cores. Runs on its core's
//! executor only; everything inside is `Rc`/`RefCell`, so nothing here can be shared by mistake.

pub mod conn;
pub mod ids;
pub mod msg;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::channels::local_channel;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::{GlommioError, ResourceType};

use crate::auth::Authenticator;
use crate::cluster::bridge::{CoreLink, Outbound};
use crate::cluster::wire::{self, Body, Frame};
use crate::cluster::{Membership, NodeId};
use crate::config::Config;
use crate::protocol::MsgType;
use crate::stats::{Counters, Rates, Sampler, Snapshot};
use crate::storage::{MsgBody, Storage, StorageError, Store, StoredMsg, UserMeta};
use conn::{Conn, Out};
use ids::{shard_of, ConnId, ShardId};
use msg::{Rep, Req, ShardMsg};

type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Set<K> = HashSet<K, ahash::RandomState>;

/// Default message lifetime: 7 days.
pub const DEFAULT_TTL: u64 = 604_800;

/// A user of this core. Created on first touch; its meta is loaded from storage once.
pub struct User {
    pub uid: Rc<str>,
    meta: Cell<UserMeta>,
    loaded: Cell<bool>,
    conn: RefCell<Option<Rc<Conn>>>,
}

impl User {
    pub fn meta(&self) -> UserMeta {
        self.meta.get()
    }

    pub fn conn(&self) -> Option<Rc<Conn>> {
        self.conn.borrow().clone()
    }
}

enum Channel {
    /// Members are being read from storage; changes made meanwhile are replayed on top.
    Loading {
        changes: Vec<(Rc<str>, bool)>,
        waiters: Vec<Waker>,
    },
    Loaded(Set<Rc<str>>),
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("connection limit reached")]
    Limit,
    #[error("server shutting down")]
    Closing,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Shard {
    pub id: ShardId,
    pub cores: usize,
    pub cfg: Arc<Config>,
    pub auth: Authenticator,
    pub store: Store,
    pub stats: Counters,
    /// Wall clock at start, unix microseconds.
    pub started_unix_us: u64,
    started: Instant,
    conn_limit: usize,
    users: RefCell<Map<Rc<str>, Rc<User>>>,
    /// Tasks waiting for a user whose meta is being loaded (kept here, not in every `User`).
    loading: RefCell<Map<Rc<str>, Vec<Waker>>>,
    channels: RefCell<Map<Rc<str>, Channel>>,
    conns: RefCell<Map<ConnId, Rc<Conn>>>,
    next_conn: Cell<u64>,
    peers: Vec<Option<ConnectedSender<ShardMsg>>>,
    pending: RefCell<Map<u64, local_channel::LocalSender<Rep>>>,
    next_req: Cell<u64>,
    pub sampler: RefCell<Sampler>,
    closing: Cell<bool>,
    /// Which node owns a uid; one node when there is no cluster.
    pub members: Arc<Membership>,
    /// This core's end of the cluster bus (set at start-up when there is a cluster).
    bus: std::cell::OnceCell<CoreLink>,
    /// Streams with queued messages, for the flusher; each appears once (`Conn::dirty`).
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// The flusher, parked while `dirty` is empty.
    flusher: RefCell<Option<Waker>>,
}

/// Where a uid's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Core(ShardId),
    Node(NodeId),
}

impl Shard {
    pub fn new(
        id: ShardId,
        cfg: Arc<Config>,
        store: Store,
        peers: Vec<Option<ConnectedSender<ShardMsg>>>,
        started_unix_us: u64,
    ) -> Self {
        let cores = peers.len().max(1);
        let cfg_for_members = cfg.clone();
        Shard {
            id,
            cores,
            auth: Authenticator::from_config(&cfg),
            conn_limit: cfg.max_connections.div_ceil(cores),
            cfg,
            store,
            stats: Counters::default(),
            started_unix_us,
            started: Instant::now(),
            users: RefCell::default(),
            loading: RefCell::default(),
            channels: RefCell::default(),
            conns: RefCell::default(),
            next_conn: Cell::new(1),
            peers,
            pending: RefCell::default(),
            next_req: Cell::new(1),
            sampler: RefCell::default(),
            closing: Cell::new(false),
            members: Arc::new(Membership::from_config(&cfg_for_members)),
            bus: std::cell::OnceCell::new(),
            dirty: RefCell::default(),
            flusher: RefCell::default(),
        }
    }

    /// Connects this core to the cluster bus.
    pub fn attach_bus(&self, link: CoreLink) {
        let _ = self.bus.set(link);
    }

    pub fn bus(&self) -> Option<&CoreLink> {
        self.bus.get()
    }

    /// Seconds since this core started (the clock of heartbeats).
    pub fn clock(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The core of this node that owns `uid` (whichever node owns it).
    pub fn owner(&self, uid: &str) -> ShardId {
        shard_of(uid, self.cores)
    }

    /// Where `uid`'s work runs: a core here, or another node.
    pub fn route(&self, uid: &str) -> Route {
        let node = self.members.owner(uid);
        if node == self.members.me() {
            Route::Core(self.owner(uid))
        } else {
            Route::Node(node)
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    pub fn stream_count(&self) -> usize {
        self.conns.borrow().len()
    }

    // ---- users -------------------------------------------------------------------------

    /// The user, its meta loaded (once; concurrent callers wait for the first load).
    pub async fn user(&self, uid: &str) -> Result<Rc<User>, StorageError> {
        loop {
            let existing = self.users.borrow().get(uid).cloned();
            match existing {
                Some(u) if u.loaded.get() => return Ok(u),
                Some(u) => {
                    // Another task is loading it: wait, then look again (the load may fail).
                    let mut registered = false;
                    poll_fn(|cx| {
                        if u.loaded.get() || registered {
                            return Poll::Ready(());
                        }
                        registered = true;
                        self.loading
                            .borrow_mut()
                            .entry(u.uid.clone())
                            .or_default()
                            .push(cx.waker().clone());
                        Poll::Pending
                    })
                    .await;
                }
                None => {
                    let uid: Rc<str> = Rc::from(uid);
                    let user = Rc::new(User {
                        uid: uid.clone(),
                        meta: Cell::default(),
                        loaded: Cell::new(false),
                        conn: RefCell::default(),
                    });
                    self.users.borrow_mut().insert(uid.clone(), user.clone());
                    let res = self.store.load_user(&uid).await;
                    match &res {
                        Ok(meta) => {
                            user.meta.set(*meta);
                            user.loaded.set(true);
                        }
                        Err(_) => {
                            self.stats
                                .storage_error
                                .set(self.stats.storage_error.get() + 1);
                            self.users.borrow_mut().remove(&uid);
                        }
                    }
                    let waiters = self.loading.borrow_mut().remove(&uid);
                    for w in waiters.into_iter().flatten() {
                        w.wake();
                    }
                    return res.map(|_| user);
                }
            }
        }
    }

    // ---- streams -----------------------------------------------------------------------

    /// Registers a new stream for `uid`, replacing an older one. Returns the stream and the
    /// seq up to which its offline replay must read: everything above arrives live.
    pub async fn attach(&self, uid: &str) -> Result<(Rc<Conn>, u64, u64), AttachError> {
        if self.closing.get() {
            return Err(AttachError::Closing);
        }
        let user = self.user(uid).await?;
        // From here to the return, no await: the seam between replay and live is exact.
        let old = user.conn.borrow_mut().take();
        if old.is_none() && self.conns.borrow().len() >= self.conn_limit {
            self.bump(&self.stats.limit_refused);
            return Err(AttachError::Limit);
        }
        if let Some(old) = old {
            old.finish(Some("replaced"));
            self.bump(&self.stats.user_reconnect);
        }
        let id = ConnId(self.next_conn.get());
        self.next_conn.set(id.0 + 1);
        let conn = Rc::new(Conn::new(id, user.uid.clone(), self.clock()));
        *user.conn.borrow_mut() = Some(conn.clone());
        self.conns.borrow_mut().insert(id, conn.clone());
        self.bump(&self.stats.user_connect);
        self.stats.user_number.set(self.conns.borrow().len() as u64);
        let meta = user.meta();
        Ok((conn, meta.last_ack, meta.max_seq))
    }

    /// Reads the offline messages `(after, upto]` and lets the stream flow.
    pub async fn replay(&self, conn: &Conn, after: u64, upto: u64) {
        let now = crate::stats::unix_now();
        let msgs = if upto > after {
            match self
                .store
                .offline(&conn.uid, after, upto, self.cfg.max_offline_msg_num, now)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(uid = %conn.uid, error = %e, "offline replay failed");
                    self.bump(&self.stats.storage_error);
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        self.stats
            .replayed
            .set(self.stats.replayed.get() + msgs.len() as u64);
        let items = msgs
            .into_iter()
            .map(|m| Out::Msg {
                body: m.body,
                seq: Some(m.seq),
            })
            .collect();
        conn.finish_replay(items);
    }

    /// Forgets a stream whose task has ended.
    pub fn detach(&self, conn: &Rc<Conn>) {
        if self.conns.borrow_mut().remove(&conn.id).is_none() {
            return;
        }
        if let Some(user) = self.users.borrow().get(&conn.uid) {
            let mut slot = user.conn.borrow_mut();
            if slot.as_ref().is_some_and(|c| c.id == conn.id) {
                *slot = None;
            }
        }
        self.bump(&self.stats.user_disconnect);
        self.stats.user_number.set(self.conns.borrow().len() as u64);
    }

    /// Every stream of this core (for heartbeats and shutdown).
    pub fn streams(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    /// Queues `item` to the user's stream if it has one; a full queue closes the stream.
    fn deliver(&self, user: &User, item: Out) {
        if let Some(conn) = user.conn() {
            self.push(&conn, item);
        }
    }

    /// Queues `item` to `conn` for the flusher; a full queue closes it (its messages stay
    /// stored).
    pub fn push(&self, conn: &Rc<Conn>, item: Out) {
        if !conn.push(item, self.cfg.send_queue_max) {
            tracing::debug!(uid = %conn.uid, "slow reader: send queue full, closing");
            self.bump(&self.stats.slow_disconnect);
            conn.abort();
            return;
        }
        if !conn.dirty.replace(true) {
            let mut dirty = self.dirty.borrow_mut();
            dirty.push(conn.clone());
            if dirty.len() == 1 {
                if let Some(w) = self.flusher.borrow_mut().take() {
                    w.wake();
                }
            }
        }
    }

    /// The streams to flush now (waits while there are none); `spare` is an empty list whose
    /// allocation is reused for the next batch.
    pub async fn take_dirty(&self, spare: Vec<Rc<Conn>>) -> Vec<Rc<Conn>> {
        let mut spare = Some(spare);
        std::future::poll_fn(|cx| {
            let mut dirty = self.dirty.borrow_mut();
            if dirty.is_empty() {
                *self.flusher.borrow_mut() = Some(cx.waker().clone());
                return std::task::Poll::Pending;
            }
            let batch = std::mem::replace(&mut *dirty, spare.take().unwrap_or_default());
            std::task::Poll::Ready(batch)
        })
        .await
    }

    pub fn disconnect(&self, uid: &str) -> bool {
        let conn = self.users.borrow().get(uid).and_then(|u| u.conn());
        match conn {
            Some(c) => {
                c.finish(Some("disconnected"));
                true
            }
            None => false,
        }
    }

    /// Stops accepting new streams and ends every stream with its terminating chunk.
    pub fn begin_shutdown(&self) {
        self.closing.set(true);
        for c in self.streams() {
            c.finish(None);
        }
    }

    // ---- publishing --------------------------------------------------------------------

    /// A message to one user of this core: next seq, persisted (unless ttl is 0), delivered
    /// live when the user has a stream.
    pub async fn publish_user(
        &self,
        to: &str,
        from: &str,
        body: &str,
        ttl: u64,
    ) -> Result<Option<u64>, StorageError> {
        let user = self.user(to).await?;
        let body = Rc::new(MsgBody {
            kind: MsgType::User,
            from: from.into(),
            channel: None,
            body: body.into(),
        });
        if ttl == 0 {
            self.deliver(&user, Out::Msg { body, seq: None });
            return Ok(None);
        }
        // Seq, live delivery and the storage write are issued with no await between them.
        let seq = self.next_seq(&user);
        self.deliver(
            &user,
            Out::Msg {
                body: body.clone(),
                seq: Some(seq),
            },
        );
        let expires = crate::stats::unix_now().saturating_add(ttl);
        self.persist(&body, expires, &[(user.uid.clone(), seq)])
            .await?;
        Ok(Some(seq))
    }

    /// This core's part of a channel message: every local member gets its own seq.
    pub async fn publish_channel(
        &self,
        channel: &str,
        from: &str,
        body: &str,
        ttl: u64,
    ) -> Result<u64, StorageError> {
        let members = self.channel_members(channel).await?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut users = Vec::with_capacity(members.len());
        let mut awaited = false;
        for uid in &members {
            let cached = self
                .users
                .borrow()
                .get(uid)
                .filter(|u| u.loaded.get())
                .cloned();
            match cached {
                Some(u) => users.push(u),
                None => {
                    awaited = true;
                    users.push(self.user(uid).await?);
                }
            }
        }
        if awaited {
            // Membership may have changed while users loaded: deliver to who is a member now.
            let channels = self.channels.borrow();
            if let Some(Channel::Loaded(set)) = channels.get(channel) {
                users.retain(|u| set.contains(&u.uid));
            }
        }
        let body = Rc::new(MsgBody {
            kind: MsgType::Channel,
            from: from.into(),
            channel: Some(channel.into()),
            body: body.into(),
        });
        if ttl == 0 {
            for u in &users {
                self.deliver(
                    u,
                    Out::Msg {
                        body: body.clone(),
                        seq: None,
                    },
                );
            }
            return Ok(users.len() as u64);
        }
        let mut entries = Vec::with_capacity(users.len());
        for u in &users {
            let seq = self.next_seq(u);
            self.deliver(
                u,
                Out::Msg {
                    body: body.clone(),
                    seq: Some(seq),
                },
            );
            entries.push((u.uid.clone(), seq));
        }
        let expires = crate::stats::unix_now().saturating_add(ttl);
        self.persist(&body, expires, &entries).await?;
        Ok(entries.len() as u64)
    }

    fn next_seq(&self, user: &User) -> u64 {
        let mut meta = user.meta.get();
        meta.max_seq += 1;
        user.meta.set(meta);
        meta.max_seq
    }

    async fn persist(
        &self,
        body: &Rc<MsgBody>,
        expires: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError> {
        let res = self.store.append(body, expires, entries).await;
        match &res {
            Ok(()) => self
                .stats
                .stored
                .set(self.stats.stored.get() + entries.len() as u64),
            Err(e) => {
                tracing::error!(error = %e, "storing a message failed");
                self.bump(&self.stats.storage_error);
            }
        }
        res
    }

    /// `last_ack = max(last_ack, s)`, never above the highest seq given.
    pub async fn ack(&self, uid: &str, s: u64) -> Result<(), StorageError> {
        let user = self.user(uid).await?;
        let mut meta = user.meta();
        let new = s.min(meta.max_seq);
        if new <= meta.last_ack {
            return Ok(());
        }
        meta.last_ack = new;
        user.meta.set(meta);
        self.store.set_ack(uid, new).await
    }

    /// Offline messages of `uid` as JSON lines, for `/msg`.
    pub async fn offline_json(&self, uid: &str) -> Result<Vec<String>, StorageError> {
        let user = self.user(uid).await?;
        let meta = user.meta();
        let msgs = self
            .store
            .offline(
                uid,
                meta.last_ack,
                meta.max_seq,
                self.cfg.max_offline_msg_num,
                crate::stats::unix_now(),
            )
            .await?;
        Ok(msgs.iter().map(|m| stored_json(uid, m)).collect())
    }

    // ---- channels ----------------------------------------------------------------------

    pub async fn subscribe(&self, uid: &str, cid: &str, on: bool) -> Result<(), StorageError> {
        let uid: Rc<str> = Rc::from(uid);
        // The cache changes at once, so a publish right after sees it.
        match self.channels.borrow_mut().get_mut(cid) {
            Some(Channel::Loaded(set)) => {
                if on {
                    set.insert(uid.clone());
                } else {
                    set.remove(&uid);
                }
            }
            Some(Channel::Loading { changes, .. }) => changes.push((uid.clone(), on)),
            None => {}
        }
        if on {
            self.store.subscribe(cid, &uid).await
        } else {
            self.store.unsubscribe(cid, &uid).await
        }
    }

    /// This core's members of `cid`, read from storage on first use and cached after.
    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        loop {
            let mut wait = false;
            match self.channels.borrow_mut().get_mut(cid) {
                Some(Channel::Loaded(set)) => return Ok(set.iter().cloned().collect()),
                Some(Channel::Loading { .. }) => wait = true,
                None => {}
            }
            if wait {
                let mut registered = false;
                poll_fn(|cx| {
                    if registered {
                        return Poll::Ready(());
                    }
                    if let Some(Channel::Loading { waiters, .. }) =
                        self.channels.borrow_mut().get_mut(cid)
                    {
                        waiters.push(cx.waker().clone());
                        registered = true;
                        return Poll::Pending;
                    }
                    Poll::Ready(())
                })
                .await;
                continue;
            }
            let key: Rc<str> = Rc::from(cid);
            self.channels.borrow_mut().insert(
                key.clone(),
                Channel::Loading {
                    changes: Vec::new(),
                    waiters: Vec::new(),
                },
            );
            let loaded = self.store.channel_members(cid).await;
            let prev = self.channels.borrow_mut().remove(&key);
            let (changes, waiters) = match prev {
                Some(Channel::Loading { changes, waiters }) => (changes, waiters),
                _ => (Vec::new(), Vec::new()),
            };
            let res = match loaded {
                Ok(list) => {
                    let mut set: Set<Rc<str>> = list.into_iter().collect();
                    for (uid, on) in changes {
                        if on {
                            set.insert(uid);
                        } else {
                            set.remove(&uid);
                        }
                    }
                    let members = set.iter().cloned().collect();
                    self.channels.borrow_mut().insert(key, Channel::Loaded(set));
                    Ok(members)
                }
                Err(e) => {
                    self.bump(&self.stats.storage_error);
                    Err(e)
                }
            };
            for w in waiters {
                w.wake();
            }
            return res;
        }
    }

    // ---- cross-core --------------------------------------------------------------------

    /// Runs `req` on the core that must handle it and returns its answer.
    pub async fn call(self: &Rc<Self>, to: ShardId, req: Req) -> Rep {
        if to == self.id {
            return self.handle_req(req).await;
        }
        let id = self.next_req.get();
        self.next_req.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        let sent = self
            .send_to(
                to,
                ShardMsg::Req {
                    id,
                    from: self.id,
                    req,
                },
            )
            .await;
        if !sent {
            self.pending.borrow_mut().remove(&id);
            return Rep::Err(format!("core {to} unavailable"));
        }
        rx.recv()
            .await
            .unwrap_or_else(|| Rep::Err(format!("core {to} gave no answer")))
    }

    /// Runs `req` on `to` without waiting for an answer (client messages).
    pub async fn cast(self: &Rc<Self>, to: ShardId, req: Req) {
        if to == self.id {
            if let Rep::Err(e) = self.handle_req(req).await {
                tracing::warn!(error = %e, "client message failed");
            }
            return;
        }
        self.send_to(
            to,
            ShardMsg::Req {
                id: 0,
                from: self.id,
                req,
            },
        )
        .await;
    }

    /// Sends over the bounded channel to `to`, waiting for room when it is full.
    pub async fn send_to(&self, to: ShardId, msg: ShardMsg) -> bool {
        let Some(Some(tx)) = self.peers.get(to.0) else {
            self.bump(&self.stats.mesh_dropped);
            return false;
        };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                self.bump(&self.stats.mesh_full);
                if tx.send(msg).await.is_err() {
                    self.bump(&self.stats.mesh_dropped);
                    return false;
                }
                true
            }
            Err(_) => {
                self.bump(&self.stats.mesh_dropped);
                false
            }
        }
    }

    /// Sends an answer without ever blocking the receiving loop (which would deadlock two
    /// cores waiting on each other's full channels).
    fn reply(self: &Rc<Self>, to: ShardId, id: u64, rep: Rep) {
        let Some(Some(tx)) = self.peers.get(to.0) else {
            return;
        };
        match tx.try_send(ShardMsg::Rep { id, rep }) {
            Ok(()) => {}
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                self.bump(&self.stats.mesh_full);
                let me = self.clone();
                glommio::spawn_local(async move {
                    if let Some(Some(tx)) = me.peers.get(to.0) {
                        if tx.send(msg).await.is_err() {
                            me.bump(&me.stats.mesh_dropped);
                        }
                    }
                })
                .detach();
            }
            Err(_) => self.bump(&self.stats.mesh_dropped),
        }
    }

    /// Handles one message from another core, in arrival order.
    pub async fn on_message(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Handoff(h) => crate::transport::accept::adopt(self.clone(), h),
            ShardMsg::Req { id, from, req } => {
                let rep = self.handle_req(req).await;
                if id != 0 {
                    self.reply(from, id, rep);
                } else if let Rep::Err(e) = rep {
                    tracing::warn!(error = %e, "cross-core message failed");
                }
            }
            ShardMsg::Rep { id, rep } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    let _ = tx.try_send(rep);
                }
            }
        }
    }

    /// The request handlers of the owning core.
    pub async fn handle_req(self: &Rc<Self>, req: Req) -> Rep {
        // The database not answering is a 503 (retry later); anything else a 500.
        let storage = |e: StorageError| match e {
            StorageError::Unavailable(_) => Rep::Unavailable(e.to_string()),
            StorageError::Corrupt(_) => Rep::Err(e.to_string()),
        };
        match req {
            Req::PubUser {
                to,
                from,
                body,
                ttl,
            } => self
                .publish_user(&to, &from, &body, ttl)
                .await
                .map_or_else(storage, Rep::Seq),
            Req::PubChannel {
                channel,
                from,
                body,
                ttl,
            } => self
                .publish_channel(&channel, &from, &body, ttl)
                .await
                .map_or_else(storage, Rep::Count),
            Req::Sub { uid, cid } => self
                .subscribe(&uid, &cid, true)
                .await
                .map_or_else(storage, |_| Rep::Ok),
            Req::Unsub { uid, cid } => self
                .subscribe(&uid, &cid, false)
                .await
                .map_or_else(storage, |_| Rep::Ok),
            Req::Msg { uid } => self
                .offline_json(&uid)
                .await
                .map_or_else(storage, Rep::Msgs),
            Req::Disconnect { uid } => Rep::Found(self.disconnect(&uid)),
            Req::Client { uid, msg } => {
                let conn = self.users.borrow().get(uid.as_str()).and_then(|u| u.conn());
                // Boxed: a client message may itself call back into handle_req.
                Box::pin(crate::transport::client_msg::handle(
                    self,
                    &uid,
                    conn.as_ref(),
                    msg,
                ))
                .await
                .map_or_else(storage, |_| Rep::Ok)
            }
            Req::Stats => {
                let rates = (self.id.0 == 0).then(|| self.sampler.borrow().rates.clone());
                Rep::Stats(Box::new((self.id, self.stats.snapshot(), rates)))
            }
        }
    }

    /// Runs `req` wherever `uid` lives and returns the answer.
    pub async fn call_user(self: &Rc<Self>, uid: &str, req: Req) -> Rep {
        match self.route(uid) {
            Route::Core(c) => self.call(c, req).await,
            Route::Node(n) => self.call_node(n, req).await,
        }
    }

    /// Runs `req` wherever `uid` lives, without an answer.
    pub async fn cast_user(self: &Rc<Self>, uid: &str, req: Req) {
        match self.route(uid) {
            Route::Core(c) => self.cast(c, req).await,
            Route::Node(n) => self.send_node(Some(n), 0, req),
        }
    }

    pub fn node_name(&self, n: NodeId) -> &str {
        &self.members.node(n).name
    }

    fn unavailable(&self, n: NodeId) -> Rep {
        Rep::Unavailable(format!("node {} unavailable", self.node_name(n)))
    }

    /// Sends `req` to one node (or, with None, to every peer) over the bus.
    fn send_node(&self, to: Option<NodeId>, id: u64, req: Req) {
        let Some(bus) = self.bus.get() else { return };
        let bytes = wire::encode(&Frame {
            from: self.members.me(),
            core: self.id,
            id,
            body: Body::Req(req),
        });
        let _ = bus.out.send(match to {
            Some(n) => Outbound::To(n, bytes),
            None => Outbound::All(bytes),
        });
    }

    /// Runs `req` on another node and waits (at most `--cluster_timeout_ms`) for its answer.
    pub async fn call_node(self: &Rc<Self>, node: NodeId, req: Req) -> Rep {
        let Some(bus) = self.bus.get() else {
            return self.unavailable(node);
        };
        if !bus.state.is_up(node) {
            return self.unavailable(node);
        }
        let id = self.next_req.get();
        self.next_req.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        self.send_node(Some(node), id, req);
        let limit = std::time::Duration::from_millis(self.cfg.cluster_timeout_ms);
        let got = glommio::timer::timeout(limit, async { Ok(rx.recv().await) }).await;
        self.pending.borrow_mut().remove(&id);
        match got {
            Ok(Some(rep)) => rep,
            _ => self.unavailable(node),
        }
    }

    /// A channel message for this node's members: every core delivers to its own.
    pub async fn publish_channel_node(self: &Rc<Self>, req: Req) -> Rep {
        let calls: Vec<_> = (0..self.cores)
            .map(|c| {
                let (me, req) = (self.clone(), req.clone());
                glommio::spawn_local(async move { me.call(ShardId(c), req).await })
            })
            .collect();
        let mut total = 0;
        let mut failure = None;
        for call in calls {
            match call.await {
                Rep::Count(n) => total += n,
                Rep::Err(e) => failure = Some(e),
                _ => {}
            }
        }
        failure.map_or(Rep::Count(total), Rep::Err)
    }

    /// A channel message for the whole cluster: this node's members and every peer's. An
    /// unreachable peer makes the answer 503 (its members did not get it).
    pub async fn publish_channel_cluster(self: &Rc<Self>, req: Req) -> Rep {
        let remote: Vec<_> = self
            .members
            .peers()
            .map(|n| {
                let (me, req) = (self.clone(), req.clone());
                glommio::spawn_local(async move { (n, me.call_node(n, req).await) })
            })
            .collect();
        let local = self.publish_channel_node(req).await;
        let mut out = local;
        for task in remote {
            let (_, rep) = task.await;
            match rep {
                Rep::Count(n) => {
                    if let Rep::Count(t) = &mut out {
                        *t += n;
                    }
                }
                other @ (Rep::Unavailable(_) | Rep::Err(_)) => out = other,
                _ => {}
            }
        }
        out
    }

    /// A client's channel message: this node's cores and every peer, no answer.
    pub async fn cast_channel_cluster(self: &Rc<Self>, req: Req) {
        if self.members.is_cluster() {
            self.send_node(None, 0, req.clone());
        }
        for core in 0..self.cores {
            self.cast(ShardId(core), req.clone()).await;
        }
    }

    /// Acts on frames the bus delivered to this core: requests from other nodes (answered
    /// over the bus) and answers to this core's own requests. One task per core.
    pub async fn bus_pump(self: Rc<Self>) {
        let Some(bus) = self.bus.get() else { return };
        loop {
            poll_fn(|cx| {
                bus.wake.register(cx.waker());
                if bus.inbox.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            while let Ok(frame) = bus.inbox.try_recv() {
                match frame.body {
                    Body::Rep(rep) => {
                        if let Some(tx) = self.pending.borrow_mut().remove(&frame.id) {
                            let _ = tx.try_send(rep);
                        }
                    }
                    Body::Req(req) => {
                        let me = self.clone();
                        glommio::spawn_local(async move {
                            let rep = match req {
                                Req::PubChannel { .. } => me.publish_channel_node(req).await,
                                Req::Stats => Rep::Err("stats are per node".into()),
                                req => me.handle_req(req).await,
                            };
                            if frame.id != 0 {
                                if let Some(bus) = me.bus.get() {
                                    let bytes = wire::encode(&Frame {
                                        from: me.members.me(),
                                        core: frame.core,
                                        id: frame.id,
                                        body: Body::Rep(rep),
                                    });
                                    let _ = bus.out.send(Outbound::To(frame.from, bytes));
                                }
                            }
                        })
                        .detach();
                    }
                    Body::Ping => {}
                }
            }
        }
    }

    /// Every core's counters (and core 0's per-second maxima).
    pub async fn gather_stats(self: &Rc<Self>) -> (Vec<(ShardId, Snapshot)>, Rates) {
        let mut per_core = Vec::with_capacity(self.cores);
        let mut rates = Rates::default();
        for core in 0..self.cores {
            if let Rep::Stats(b) = self.call(ShardId(core), Req::Stats).await {
                let (id, snap, r) = *b;
                per_core.push((id, snap));
                if let Some(r) = r {
                    rates = r;
                }
            }
        }
        (per_core, rates)
    }

    pub fn bump(&self, c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

/// A stored message as the JSON a client receives.
pub fn stored_json(to: &str, m: &StoredMsg) -> String {
    let mut out = Vec::with_capacity(64 + m.body.body.len());
    encode_msg(&mut out, to, &m.body, Some(m.seq));
    out.push(b'\n');
    String::from_utf8(out).expect("encoders write UTF-8")
}

/// Encodes a message to `to` as JSON.
pub fn encode_msg(out: &mut Vec<u8>, to: &str, body: &MsgBody, seq: Option<u64>) {
    match &body.channel {
        Some(c) => crate::protocol::encode_channel_msg(out, &body.from, to, c, &body.body, seq),
        None => crate::protocol::encode_user_msg(out, &body.from, to, &body.body, seq),
    }
}
