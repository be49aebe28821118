//! ipush: a distributed message push server, thread-per-core and shared-nothing on glommio.
//!
//! # Architecture
//!
//! ```text
//!            client port (SO_REUSEPORT, one listener per core)      admin port (same)
//!                 │                                                     │
//!   ┌─────────────▼──────────────┐   bounded SPSC channels   ┌──────────▼─────────────────┐
//!   │ core 0  (glommio executor) │◄─────── ShardMsg ────────►│ core 1  (glommio executor) │
//!   │  accept → head → auth      │   Handoff / Req / Rep     │  accept → head → auth      │
//!   │  owner(uid)==0 ? stream    │                           │  owner(uid)==1 ? stream    │
//!   │             : hand fd over │                           │             : hand fd over │
//!   │  Shard: users (seq, ack),  │                           │  Shard: users, streams,    │
//!   │  streams + send queues,    │                           │  channel cache, counters   │
//!   │  channel cache, counters   │                           │                            │
//!   │  Store (its own users)     │                           │  Store (its own users)     │
//!   └────────────────────────────┘                           └────────────────────────────┘
//! ```
//!
//! A user belongs to exactly one core (`shard::ids::shard_of`): its seq counter, last ack,
//! stream and send queue live there and are touched without locks. A connection accepted on
//! another core is handed over (fd + bytes already read) before it streams. An admin request
//! arriving on any core is sent to the owner core as a typed `Req` and answered with a `Rep`.
//! A channel message goes to every core of every node; each delivers to, and persists for, its
//! own members. Another node is reached over NNG bus sockets (`cluster`), whose threads hand
//! frames to the owner core through a channel and a waker; a uid of another node connecting
//! here is redirected (303).
//!
//! Message flow of `POST /pub?to=U`: admin task (any core) → `Req::PubUser` → owner core:
//! next seq, queue to U's stream if online, append to storage → `Rep::Seq` → `{"result":"ok"}`.
//!
//! # Modules
//! - [`config`]: flags and flagfiles.  - [`server`]: start-up, per-core life cycle, shutdown.
//! - [`shard`]: the per-core world (users, streams, channels, cross-core messages).
//! - [`transport`]: client port: accept, hand-off, chunked / WebSocket / SSE streams, `/send`.
//! - [`cluster`]: membership (rendezvous hashing), bus frames, the NNG bridge threads.
//! - [`admin`]: the admin HTTP API, /stats and /metrics.
//! - [`http`]: request heads, responses, chunk framing (pure).
//! - [`protocol`]: the message model and JSON codecs (pure).
//! - [`storage`]: the `Storage` trait, memory / embedded (a log written by io_uring from the
//!   core) / scylla backends, and the conformance suite every backend passes.
//! - [`auth`]: none / HS256 JWT.
//! - [`diagnose`]: start-up failures explained (cause and fix).
//! - [`lockfile`]: the `--data_dir` and `--pid_file` locks (one server per directory).
//! - [`net`]: binding listeners at start-up (bounded retry while the address is in use).
//! - [`stats`]: per-core counters and their merged snapshots.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod diagnose;
pub mod http;
pub mod lockfile;
pub mod net;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod stats;
pub mod storage;
pub mod transport;
