//! Work that spans cores and nodes: a channel message to every core of every node, and the
//! node's stats gathered from every core. Part of the router; runs on the core's executor.

use std::rc::Rc;

use super::Router;
use crate::ids::ShardId;
use crate::msg::{Answer, Request};
use crate::stats::{LatencySnapshot, Rates, Snapshot};

impl Router {
    /// A channel message for this node's members: every core delivers to its own.
    pub async fn publish_channel_node(self: &Rc<Self>, req: Request) -> Answer {
        self.settle_slots().await;
        let calls: Vec<_> = (0..self.cores())
            .map(|c| {
                let (me, req) = (self.clone(), req.clone());
                glommio::spawn_local(async move { me.call(ShardId(c), req).await })
            })
            .collect();
        let mut total = 0;
        let mut failure = None;
        for call in calls {
            match call.await {
                Answer::Count(n) => total += n,
                Answer::Err(e) => failure = Some(e),
                _ => {}
            }
        }
        failure.map_or(Answer::Count(total), Answer::Err)
    }

    /// A channel message for the whole cluster: this node's members and every peer's. An
    /// unreachable peer makes the answer 503 (its members did not get it).
    pub async fn publish_channel_cluster(self: &Rc<Self>, req: Request) -> Answer {
        let view = self.view();
        let remote: Vec<_> = view
            .peers()
            .map(|n| {
                let (me, req) = (self.clone(), req.clone());
                glommio::spawn_local(async move { me.call_node(n, req).await })
            })
            .collect();
        let mut out = self.publish_channel_node(req).await;
        for task in remote {
            match task.await {
                Answer::Count(n) => {
                    if let Answer::Count(t) = &mut out {
                        *t += n;
                    }
                }
                other @ (Answer::Unavailable(_) | Answer::Err(_)) => out = other,
                _ => {}
            }
        }
        out
    }

    /// A client's channel message: this node's cores and every peer, no answer.
    pub async fn cast_channel_cluster(self: &Rc<Self>, req: Request) {
        if self.view().is_cluster() {
            self.send_node(None, 0, req.clone());
        }
        for core in 0..self.cores() {
            self.cast(ShardId(core), req.clone()).await;
        }
    }

    /// Whether every core's store takes writes now; the first failing core's error.
    pub async fn check_stores(self: &Rc<Self>) -> Result<(), String> {
        for core in 0..self.cores() {
            match self.call(ShardId(core), Request::Health).await {
                Answer::Ok => {}
                Answer::Unavailable(e) | Answer::Err(e) => return Err(format!("core {core}: {e}")),
                other => return Err(format!("core {core}: unexpected answer {other:?}")),
            }
        }
        Ok(())
    }

    /// Every core's counters (and core 0's per-second maxima).
    pub async fn gather_stats(self: &Rc<Self>) -> (Vec<(ShardId, Snapshot)>, Rates) {
        let mut per_core = Vec::with_capacity(self.cores());
        let mut rates = Rates::default();
        for core in 0..self.cores() {
            if let Answer::Stats(b) = self.call(ShardId(core), Request::Stats).await {
                let (id, snap, r) = *b;
                per_core.push((id, snap));
                if let Some(r) = r {
                    rates = r;
                }
            }
        }
        (per_core, rates)
    }

    /// The node's latency histograms: every core's, merged.
    pub async fn gather_latency(self: &Rc<Self>) -> LatencySnapshot {
        let mut total = LatencySnapshot::default();
        for core in 0..self.cores() {
            if let Answer::Latency(l) = self.call(ShardId(core), Request::Latency).await {
                total.add(&l);
            }
        }
        total
    }
}
