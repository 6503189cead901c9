//! The cross-shard mesh: request/response calls between shards over glommio's lock-free
//! bounded SPSC channels (one per ordered pair of shards).
//!
//! A call sends `Request { id, body }` to the owning shard; its per-peer receive loop spawns
//! the handler as a local task and sends `Response { id, body }` back. Receive loops never
//! block on sending, so two shards calling each other cannot deadlock on full channels.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::StreamExt;
use glommio::channels::channel_mesh::{FullMesh, Receivers, Senders};

pub(crate) enum Envelope<Req, Resp> {
    Request { id: u64, body: Req },
    Response { id: u64, body: Resp },
}

/// The unjoined mesh, cloned into every shard before it starts.
pub(crate) type Mesh<Req, Resp> = FullMesh<Envelope<Req, Resp>>;

/// A shard's not yet joined place in the mesh.
pub struct MeshPeers<Req: Send + 'static, Resp: Send + 'static> {
    builder: Mesh<Req, Resp>,
}

impl<Req: Send + 'static, Resp: Send + 'static> MeshPeers<Req, Resp> {
    pub(crate) fn new(builder: Mesh<Req, Resp>) -> Self {
        MeshPeers { builder }
    }

    /// Joins the mesh (every shard must join before any returns) and starts serving calls
    /// from other shards with `handler`.
    pub async fn join<H, Fut>(self, handler: H) -> Rc<ShardMesh<Req, Resp>>
    where
        H: Fn(Req) -> Fut + 'static,
        Fut: Future<Output = Resp> + 'static,
    {
        let (senders, receivers) = self
            .builder
            .join()
            .await
            .expect("every shard joins the mesh exactly once");
        let mesh = Rc::new(ShardMesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        });
        mesh.clone().serve(receivers, Rc::new(handler));
        mesh
    }
}

/// A shard's joined view of the mesh.
pub struct ShardMesh<Req: Send + 'static, Resp: Send + 'static> {
    senders: Senders<Envelope<Req, Resp>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Resp>>>,
    next_id: Cell<u64>,
}

/// The peer shard went away (it is shutting down).
#[derive(Debug)]
pub struct ShardGone(pub usize);

impl std::fmt::Display for ShardGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} is not reachable", self.0)
    }
}

impl std::error::Error for ShardGone {}

impl<Req: Send + 'static, Resp: Send + 'static> ShardMesh<Req, Resp> {
    pub fn shard_id(&self) -> usize {
        self.senders.peer_id()
    }

    pub fn shard_count(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Sends `body` to shard `to` and waits for its answer.
    pub async fn call(&self, to: usize, body: Req) -> Result<Resp, ShardGone> {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        if self
            .senders
            .send_to(to, Envelope::Request { id, body })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return Err(ShardGone(to));
        }
        rx.await.map_err(|_| ShardGone(to))
    }

    fn serve<H, Fut>(self: Rc<Self>, mut receivers: Receivers<Envelope<Req, Resp>>, handler: Rc<H>)
    where
        H: Fn(Req) -> Fut + 'static,
        Fut: Future<Output = Resp> + 'static,
    {
        for (peer, mut stream) in receivers.streams() {
            let mesh = self.clone();
            let handler = handler.clone();
            glommio::spawn_local(async move {
                while let Some(envelope) = stream.next().await {
                    match envelope {
                        Envelope::Request { id, body } => {
                            let mesh = mesh.clone();
                            let reply = handler(body);
                            glommio::spawn_local(async move {
                                let body = reply.await;
                                // The caller may have shut down; nothing to do then.
                                let _ = mesh
                                    .senders
                                    .send_to(peer, Envelope::Response { id, body })
                                    .await;
                            })
                            .detach();
                        }
                        Envelope::Response { id, body } => {
                            // The caller may have stopped waiting (dropped its future).
                            if let Some(tx) = mesh.pending.borrow_mut().remove(&id) {
                                let _ = tx.send(body);
                            }
                        }
                    }
                }
            })
            .detach();
        }
    }
}
