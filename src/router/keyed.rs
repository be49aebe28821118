//! Publishing with an optional idempotency key: the one entry point for `/pub` (and any other
//! publisher, e.g. a batch of publishes, one call per message), which sends a keyed publish to
//! the core that decides for its destination and, there, answers a repeat with the first
//! answer instead of publishing again. Part of the router; runs on the core's executor.

use std::rc::Rc;

use super::{storage_err, Router};
use crate::msg::{Answer, Request};
use crate::shard::idem::{self, Begin};

impl Router {
    /// Publishes `req` (a `PubUser` or a `PubChannel`) and returns its answer. With `key`, a
    /// repeat within `--idempotency_window_s` answers `Answer::Replayed(first answer)` and
    /// publishes nothing; a bad key, a key reused with another request, or a full key table
    /// answer `Answer::Refused` (400, 422, 429).
    pub async fn publish(self: &Rc<Self>, req: Request, key: Option<String>) -> Answer {
        let Some(dest) = req.destination().map(str::to_string) else {
            return Answer::Err("not a publish".into());
        };
        let Some(key) = key else {
            return match req {
                Request::PubChannel { .. } => self.publish_channel_cluster(req).await,
                req => self.call_user(&dest, req).await,
            };
        };
        if let Err(why) = idem::check_key(&key) {
            return Answer::Refused(400, why);
        }
        let req = Box::new(req);
        self.call_user(&dest, Request::Keyed { key, req }).await
    }

    /// A keyed publish on the core that decides for its destination: the owner core of the
    /// uid (which stores the message and the key in one write), or of the channel id (which
    /// fans the message out to every core and node, then stores the key: a crash in between
    /// loses only the key, so a retry publishes again rather than never).
    pub(super) async fn serve_keyed(self: &Rc<Self>, key: String, req: Request) -> Answer {
        let (id, fp, user) = match &req {
            Request::PubUser {
                to,
                from,
                body,
                ttl,
            } => (
                idem::user_id(to, &key),
                idem::fingerprint(from, *ttl, body),
                true,
            ),
            Request::PubChannel {
                channel,
                from,
                body,
                ttl,
            } => (
                idem::channel_id(channel, &key),
                idem::fingerprint(from, *ttl, body),
                false,
            ),
            _ => return Answer::Err("only a publish takes an idempotency key".into()),
        };
        let guard = match self.shard.idem_begin(id, fp).await {
            Err(e) => return storage_err(e),
            Ok(Begin::Fresh(g)) => g,
            Ok(Begin::Replay(r)) => {
                let first = if user {
                    Answer::Seq((r.answer > 0).then_some(r.answer))
                } else {
                    Answer::Count(r.answer)
                };
                return Answer::Replayed(Box::new(first));
            }
            Ok(Begin::Mismatch) => {
                return Answer::Refused(
                    422,
                    "idempotency_key already used with a different request (from, ttl or body \
                     differ) within the window"
                        .into(),
                )
            }
            Ok(Begin::Full) => {
                return Answer::Refused(
                    429,
                    "too many idempotency keys in their window on this core \
                     (--idempotency_max_keys): retry later or without a key"
                        .into(),
                )
            }
        };
        match req {
            Request::PubUser {
                to,
                from,
                body,
                ttl,
            } => self
                .shard
                .publish_user_keyed(&to, &from, &body, ttl, &guard)
                .await
                .map_or_else(storage_err, Answer::Seq),
            req => match self.publish_channel_cluster(req).await {
                Answer::Count(n) => match self.shard.idem_put(&guard.record(n)).await {
                    Ok(()) => Answer::Count(n),
                    Err(e) => storage_err(e),
                },
                other => other,
            },
        }
    }
}
