//! The per-core router: decides where work for a uid runs (this core, another core of this
//! node, another node), carries it there and brings the answer back — the pending-request
//! table, call/cast/answer over the bounded core channels, node calls over the bus, channel
//! fan-out and stats gathering. It acts on the core's `Shard` for work that lands here. Runs on
//! its core's executor only.

mod batch;
mod client;
mod fanout;
mod keyed;
mod nodes;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::sync::Semaphore;
use glommio::{GlommioError, ResourceType};

use crate::cluster::bus::CoreLink;
use crate::cluster::{Membership, NodeId, Owner};
use crate::ids::ShardId;
use crate::msg::{Answer, CoreMsg, Request};
use crate::shard::Shard;
use crate::storage::StorageError;

/// Where a uid's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Core(ShardId),
    Node(NodeId),
}

pub struct Router {
    shard: Rc<Shard>,
    /// The cluster view this core routes by; replaced whole when it changes (no lock: only
    /// this core reads it).
    view: RefCell<Arc<Membership>>,
    peers: Vec<Option<ConnectedSender<CoreMsg>>>,
    pending: RefCell<HashMap<u64, local_channel::LocalSender<Answer>, ahash::RandomState>>,
    next_req: Cell<u64>,
    /// This core's end of the cluster bus (set at start-up when there is a cluster).
    bus: OnceCell<CoreLink>,
    /// Bounds the other cores' requests being served here at once (`on_message`).
    inbox_permits: Rc<Semaphore>,
}

/// Requests from other cores served at once on a core.
const INBOX_CONCURRENT: u64 = 1024;

impl Router {
    pub fn new(
        shard: Rc<Shard>,
        view: Arc<Membership>,
        peers: Vec<Option<ConnectedSender<CoreMsg>>>,
    ) -> Self {
        Router {
            shard,
            view: RefCell::new(view),
            peers,
            pending: RefCell::default(),
            next_req: Cell::new(1),
            bus: OnceCell::new(),
            inbox_permits: Rc::new(Semaphore::new(INBOX_CONCURRENT)),
        }
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    pub fn id(&self) -> ShardId {
        self.shard.id()
    }

    pub fn cores(&self) -> usize {
        self.peers.len().max(1)
    }

    /// The cluster view in force now.
    pub fn view(&self) -> Arc<Membership> {
        self.view.borrow().clone()
    }

    /// Replaces the cluster view (a control task does this when membership changes).
    pub fn set_view(&self, view: Arc<Membership>) {
        *self.view.borrow_mut() = view;
    }

    /// Where `uid` lives: node and core.
    pub fn owner(&self, uid: &str) -> Owner {
        self.view.borrow().locate(uid)
    }

    /// Where `uid`'s work runs: a core here, or another node.
    pub fn route(&self, uid: &str) -> Route {
        let view = self.view.borrow();
        let o = view.locate(uid);
        if o.node == view.me() {
            Route::Core(o.core)
        } else {
            Route::Node(o.node)
        }
    }

    /// Connects this core to the cluster bus.
    pub fn attach_bus(&self, link: CoreLink) {
        let _ = self.bus.set(link);
    }

    pub fn bus(&self) -> Option<&CoreLink> {
        self.bus.get()
    }

    fn next_id(&self) -> u64 {
        let id = self.next_req.get();
        self.next_req.set(id + 1);
        id
    }

    /// Runs `req` on core `to` of this node and returns its answer.
    pub async fn call(self: &Rc<Self>, to: ShardId, req: Request) -> Answer {
        if to == self.id() {
            return self.serve(req).await;
        }
        let id = self.next_id();
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        let from = self.id();
        if !self.send_to(to, CoreMsg::Request { id, from, req }).await {
            self.pending.borrow_mut().remove(&id);
            return Answer::Err(format!("core {to} unavailable"));
        }
        rx.recv()
            .await
            .unwrap_or_else(|| Answer::Err(format!("core {to} gave no answer")))
    }

    /// Runs `req` on core `to` without waiting for an answer (what client messages cause:
    /// publishes, never another client message, so the local case needs no further routing).
    pub async fn cast(self: &Rc<Self>, to: ShardId, req: Request) {
        if to == self.id() {
            if let Answer::Err(e) = self.serve_local(req).await {
                tracing::warn!(error = %e, "client message failed");
            }
            return;
        }
        let from = self.id();
        self.send_to(to, CoreMsg::Request { id: 0, from, req })
            .await;
    }

    /// Sends over the bounded channel to `to`, waiting for room when it is full.
    pub async fn send_to(&self, to: ShardId, msg: CoreMsg) -> bool {
        let stats = self.shard.stats();
        let Some(Some(tx)) = self.peers.get(to.0) else {
            self.shard.bump(&stats.mesh_dropped);
            return false;
        };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                self.shard.bump(&stats.mesh_full);
                if tx.send(msg).await.is_err() {
                    self.shard.bump(&stats.mesh_dropped);
                    return false;
                }
                true
            }
            Err(_) => {
                self.shard.bump(&stats.mesh_dropped);
                false
            }
        }
    }

    /// Sends an answer without ever blocking the receiving loop (which would deadlock two
    /// cores waiting on each other's full channels).
    fn answer(self: &Rc<Self>, to: ShardId, id: u64, answer: Answer) {
        let Some(Some(tx)) = self.peers.get(to.0) else {
            return;
        };
        let stats = self.shard.stats();
        match tx.try_send(CoreMsg::Answer { id, answer }) {
            Ok(()) => {}
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                self.shard.bump(&stats.mesh_full);
                let me = self.clone();
                glommio::spawn_local(async move {
                    if let Some(Some(tx)) = me.peers.get(to.0) {
                        if tx.send(msg).await.is_err() {
                            me.shard.bump(&me.shard.stats().mesh_dropped);
                        }
                    }
                })
                .detach();
            }
            Err(_) => self.shard.bump(&stats.mesh_dropped),
        }
    }

    /// Acts on a request or an answer from another core, in arrival order: an answer at once,
    /// a request as a task of its own started now (hand-offs are the transport's: the core's
    /// inbox pump gives them to it).
    pub async fn on_message(self: &Rc<Self>, msg: CoreMsg) {
        match msg {
            CoreMsg::Handoff(_) => {
                tracing::error!("a hand-off reached the router: dropped (its socket closes)")
            }
            // A keyed channel publish calls every core and waits for their answers, which
            // arrive through this very loop: it runs as a task of its own, or it would wait
            // for itself.
            CoreMsg::Request { id, from, req } if matches!(req, Request::Keyed { .. }) => {
                let me = self.clone();
                glommio::spawn_local(async move {
                    let answer = me.serve(req).await;
                    me.reply(from, id, answer);
                })
                .detach();
            }
            // Served concurrently, as requests from this core's own connections are: awaited
            // here one at a time, a request waiting on storage (a database write takes
            // milliseconds) held up every later one from that core. They start in arrival
            // order; at most `INBOX_CONCURRENT` run at once, then this loop waits and the
            // bounded channel pushes back on the sender.
            CoreMsg::Request { id, from, req } => {
                let Ok(permit) = self.inbox_permits.acquire_static_permit(1).await else {
                    return;
                };
                let me = self.clone();
                glommio::spawn_local(async move {
                    let answer = me.serve(req).await;
                    drop(permit);
                    me.reply(from, id, answer);
                })
                .detach();
            }
            CoreMsg::Answer { id, answer } => self.resolve(id, answer),
        }
    }

    /// Answers request `id` of core `from` (`id == 0`: nobody waits; a failure is logged).
    fn reply(self: &Rc<Self>, from: ShardId, id: u64, answer: Answer) {
        if id != 0 {
            self.answer(from, id, answer);
        } else if let Answer::Err(e) = answer {
            tracing::warn!(error = %e, "cross-core message failed");
        }
    }

    /// Hands an answer to the task waiting for request `id`.
    fn resolve(&self, id: u64, answer: Answer) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.try_send(answer);
        }
    }

    /// Serves a request that landed on its owner core.
    pub async fn serve(self: &Rc<Self>, req: Request) -> Answer {
        match req {
            Request::Client { uid, msg } => {
                let conn = self.shard.stream_of(&uid);
                self.client_message(&uid, conn.as_ref(), msg)
                    .await
                    .map_or_else(storage_err, |_| Answer::Ok)
            }
            Request::Keyed { key, req } => self.serve_keyed(key, *req).await,
            req => self.serve_local(req).await,
        }
    }

    /// The requests a core answers from its own state (no further routing).
    async fn serve_local(&self, req: Request) -> Answer {
        let shard = &self.shard;
        match req {
            Request::PubUser {
                to,
                from,
                body,
                ttl,
            } => shard
                .publish_user(&to, &from, &body, ttl)
                .await
                .map_or_else(storage_err, Answer::Seq),
            Request::PubChannel {
                channel,
                from,
                body,
                ttl,
            } => shard
                .publish_channel(&channel, &from, &body, ttl)
                .await
                .map_or_else(storage_err, Answer::Count),
            Request::Sub { uid, cid } => shard
                .subscribe(&uid, &cid)
                .await
                .map_or_else(storage_err, |_| Answer::Ok),
            Request::Unsub { uid, cid } => shard
                .unsubscribe(&uid, &cid)
                .await
                .map_or_else(storage_err, |_| Answer::Ok),
            Request::Msg { uid } => shard
                .offline_lines(&uid)
                .await
                .map_or_else(storage_err, Answer::Msgs),
            Request::Disconnect { uid } => Answer::Found(shard.disconnect(&uid)),
            Request::Stats => {
                let rates = (shard.id().0 == 0).then(|| shard.sampler().borrow().rates.clone());
                Answer::Stats(Box::new((shard.id(), shard.stats().snapshot(), rates)))
            }
            Request::Latency => Answer::Latency(Box::new(shard.latency().snapshot())),
            Request::Health => shard
                .check_store()
                .await
                .map_or_else(|e| Answer::Unavailable(e.to_string()), |_| Answer::Ok),
            Request::PubBatch(items) => self.publish_local_batch(items).await,
            Request::Client { .. } | Request::Keyed { .. } => {
                Answer::Err("routed request served as local work".into())
            }
        }
    }

    /// Runs `req` wherever `uid` lives and returns the answer.
    pub async fn call_user(self: &Rc<Self>, uid: &str, req: Request) -> Answer {
        match self.route(uid) {
            Route::Core(c) => self.call(c, req).await,
            Route::Node(n) => self.call_node(n, req).await,
        }
    }

    /// Runs `req` wherever `uid` lives, without an answer.
    pub async fn cast_user(self: &Rc<Self>, uid: &str, req: Request) {
        match self.route(uid) {
            Route::Core(c) => self.cast(c, req).await,
            Route::Node(n) => self.send_node(Some(n), 0, req),
        }
    }
}

/// The database not answering is a 503 (retry later); anything else a 500.
fn storage_err(e: StorageError) -> Answer {
    match e {
        StorageError::Unavailable(_) => Answer::Unavailable(e.to_string()),
        StorageError::Corrupt(_) => Answer::Err(e.to_string()),
    }
}
