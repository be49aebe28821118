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
//! A channel message goes to every core; each delivers to, and persists for, its own members.
//!
//! Message flow of `POST /pub?to=U`: admin task (any core) → `Req::PubUser` → owner core:
//! next seq, queue to U's stream if online, append to storage → `Rep::Seq` → `{"result":"ok"}`.
//!
//! # Modules
//! - [`config`]: flags and flagfiles.  - [`server`]: start-up, per-core life cycle, shutdown.
//! - [`shard`]: the per-core world (users, streams, channels, cross-core messages).
//! - [`transport`]: client port: accept, hand-off, the chunked stream.
//! - [`admin`]: the admin HTTP API, /stats and /metrics.
//! - [`http`]: request heads, responses, chunk framing (pure).
//! - [`protocol`]: the message model and JSON codecs (pure).
//! - [`storage`]: the `Storage` trait and its backends.  - [`auth`]: none / HS256 JWT.
//! - [`stats`]: per-core counters and their merged snapshots.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod http;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod stats;
pub mod storage;
pub mod transport;
