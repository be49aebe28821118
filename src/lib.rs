//! ipush: a distributed message push server, thread-per-core and shared-nothing on glommio.
//!
//! # Architecture
//!
//! ```text
//!              client port (SO_REUSEPORT, a listener per core)      admin port (same)
//!                   │                                                    │
//!   ┌───────────────▼── core 0 (glommio executor, pinned) ───────────────▼──────────────┐
//!   │ transport: accept → head → auth → 303? → stream     admin: /pub /sub /msg /stats  │
//!   │      │  (hand-off of the socket when the uid's core is another)     │             │
//!   │      ▼                                                              ▼             │
//!   │ router: owner(uid) = cluster view → (node, core); call / cast / answer;           │
//!   │         pending requests; channel fan-out; stats gathering; bus pump              │
//!   │      │ local work                     │ other core            │ other node        │
//!   │      ▼                                ▼                       ▼                   │
//!   │ shard: users (seq, last_ack),   bounded SPSC channels     cluster::bus (NNG       │
//!   │  streams + send queues,         (CoreMsg) to core 1 …     threads, frames in      │
//!   │  channel cache, counters                                  cluster::wire)          │
//!   │      │                                                                            │
//!   │ storage: memory | embedded (per-core log) | scylla (per-core tokio bridge)        │
//!   └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A user belongs to exactly one core of one node: [`cluster::Membership::locate`] answers
//! "where does this uid live" for every caller (`/shard`, 303s, hand-offs, bus requests, and
//! `loadtest` through the same `ipush-placement` crate). Its seq counter, last ack, stream and
//! send queue live in that core's [`shard::Shard`] and are touched without locks. A
//! connection accepted on another core is handed over (fd + bytes already read) before it
//! streams. Work for a user arriving on any core goes through that core's [`router::Router`]:
//! to the owner core as a typed [`msg::Request`] answered by a [`msg::Answer`], or to the owner
//! node over the bus. A channel message goes to every core of every node; each delivers to,
//! and persists for, its own members.
//!
//! Message flow of `POST /pub?to=U`: admin task (any core) → `router.call_user` →
//! `Request::PubUser` → owner core's router → `Shard::publish_user`: next seq, queue to U's
//! stream if online, append to storage → `Answer::Seq` → `{"result":"ok"}`.
//! With `&idempotency_key=K`, `router.publish` sends `Request::Keyed` to the core that owns
//! the destination (the uid, or the channel id), whose [`shard::Shard::idem_begin`] answers a
//! repeat from the store (`Answer::Replayed`) or claims the key; the message and its key are
//! stored in one write (`shard::idem`).
//!
//! # Layers
//!
//! Each module imports only from its own layer or the layers below (`tests/layers.rs` checks
//! this and that no import circle exists):
//!
//! | layer | modules | what they are |
//! | --- | --- | --- |
//! | 6 | [`server`] | start-up (bind → mesh → cores → ready), each core's life, shutdown |
//! | 5 | [`transport`], [`admin`] | the client port (accept, streams, WebSocket, SSE) and the admin API |
//! | 4 | [`router`] | per core: where work runs, carrying it there, fan-out, stats |
//! | 3 | [`cluster`] | the cluster view, bus frames, the NNG bus threads |
//! | 2 | [`shard`], [`msg`] | per-core state and its operations; the cross-core vocabulary |
//! | 1 | [`storage`] | the `Storage` trait and its memory / embedded / scylla backends |
//! | 0 | [`protocol`], [`http`], [`ids`], [`config`], [`auth`], [`stats`], [`shutdown`], [`net`], [`lockfile`], [`diagnose`], [`fencing`] | pure codecs and parsers, identities, flags, counters, signals, binding, locks, fencing's timestamps and lease |
//!
//! # Modules
//! - [`config`]: flags and flagfiles.  - [`server`]: start-up, per-core life cycle, shutdown.
//! - [`shard`]: the per-core world (users, streams, queues, channels) and its operations.
//! - [`router`]: per-core routing: cores, nodes, channel fan-out, stats.
//! - [`msg`]: requests, answers and socket hand-offs between cores and nodes.
//! - [`transport`]: client port: accept, hand-off, chunked / WebSocket / SSE streams, `/send`,
//!   and their I/O-free decoders.
//! - [`cluster`]: membership and the owner of a uid, bus frames, the NNG bus threads.
//! - [`admin`]: the admin HTTP API, /stats and /metrics.
//! - [`http`]: request heads, responses, chunk framing (pure).
//! - [`protocol`]: the message model, JSON and MessagePack codecs, transports and close codes
//!   (pure).
//! - [`storage`]: the `Storage` trait, memory / embedded (a log written from the core) /
//!   scylla backends.
//! - [`auth`]: none / HS256 JWT.  - [`stats`]: per-core counters and their merged snapshots.
//! - [`ids`]: `ShardId`, `ConnId`, `NodeId`.  - [`shutdown`]: one-shot cross-thread signals.
//! - [`net`]: binding with retry.  - [`lockfile`]: the data-dir and pid-file locks.
//! - [`diagnose`]: start-up failures explained (cause and fix).
//! - [`fencing`]: fenced write timestamps, one write in flight per user, the lease clock and
//!   the per-slot epochs a dynamic-cluster member serves (what the scylla store obeys).

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod diagnose;
pub mod fencing;
pub mod http;
pub mod ids;
pub mod lockfile;
pub mod msg;
pub mod net;
pub mod protocol;
pub mod router;
pub mod server;
pub mod shard;
pub mod shutdown;
pub mod stats;
pub mod storage;
pub mod transport;
