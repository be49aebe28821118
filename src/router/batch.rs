//! Batches of unicast publishes (pipelined `/pub?to=` requests, `/pub/batch` lines): grouped
//! per owner core (one cross-core message each) and per other node (one bus request each),
//! run concurrently, answered item by item in order. Part of the router; runs on the core's
//! executor.

use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;

use futures_util::future::join_all;

use super::{storage_err, Route, Router};
use crate::msg::{Answer, PubItem, Request};

impl Router {
    /// Publishes every item wherever its user lives; one answer per item, in item order.
    pub async fn publish_users(self: &Rc<Self>, items: Vec<PubItem>) -> Vec<Answer> {
        self.publish_grouped(items, true).await
    }

    /// A batch another node sent here: its users are this node's (by the sender's view), so
    /// it is split per core and never forwarded again.
    pub(super) async fn publish_remote_batch(self: &Rc<Self>, items: Vec<PubItem>) -> Answer {
        Answer::Batch(self.publish_grouped(items, false).await)
    }

    async fn publish_grouped(self: &Rc<Self>, items: Vec<PubItem>, forward: bool) -> Vec<Answer> {
        let n = items.len();
        let mut groups: Vec<(Route, Vec<usize>, Vec<PubItem>)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let route = self.route(&item.to);
            let g = match groups.iter().position(|g| g.0 == route) {
                Some(g) => g,
                None => {
                    groups.push((route, Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2.push(item);
        }
        let calls = groups.into_iter().map(|(route, at, items)| async move {
            let k = items.len();
            let got = match route {
                Route::Core(c) => self.call(c, Request::PubBatch(items)).await,
                Route::Node(n) if forward => self.call_node(n, Request::PubBatch(items)).await,
                Route::Node(_) => {
                    Answer::Unavailable("user not on this node (views differ)".into())
                }
                Route::Moving => super::moving(),
            };
            (at, spread(got, k))
        });
        let mut out: Vec<Option<Answer>> = (0..n).map(|_| None).collect();
        for (at, answers) in join_all(calls).await {
            for (i, a) in at.into_iter().zip(answers) {
                out[i] = Some(a);
            }
        }
        out.into_iter()
            .map(|a| a.unwrap_or_else(|| Answer::Err("no answer for this item".into())))
            .collect()
    }

    /// The owner core's part: every item's publish starts in item order (each takes its seq
    /// in its first step), then all wait for their storage writes together: the store is
    /// corked for that first poll, so the batch is one group write, not a `pwrite` per item.
    pub(super) async fn publish_local_batch(&self, items: Vec<PubItem>) -> Answer {
        let shard = &self.shard;
        let runs = items.iter().map(|i| {
            tracing::trace!(to = %i.to, key = ?i.idempotency_key, "batched publish");
            shard.publish_user(&i.to, &i.from, &i.body, i.ttl)
        });
        let mut all = std::pin::pin!(join_all(runs));
        let cork = items.len() > 1;
        shard.cork_store(cork);
        let first = poll_fn(|cx| Poll::Ready(all.as_mut().poll(cx))).await;
        shard.cork_store(false);
        let done = match first {
            Poll::Ready(done) => done,
            Poll::Pending => all.await,
        };
        Answer::Batch(
            done.into_iter()
                .map(|r| r.map_or_else(storage_err, Answer::Seq))
                .collect(),
        )
    }
}

/// A group's answer as one answer per item: a failure of the whole group (core or node
/// unavailable) answers each of its items.
fn spread(a: Answer, k: usize) -> Vec<Answer> {
    let each = |f: &dyn Fn() -> Answer| (0..k).map(|_| f()).collect();
    match a {
        Answer::Batch(v) if v.len() == k => v,
        Answer::Unavailable(e) => each(&|| Answer::Unavailable(e.clone())),
        Answer::Err(e) => each(&|| Answer::Err(e.clone())),
        _ => each(&|| Answer::Err("malformed batch answer".into())),
    }
}
