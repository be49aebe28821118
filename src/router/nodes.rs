//! The router's side of the cluster bus: requests to other nodes (with a bounded wait for the
//! answer), and the pump that acts on frames the bus threads delivered to this core. Runs on
//! the core's executor.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use glommio::channels::local_channel;

use super::Router;
use crate::cluster::bus::Outbound;
use crate::cluster::wire::{self, Body, Frame};
use crate::cluster::NodeId;
use crate::msg::{Answer, Request};

impl Router {
    fn unavailable(&self, n: NodeId) -> Answer {
        let view = self.view();
        Answer::Unavailable(format!("node {} unavailable", view.node(n).name))
    }

    /// Sends `req` to one node (or, with None, to every peer) over the bus.
    pub(super) fn send_node(&self, to: Option<NodeId>, id: u64, req: Request) {
        let Some(bus) = self.bus.get() else { return };
        let bytes = wire::encode(&Frame {
            from: self.view.borrow().me(),
            core: self.id(),
            id,
            body: Body::Request(req),
        });
        let _ = bus.out.send(match to {
            Some(n) => Outbound::To(n, bytes),
            None => Outbound::All(bytes),
        });
    }

    /// Whether the bus has heard from `node` lately (a request to it would be sent).
    pub(super) fn node_up(&self, node: NodeId) -> bool {
        self.bus.get().is_some_and(|b| b.state.is_up(node))
    }

    /// Runs `req` on another node and waits (at most `--cluster_timeout_ms`) for its answer.
    pub async fn call_node(self: &Rc<Self>, node: NodeId, req: Request) -> Answer {
        let Some(bus) = self.bus.get() else {
            return self.unavailable(node);
        };
        if !bus.state.is_up(node) {
            return self.unavailable(node);
        }
        let id = self.next_id();
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
        self.send_node(Some(node), id, req);
        let limit = std::time::Duration::from_millis(self.shard.cfg().cluster_timeout_ms);
        let got = glommio::timer::timeout(limit, async { Ok(rx.recv().await) }).await;
        self.pending.borrow_mut().remove(&id);
        match got {
            Ok(Some(answer)) => answer,
            _ => self.unavailable(node),
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
                    Body::Answer(answer) => self.resolve(frame.id, answer),
                    Body::Request(req) => {
                        let me = self.clone();
                        glommio::spawn_local(async move {
                            let answer = me.serve_remote(req).await;
                            if frame.id != 0 {
                                me.answer_node(frame.from, frame.core, frame.id, answer);
                            }
                        })
                        .detach();
                    }
                    Body::Ping => {}
                }
            }
        }
    }

    /// A request from another node: channel messages go to every core of this node.
    async fn serve_remote(self: &Rc<Self>, req: Request) -> Answer {
        match req {
            Request::PubChannel { .. } => self.publish_channel_node(req).await,
            Request::PubBatch(items) => self.publish_remote_batch(items).await,
            Request::Stats | Request::Latency => Answer::Err("stats are per node".into()),
            Request::Health => Answer::Err("health is per node".into()),
            // Sent by a node whose view says the user is here: served only if this node's
            // view agrees (after a bounded wait for a slot in motion), never forwarded again.
            req => match req.uid().map(str::to_string) {
                Some(uid) if !self.wait_served(&uid).await => super::moving(),
                _ => self.serve(req).await,
            },
        }
    }

    fn answer_node(&self, to: NodeId, core: crate::ids::ShardId, id: u64, answer: Answer) {
        let Some(bus) = self.bus.get() else { return };
        let bytes = wire::encode(&Frame {
            from: self.view.borrow().me(),
            core,
            id,
            body: Body::Answer(answer),
        });
        let _ = bus.out.send(Outbound::To(to, bytes));
    }
}
