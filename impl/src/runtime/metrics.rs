//! Observability: the metrics every node reports, the hook through which a protocol's
//! figures are read off its actor's steps, and the node's `/metrics` and `/health` endpoint.
//!
//! ```text
//!   Driver step ── input, then the commands it emitted ──▶ Observer (per protocol: counts,
//!       │                                                  latencies, lag, one INFO line
//!       │ save (timed), group size, inbox depth             per protocol event)
//!       ▼                                                        │
//!   metrics facade (`metrics::counter!` ...) ◀───────────────────┘
//!       ▼
//!   Prometheus recorder ──render──▶ GET /metrics      readiness ──▶ GET /health (200 / 503)
//! ```
//!
//! The figures come from what the actor did: the inputs it was given and the commands it
//! emitted, as the driver carries them out. An [`Observer`] sees them and the state after
//! the step, read only; it never changes what the actor does. With no recorder installed
//! the `metrics` macros do nothing, so a library user who does not call [`install`] pays
//! only for the observer's bookkeeping.
//!
//! Why the `metrics` facade with `metrics-exporter-prometheus`, and not OpenTelemetry: the
//! facade is a few macros with no runtime of its own, the recorder renders the Prometheus
//! text format that operators scrape, and built without its default features the exporter
//! pulls neither hyper nor a TLS stack (its push gateway needs aws-lc-rs, a C build).
//! The endpoint is therefore the small HTTP/1.1 responder of [`serve`], over tokio, which also
//! answers `/health`, something the exporter's listener does not do.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stateright::actor::{Actor, Id, Out};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Requests committed (protocol 1: `Committed` answers the master sent), counter.
pub const COMMITS: &str = "replicore_commits_total";
/// Requests aborted, by `reason`, counter.
pub const ABORTS: &str = "replicore_aborts_total";
/// From a request's first arrival at the master to its `Committed` answer, histogram.
pub const COMMIT_LATENCY: &str = "replicore_commit_latency_seconds";
/// One durable write (one redb transaction committed with fsync), histogram.
pub const SAVE_SECONDS: &str = "replicore_save_seconds";
/// Inputs whose steps shared one durable write (group commit), histogram.
pub const GROUP_COMMIT_INPUTS: &str = "replicore_group_commit_inputs";
/// Requests decided by one two-phase round (the protocol's group commit), histogram.
pub const ROUND_REQUESTS: &str = "replicore_round_requests";
/// Inputs waiting in the node's inbox after a turn of its loop, gauge.
pub const INBOX_INPUTS: &str = "replicore_inbox_inputs";
/// Requests queued behind the undecided two-phase round, gauge.
pub const ROUND_QUEUE_REQUESTS: &str = "replicore_round_queue_requests";
/// The version of the node's last durable save, gauge.
pub const DURABLE_VERSION: &str = "replicore_durable_version";
/// Frames lost because a connection's queue was full, counter.
pub const FRAMES_DROPPED: &str = "replicore_frames_dropped_total";
/// Per `slave`, on the master: versions the slave is behind (negative: ahead), gauge.
pub const SLAVE_LAG_VERSIONS: &str = "replicore_slave_lag_versions";
/// Per `slave`, on the master: seconds since the first version the slave lacks was
/// committed (0 when it lacks none), gauge.
pub const SLAVE_LAG_SECONDS: &str = "replicore_slave_lag_seconds";

/// Buckets of the duration histograms, in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets of the size histograms: 1 to 4,096.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// The input of a step, as an [`Observer`] sees it (before the actor takes it).
pub enum StepInput<'a, A: Actor> {
    /// `on_msg` from the given peer.
    Msg(Id, &'a A::Msg),
    /// `on_timeout`.
    Timer(&'a A::Timer),
}

/// A protocol's reading of its actor's steps: metrics and one INFO line per protocol event.
/// It sees each input before the step and the step's commands and resulting state after it,
/// before they are carried out; it never changes either.
pub trait Observer<A: Actor>: Send {
    /// The step's input, before the actor takes it.
    fn on_input(&mut self, input: StepInput<'_, A>) {
        let _ = input;
    }

    /// The step's commands and the state it left, before the commands are carried out.
    fn on_commands(&mut self, state: &A::State, out: &Out<A>) {
        let _ = (state, out);
    }
}

/// An observer that observes nothing.
pub struct Unobserved;

impl<A: Actor> Observer<A> for Unobserved {}

/// A metrics setup that could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus recorder could not be built or installed (one per process).
    #[error("cannot install the metrics recorder: {0}")]
    Install(#[from] metrics_exporter_prometheus::BuildError),
    /// The endpoint's address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Installs the process-wide Prometheus recorder (once per process) and returns the handle
/// that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_inputs".into()), SIZE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_requests".into()), SIZE_BUCKETS)?;
    Ok(builder.install_recorder()?)
}

/// Whether the node serves: what `/health` reports.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// The most endpoint connections served at once; beyond it a connection is closed unread.
pub const HTTP_CONNECTIONS_MAX: usize = 16;
/// The longest request head read, in bytes; a longer one is answered 431.
pub const HTTP_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a scraper has to send its request head.
pub const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the recorder's histograms are drained when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Binds `addr` for the metrics endpoint.
pub async fn bind(addr: &str) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serves `GET /metrics` (the recorder's text format) and `GET /health` (200 when `ready`
/// says the node serves, 503 otherwise) on `listener` until `cancel` fires. Anything else
/// is answered 404 (405 for a method other than GET); nothing a client sends can panic it.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    ready: Readiness,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(HTTP_CONNECTIONS_MAX));
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        let (stream, addr) = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(peer_addr = %addr, "metrics endpoint: too many connections");
            continue;
        };
        let (handle, ready) = (handle.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = answer(stream, addr, &handle, &ready).await {
                tracing::debug!(peer_addr = %addr, error = %e, "metrics endpoint: connection failed");
            }
        });
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(
    mut stream: TcpStream,
    addr: SocketAddr,
    handle: &PrometheusHandle,
    ready: &Readiness,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(HTTP_READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > HTTP_HEAD_BYTES_MAX {
                return Ok(true);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    if !complete {
        return Ok(());
    }
    let (status, body) = if head.len() > HTTP_HEAD_BYTES_MAX {
        ("431 Request Header Fields Too Large", String::new())
    } else {
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET", "/metrics") => {
                handle.run_upkeep();
                ("200 OK", handle.render())
            }
            ("GET", "/health") if ready() => ("200 OK", "ready\n".to_string()),
            ("GET", "/health") => ("503 Service Unavailable", "not ready\n".to_string()),
            ("GET", _) => ("404 Not Found", String::new()),
            _ => ("405 Method Not Allowed", String::new()),
        }
    };
    tracing::debug!(peer_addr = %addr, status, "metrics endpoint request");
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_endpoint_answers_metrics_health_and_refuses_the_rest() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(COMMITS, "node" => "0").increment(3);
        });
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let readiness: Readiness = Arc::new(move || flag.load(std::sync::atomic::Ordering::SeqCst));
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, handle, readiness, cancel.clone()));
        let metrics = get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("replicore_commits_total{node=\"0\"} 3"),
            "{metrics}"
        );
        let health = get(addr, "GET /health HTTP/1.1\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let health = get(addr, "GET /health HTTP/1.1\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(
            get(addr, "GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(HTTP_HEAD_BYTES_MAX));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431"));
        // Garbage is answered, never panicked on.
        assert!(
            get(addr, "\u{0}\u{1}\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        cancel.cancel();
        server.await.unwrap();
    }
}
