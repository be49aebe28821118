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
use crate::cluster::{Membership, NodeId, Owner, ViewCell};
use crate::ids::ShardId;
use crate::msg::{Answer, CoreMsg, Request};
use crate::shard::Shard;
use crate::storage::StorageError;

/// Where a uid's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Core(ShardId),
    Node(NodeId),
    /// The dynamic cluster: its slot is held by nobody, or is being handed over to or from
    /// this node; it is served again within about a second.
    Moving,
}

/// How long a request waits for a slot in motion before it fails with 503.
const MOVING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Router {
    shard: Rc<Shard>,
    /// The cluster view this core routes by: a copy of `cell`'s, replaced whole when the
    /// cell's generation moves (one atomic load per look; the cell's lock only on a change).
    view: RefCell<Arc<Membership>>,
    cell: Arc<ViewCell>,
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
        cell: Arc<ViewCell>,
        peers: Vec<Option<ConnectedSender<CoreMsg>>>,
    ) -> Self {
        let view = cell.current();
        cell.installed(shard.id(), view.generation());
        Router {
            shard,
            view: RefCell::new(view),
            cell,
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
        self.refresh();
        self.view.borrow().clone()
    }

    /// Installs the cell's newer view, if there is one: users of slots this node stopped
    /// serving leave this core (their streams told to move), then the cell learns that this
    /// core is on the new generation. Cheap when nothing changed.
    pub fn refresh(&self) {
        let g = self.cell.generation();
        if g == self.view.borrow().generation() {
            return;
        }
        let next = self.cell.current();
        let prev = self.view.borrow().clone();
        // Gone, or served at another epoch (lost and regained between two views this core
        // installed): what this core holds of the user is stale either way.
        let released = self.shard.release_users(
            |uid| {
                let now = next.serves(uid);
                now.is_none() || now != prev.serves(uid)
            },
            |uid| self.moved_location(&next, uid),
        );
        if released > 0 {
            tracing::info!(core = %self.id(), released, generation = next.generation(), "users moved away");
        }
        if next.is_dynamic() {
            // Memberships live with their slot: the served slots may differ now.
            self.shard.forget_channels();
        }
        let g = next.generation();
        *self.view.borrow_mut() = next;
        self.cell.installed(self.id(), g);
    }

    /// Asks this member to leave the dynamic cluster; false when it is not one.
    pub fn request_leave(&self) -> bool {
        let dynamic = self.view().is_dynamic();
        if dynamic {
            self.cell.request_leave();
        }
        dynamic
    }

    /// Where a stream of `uid`, which `view` no longer serves here, is sent: its slot's next
    /// holder, or back here (this node answers 303 or holds it up to a second once the slot
    /// has settled).
    fn moved_location(&self, view: &Membership, uid: &str) -> String {
        let to = view
            .moved_to(uid)
            .map_or_else(|| self.shard.cfg().advertise_addr(), |n| n.client_addr());
        crate::protocol::move_location(&format!("http://{to}"), uid)
            .unwrap_or_else(|| format!("http://{to}/connect"))
    }

    /// A stream of `uid` just attached here: if its slot left this node meanwhile (the view
    /// changed while the user loaded), it is released at once like the others were.
    pub fn recheck_stream(&self, uid: &str) {
        let view = self.view();
        if view.serves(uid).is_none() {
            self.shard
                .release_users(|u| u == uid, |u| self.moved_location(&view, u));
        }
    }

    /// Where `uid` lives: node and core.
    pub fn owner(&self, uid: &str) -> Owner {
        self.view().locate(uid)
    }

    /// Where `uid`'s work runs: a core here, another node, or nowhere for a moment.
    pub fn route(&self, uid: &str) -> Route {
        let view = self.view();
        let o = view.locate(uid);
        if o.node != view.me() {
            Route::Node(o.node)
        } else if view.serves(uid).is_some() {
            Route::Core(o.core)
        } else {
            Route::Moving
        }
    }

    /// Waits (at most `MOVING_WAIT`) while `uid`'s slot is in motion — held by nobody, being
    /// handed over by this node, or on its way here — and returns the route then (the old
    /// holder, if the slot has not arrived by then).
    pub async fn settled_route(&self, uid: &str) -> Route {
        let t0 = std::time::Instant::now();
        loop {
            let r = self.route(uid);
            let waiting = match r {
                Route::Moving => true,
                Route::Node(_) => self.view().incoming(uid),
                Route::Core(_) => false,
            };
            if !waiting || t0.elapsed() >= MOVING_WAIT {
                return r;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
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

    /// Waits (at most `MOVING_WAIT`) while a slot is in motion to or from this node: a
    /// channel message reads the members of the slots served once they have settled.
    pub async fn settle_slots(&self) {
        let t0 = std::time::Instant::now();
        while self.view().in_motion() && t0.elapsed() < MOVING_WAIT {
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
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
            Request::Disconnect { uid, location } => Answer::Found(match location {
                Some(to) => shard.move_stream(&uid, &to),
                None => shard.disconnect(&uid),
            }),
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

    /// Waits (at most `MOVING_WAIT`) until this node serves `uid`: a node that sent a request
    /// here saw the slot's new holder before this node did. False if it still does not, or
    /// if the slot has gone on to another node.
    pub async fn wait_served(&self, uid: &str) -> bool {
        let t0 = std::time::Instant::now();
        loop {
            match self.route(uid) {
                Route::Core(_) => return true,
                // It went on to another node: the sender follows it there.
                Route::Node(_) if !self.view().incoming(uid) => return false,
                Route::Node(_) if t0.elapsed() >= MOVING_WAIT => return false,
                Route::Node(_) => {}
                Route::Moving if t0.elapsed() >= MOVING_WAIT => return false,
                Route::Moving => {}
            }
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs `req` wherever `uid` lives and returns the answer. In the dynamic cluster a
    /// request that was certainly not served — its node is down, or it answered that the slot
    /// is moving — follows the slot for up to `MOVING_WAIT`.
    pub async fn call_user(self: &Rc<Self>, uid: &str, req: Request) -> Answer {
        let t0 = std::time::Instant::now();
        loop {
            let route = self.settled_route(uid).await;
            let retry = self.view().is_dynamic() && t0.elapsed() < MOVING_WAIT;
            let answer = match route {
                Route::Core(c) if !retry => return self.call(c, req).await,
                Route::Core(c) => Some(self.call(c, req.clone()).await),
                Route::Moving => return moving(),
                Route::Node(n) if !retry => return self.call_node(n, req).await,
                Route::Node(n) if !self.node_up(n) => None,
                // A copy only where it may be needed again (the dynamic cluster).
                Route::Node(n) => Some(self.call_node(n, req.clone()).await),
            };
            match answer {
                Some(a) if !is_moving(&a) => return a,
                _ => glommio::timer::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Runs `req` wherever `uid` lives, without an answer.
    pub async fn cast_user(self: &Rc<Self>, uid: &str, req: Request) {
        match self.settled_route(uid).await {
            Route::Core(c) => self.cast(c, req).await,
            Route::Node(n) => self.send_node(Some(n), 0, req),
            Route::Moving => tracing::warn!(uid, "client message dropped: its slot is moving"),
        }
    }
}

const MOVING: &str = "the user's slot is moving between nodes: retry";

/// A 503 for a user whose slot is in motion (the client retries after `Retry-After`); the
/// request was not served.
pub(crate) fn moving() -> Answer {
    Answer::Unavailable(MOVING.into())
}

fn is_moving(a: &Answer) -> bool {
    matches!(a, Answer::Unavailable(e) if e == MOVING)
}

/// The database not answering is a 503 (retry later); anything else a 500.
fn storage_err(e: StorageError) -> Answer {
    match e {
        // Refused unwritten: the slot left this member (the request follows it).
        StorageError::Unavailable(m) if m.ends_with(crate::storage::NOT_SERVED) => moving(),
        StorageError::Unavailable(_) => Answer::Unavailable(e.to_string()),
        StorageError::Corrupt(_) => Answer::Err(e.to_string()),
    }
}
