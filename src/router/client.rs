//! Acts on one message a client sent, on the client's own core: from a stream (chunked,
//! WebSocket) or from `POST /send` (SSE clients). `f` is always the authenticated uid. Part of
//! the router; runs on the core's executor.

use std::rc::Rc;

use super::Router;
use crate::msg::Request;
use crate::protocol::{ClientMessage, MsgType};
use crate::shard::conn::{Conn, Out};
use crate::shard::DEFAULT_TTL;
use crate::storage::StorageError;

impl Router {
    /// `conn` is the stream the message came on (None for `/send`): heartbeats are answered
    /// there.
    pub async fn client_message(
        self: &Rc<Self>,
        uid: &str,
        conn: Option<&Rc<Conn>>,
        m: ClientMessage,
    ) -> Result<(), StorageError> {
        let shard = &self.shard;
        let stats = shard.stats();
        match m.y {
            Some(MsgType::Heartbeat) => {
                shard.bump(&stats.recv_hb);
                if let Some(conn) = conn {
                    shard.push(conn, Out::Heartbeat);
                }
                Ok(())
            }
            Some(MsgType::Subscribe) => {
                shard.bump(&stats.recv_sub);
                shard.subscribe(uid, &m.c.unwrap_or_default()).await
            }
            Some(MsgType::Unsubscribe) => {
                shard.bump(&stats.recv_unsub);
                shard.unsubscribe(uid, &m.c.unwrap_or_default()).await
            }
            Some(MsgType::User) => {
                shard.bump(&stats.recv_msg);
                let to = m.t.unwrap_or_default();
                let req = Request::PubUser {
                    to: to.clone(),
                    from: uid.to_string(),
                    body: m.b.unwrap_or_default(),
                    ttl: DEFAULT_TTL,
                };
                self.cast_user(&to, req).await;
                Ok(())
            }
            Some(MsgType::Channel) => {
                shard.bump(&stats.recv_cmsg);
                let req = Request::PubChannel {
                    channel: m.c.unwrap_or_default(),
                    from: uid.to_string(),
                    body: m.b.unwrap_or_default(),
                    ttl: DEFAULT_TTL,
                };
                self.cast_channel_cluster(req).await;
                Ok(())
            }
            Some(MsgType::Ack) => {
                shard.bump(&stats.recv_ack);
                shard.ack(uid, m.s.unwrap_or(0)).await
            }
            None => Ok(()),
        }
    }
}
