//! An in-memory network for nodes of one process: the same encoded frames the TCP transport
//! carries, moved between routers and inboxes by channels, with injected faults (frames
//! dropped at a rate, links cut). With tokio's paused clock, timeouts and heartbeats cost no
//! real time. Used by tests; generic over the protocol's message type `M`.

use crate::runtime::codec::{self, Frame};
use crate::runtime::driver::{PEER_QUEUE_FRAMES, Router};
use crate::runtime::transport::Input;
use serde::de::DeserializeOwned;
use stateright::actor::Id;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// A node's inbox.
type InboxTx<M> = mpsc::Sender<Input<M>>;

/// One attached node.
struct Attached<M> {
    inbox: InboxTx<M>,
    router: Router,
}

struct Inner<M> {
    nodes: HashMap<u64, Attached<M>>,
    /// The registration of each directed link in its sender's router.
    links: HashMap<(u64, u64), u64>,
    /// Directed links that lose every frame.
    cut: BTreeSet<(u64, u64)>,
}

/// An in-memory network carrying messages of type `M`. Attach protocol-1 nodes with
/// [`crate::Node::start_in`].
pub struct MemNet<M> {
    inner: Mutex<Inner<M>>,
    drop_per_mille: AtomicU32,
    seed: AtomicU64,
}

impl<M: DeserializeOwned + Send + 'static> MemNet<M> {
    /// A network without faults; `seed` drives the drop decisions.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(MemNet {
            inner: Mutex::new(Inner {
                nodes: HashMap::new(),
                links: HashMap::new(),
                cut: BTreeSet::new(),
            }),
            drop_per_mille: AtomicU32::new(0),
            seed: AtomicU64::new(seed | 1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        // Nothing panics while holding it; recover the state if something did.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops each frame with probability `per_mille / 1000`.
    pub fn set_drop(&self, per_mille: u32) {
        self.drop_per_mille
            .store(per_mille.min(1000), Ordering::Relaxed);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: u64, b: u64) {
        let mut inner = self.lock();
        inner.cut.insert((a, b));
        inner.cut.insert((b, a));
    }

    /// Restores every cut link and stops dropping frames.
    pub fn heal(&self) {
        self.lock().cut.clear();
        self.set_drop(0);
    }

    fn lost(&self, from: u64, to: u64) -> bool {
        if self.lock().cut.contains(&(from, to)) {
            return true;
        }
        // xorshift64: deterministic given the seed and the order of draws.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        ((x % 1000) as u32) < self.drop_per_mille.load(Ordering::Relaxed)
    }

    /// Attaches (or re-attaches, after a restart) `node` and links it both ways with every
    /// other attached node.
    pub(crate) fn attach(self: &Arc<Self>, node: u64, inbox: InboxTx<M>, router: Router) {
        let mut inner = self.lock();
        let others: Vec<(u64, InboxTx<M>, Router)> = inner
            .nodes
            .iter()
            .filter(|(id, _)| **id != node)
            .map(|(id, a)| (*id, a.inbox.clone(), a.router.clone()))
            .collect();
        for (other, other_inbox, other_router) in others {
            let out = self.link(node, &router, other, other_inbox);
            inner.links.insert((node, other), out);
            if let Some(old) = inner.links.remove(&(other, node)) {
                other_router.unregister(Id::from(node as usize), old);
            }
            let back = self.link(other, &other_router, node, inbox.clone());
            inner.links.insert((other, node), back);
        }
        inner.nodes.insert(node, Attached { inbox, router });
    }

    /// Registers in `router` a connection to `to` whose frames land in `to_inbox` as sent by
    /// `from`, unless lost.
    fn link(self: &Arc<Self>, from: u64, router: &Router, to: u64, to_inbox: InboxTx<M>) -> u64 {
        let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(PEER_QUEUE_FRAMES);
        let conn = router.register(Id::from(to as usize), tx);
        let net = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let Some(net) = net.upgrade() else { return };
                if net.lost(from, to) {
                    continue;
                }
                let src = Id::from(from as usize);
                let input = match codec::decode::<Frame<M>>(&frame) {
                    Ok(Frame::Actor(msg)) => Input::Msg(src, msg),
                    Ok(Frame::Traced(send, msg)) => Input::Traced(src, send, msg),
                    _ => continue,
                };
                if to_inbox.send(input).await.is_err() {
                    return; // That incarnation of `to` stopped.
                }
            }
        });
        conn
    }
}
