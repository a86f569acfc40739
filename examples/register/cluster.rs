//! The register's nodes on the runtime: each one the runtime's driver, node loop, TCP
//! transport and redb storage, traced; and a client over TCP. Nothing here is protocol: the
//! protocol is `protocol.rs`.

use crate::protocol::{Msg, Node, Register, Timer};
use futures::{SinkExt, StreamExt};
use replicore_runtime::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use replicore_runtime::runtime::conformance::{self, Replayed};
use replicore_runtime::runtime::driver::{Driver, DriverOptions, Router};
use replicore_runtime::runtime::handshake::Identity;
use replicore_runtime::runtime::node_loop::{self, Host, INBOX_INPUTS};
use replicore_runtime::runtime::storage::Disk;
use replicore_runtime::runtime::trace::Tracer;
use replicore_runtime::runtime::transport::{self, Link};
use stateright::actor::Id;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const CLUSTER: u64 = 77;
const KEY: &[u8] = b"register example";

/// The register node with id `id` of `nodes`.
fn actor(nodes: u64) -> Node {
    Node {
        backups: (1..nodes).map(|i| Id::from(i as usize)).collect(),
    }
}

/// Publishes a node's version after each turn of its loop.
struct Versions(watch::Sender<u64>);

impl Host<Node> for Versions {
    fn observe(&mut self, state: &Register) {
        self.0.send_if_modified(|v| {
            let changed = *v != state.version;
            *v = state.version;
            changed
        });
    }
}

/// A running node.
pub struct Running {
    /// Where it listens.
    pub addr: String,
    /// Its version, as it changes.
    pub versions: watch::Receiver<u64>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    /// Stops the node and waits for it.
    pub async fn stop(self) -> Result<(), String> {
        self.cancel.cancel();
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Starts node `id` of `nodes` in `dir`, tracing into `trace`; a backup dials `primary`.
pub async fn start(
    id: u64,
    nodes: u64,
    dir: &Path,
    trace: &Path,
    primary: Option<&str>,
) -> Result<Running, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let disk = Disk::open_or_init(
        &dir.join(format!("node{id}")),
        &replicore_runtime::runtime::storage::Owner::new(CLUSTER, id, "register/node"),
    )
    .map_err(|e| e.to_string())?;
    let tracer = Tracer::create(trace, id, serde_json::json!({ "nodes": nodes }))
        .map_err(|e| e.to_string())?;
    let router = Router::default();
    let mut driver = Driver::start_traced(
        actor(nodes),
        Id::from(id as usize),
        disk,
        router.clone(),
        DriverOptions::default(),
        Some(tracer),
    )
    .await
    .map_err(|e| e.to_string())?;
    let cancel = CancellationToken::new();
    let (inbox, mut inbox_rx) = mpsc::channel(INBOX_INPUTS);
    let link = Link {
        identity: Identity::new(CLUSTER, id, KEY),
        router,
        inbox,
        max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
        cancel: cancel.clone(),
    };
    tokio::spawn(transport::accept_loop(listener, link.clone()));
    if let Some(primary) = primary {
        tokio::spawn(transport::dial_loop(primary.to_string(), link));
    }
    let (tx, versions) = watch::channel(driver.state().version);
    let node_cancel = cancel.clone();
    let task = tokio::spawn(async move {
        let mut host = Versions(tx);
        node_loop::run(&mut driver, &mut inbox_rx, &node_cancel, &mut host)
            .await
            .map_err(|e| e.to_string())
    });
    Ok(Running {
        addr,
        versions,
        cancel,
        task,
    })
}

/// Writes `value` through the primary at `addr` as request `req`; returns its version.
pub async fn write(addr: &str, req: u64, value: &[u8]) -> Result<u64, String> {
    let me = Identity::new(CLUSTER, 1 << 32, KEY);
    let (mut io, _) = transport::connect(addr, &me)
        .await
        .map_err(|e| e.to_string())?;
    *io.codec_mut() = codec::frame_codec(MAX_FRAME_BYTES_DEFAULT);
    let write = Msg::Write {
        req,
        value: value.to_vec(),
    };
    let bytes =
        codec::encode(&Frame::Actor(write), MAX_FRAME_BYTES_DEFAULT).map_err(|e| e.to_string())?;
    io.send(bytes).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(frame)) = io.next().await {
            if let Ok(
                Frame::Actor(Msg::Written { req: r, version })
                | Frame::Traced(_, Msg::Written { req: r, version }),
            ) = codec::decode::<Frame<Msg>>(&frame)
                && r == req
            {
                return Some(version);
            }
        }
        None
    });
    answer
        .await
        .map_err(|_| "no answer in time".to_string())?
        .ok_or_else(|| "the primary closed the connection".to_string())
}

/// Replays the traces in `trace` through each node's actor.
pub fn check(trace: &Path) -> Result<Replayed, String> {
    let nodes = conformance::read_dir::<Msg, Timer, Register>(trace).map_err(|e| e.to_string())?;
    conformance::replay(&nodes, |_, header| {
        let n = header.meta["nodes"]
            .as_u64()
            .ok_or_else(|| "no node count in the header".to_string())?;
        Ok(actor(n))
    })
    .map_err(|e| e.to_string())
}

/// The example's run: three nodes, ten writes, a backup restarted in the middle, every node
/// at the last version, then the traces checked. Returns the last version and the replay.
pub async fn scenario(dir: &Path) -> Result<(u64, Replayed), String> {
    let trace = dir.join("trace");
    let primary = start(0, 3, dir, &trace, None).await?;
    let mut backups = Vec::new();
    for id in 1..3 {
        backups.push(start(id, 3, dir, &trace, Some(&primary.addr)).await?);
    }
    let mut last = 0;
    for req in 0..10u64 {
        if req == 5 {
            // A backup stops and comes back from its storage; the primary's Sync timer
            // brings it up to date.
            let b = backups.remove(0);
            b.stop().await?;
            backups.insert(0, start(1, 3, dir, &trace, Some(&primary.addr)).await?);
        }
        last = write(&primary.addr, req, format!("value {req}").as_bytes()).await?;
    }
    for b in &backups {
        let mut v = b.versions.clone();
        tokio::time::timeout(Duration::from_secs(10), v.wait_for(|v| *v >= last))
            .await
            .map_err(|_| "a backup did not converge in 10 s".to_string())?
            .map_err(|_| "a backup stopped".to_string())?;
    }
    for b in backups {
        b.stop().await?;
    }
    primary.stop().await?;
    Ok((last, check(&trace)?))
}
