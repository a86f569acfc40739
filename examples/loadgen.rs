//! The load generator of `benches/compare/`: one driver for every system compared, so that
//! replicore, Redis and etcd are measured by the same client code on the same runtime.
//! Each command prints one JSON line.
//!
//! ```text
//! loadgen floor      [--dir D]                       loopback TCP round trip, fsync of an
//!                                                    append and of a preallocated write,
//!                                                    replicore's durable save of one key
//! loadgen replicore  --slaves N --clients C --mode one|two [--pipeline W] [--batch K]
//!                    [--value-bytes B] [--seconds S] [--dir D]
//!                                                    a master and N slaves in this process,
//!                                                    TCP clients (or the embedding API with
//!                                                    W updates in flight); with --batch K
//!                                                    each update carries K puts
//! loadgen redis      --addr A --clients C [--wait N] [--depth D] [--value-bytes B] [--seconds S]
//!                                                    SET (pipelined D deep), or SET + WAIT N
//!                                                    in one write per update
//! loadgen etcd       --endpoints A,B,C --clients C [--value-bytes B] [--seconds S]
//!                                                    put through etcd's HTTP/JSON gateway
//! ```
//!
//! `cargo run --release -p replicore --example loadgen -- floor`

#[allow(dead_code)]
#[path = "../benches/support/cluster.rs"]
mod cluster;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use cluster::{BatchKv, BenchStore, Cluster, Load, quantile};
use replicore_runtime::runtime::tls::Security;
use replicore_runtime::{KvStore, Mode};
use serde_json::json;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Load generator for benches/compare")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ModeArg {
    One,
    Two,
}

#[derive(Subcommand)]
enum Command {
    /// The physical floor: loopback TCP round trip and fsync latency.
    Floor {
        /// Where the fsync files go (the disk every system under test writes to).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        /// Samples per figure.
        #[arg(long, default_value_t = 2000)]
        samples: usize,
    },
    /// replicore: a master and N slaves in this process, durable storage, TCP clients.
    Replicore {
        #[arg(long)]
        slaves: u64,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// One-phase only: drive the master's embedding API with this many updates in flight
        /// instead of TCP clients.
        #[arg(long)]
        pipeline: Option<usize>,
        /// Puts per update: above 1, each update is one batch of this many puts, committed as
        /// one version (what protocol batching would do); figures count puts.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        batch: u32,
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Where the nodes' data directories go.
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        /// Plain TCP between every node and client, instead of TLS 1.3 with keys derived
        /// from the cluster key (the default).
        #[arg(long)]
        plain: bool,
    },
    /// Redis: SET, pipelined `depth` deep, or SET + WAIT `wait` 1000 per update.
    Redis {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Replicas each SET waits for (0: no WAIT).
        #[arg(long, default_value_t = 0)]
        wait: u32,
        /// SETs written at once per client (only without --wait).
        #[arg(long, default_value_t = 1)]
        depth: usize,
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Connect over TLS 1.3, checking the server's certificate (for 127.0.0.1) against
        /// the CA in this PEM file.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
    },
    /// etcd: put through the HTTP/JSON gateway, clients spread over the endpoints.
    Etcd {
        /// Comma-separated host:port client URLs, the leader first.
        #[arg(long)]
        endpoints: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6 * 10.0).round() / 10.0
}

/// The JSON line of a load run.
fn report(ops: u64, elapsed: Duration, latency: &mut [Duration]) -> serde_json::Value {
    json!({
        "ops": ops,
        "secs": elapsed.as_secs_f64(),
        "ops_per_sec": (ops as f64 / elapsed.as_secs_f64()).round(),
        "p50_us": us(quantile(latency, 0.5)),
        "p99_us": us(quantile(latency, 0.99)),
    })
}

fn floor(dir: PathBuf, samples: usize) -> Result<serde_json::Value> {
    // Loopback TCP: a 64-byte ping echoed back, Nagle off on both ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut rtt = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) * 5 {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        rtt.push(t.elapsed());
    }
    drop(s);
    let _ = echo.join();

    // fsync of a 100-byte append to a growing file (data and size change).
    let tmp =
        tempfile::tempdir_in(&dir).with_context(|| format!("temp dir in {}", dir.display()))?;
    let mut f = std::fs::File::create(tmp.path().join("append"))?;
    let rec = [1u8; 100];
    let mut append = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        f.write_all(&rec)?;
        f.sync_data()?;
        append.push(t.elapsed());
    }
    // fdatasync of a 100-byte write into a preallocated, already synced file.
    let path = tmp.path().join("prealloc");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&vec![0u8; samples * 100 + 4096])?;
    f.sync_all()?;
    let mut prealloc = Vec::with_capacity(samples);
    {
        use std::os::unix::fs::FileExt;
        for i in 0..samples {
            let t = Instant::now();
            f.write_all_at(&rec, (i * 100) as u64)?;
            f.sync_data()?;
            prealloc.push(t.elapsed());
        }
    }
    // replicore's own durable step: one redb write transaction of one key, with fsync; and of
    // 16 keys, what a batch of 16 one-key updates would save at once.
    let mut save = redb_save(&tmp.path().join("redb1"), samples.min(500), 1)?;
    let mut save16 = redb_save(&tmp.path().join("redb16"), samples.min(500), 16)?;
    Ok(json!({
        "tcp_rtt_p50_us": us(quantile(&mut rtt, 0.5)),
        "tcp_rtt_p99_us": us(quantile(&mut rtt, 0.99)),
        "fsync_append_p50_us": us(quantile(&mut append, 0.5)),
        "fsync_append_p99_us": us(quantile(&mut append, 0.99)),
        "fsync_prealloc_p50_us": us(quantile(&mut prealloc, 0.5)),
        "fsync_prealloc_p99_us": us(quantile(&mut prealloc, 0.99)),
        "redb_save_p50_us": us(quantile(&mut save, 0.5)),
        "redb_save_p99_us": us(quantile(&mut save, 0.99)),
        "redb_save16_p50_us": us(quantile(&mut save16, 0.5)),
    }))
}

/// The latency of `Disk::save` of a change of `keys` keys on a 1 000-key slave store.
fn redb_save(dir: &std::path::Path, samples: usize, keys: u64) -> Result<Vec<Duration>> {
    use replicore_model::master_slave::slave_user::SlaveUser;
    use replicore_model::master_slave::{Saved, SlaveStorage};
    use replicore_runtime::KvStore;
    use replicore_runtime::runtime::storage::Disk;
    let saved = |version, data| {
        Saved::Slave(SlaveStorage {
            user: SlaveUser {
                version,
                data,
                ..SlaveUser::default()
            },
            lost: false,
        })
    };
    let disk = Disk::open_or_init(
        dir,
        &replicore_runtime::runtime::storage::Owner::new(1, 1, "loadgen"),
    )?;
    let mut data = KvStore::default();
    for i in 0..1000 {
        data.entries.insert(format!("key{i:08}"), vec![7; 100]);
    }
    let mut last = disk.save(&Default::default(), saved(1, data.clone()))?;
    let mut out = Vec::with_capacity(samples);
    for v in 2..samples as u64 + 2 {
        for k in 0..keys {
            data.entries.insert(
                format!("key{:08}", (v * keys + k) % 1000),
                v.to_be_bytes().to_vec(),
            );
        }
        let t = Instant::now();
        last = disk.save(&last, saved(v, data.clone()))?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// What one `loadgen replicore` run is.
struct ReplicoreRun {
    slaves: u64,
    clients: usize,
    mode: ModeArg,
    pipeline: Option<usize>,
    batch: usize,
    value_bytes: usize,
    seconds: f64,
    dir: PathBuf,
    plain: bool,
}

async fn replicore(r: ReplicoreRun) -> Result<serde_json::Value> {
    if r.batch > 1 {
        if r.pipeline.is_some() {
            bail!("--pipeline and --batch are separate loads; give one");
        }
        replicore_with::<BatchKv>(r).await
    } else {
        replicore_with::<KvStore>(r).await
    }
}

async fn replicore_with<S: BenchStore>(r: ReplicoreRun) -> Result<serde_json::Value> {
    let ReplicoreRun {
        slaves,
        clients,
        mode,
        pipeline,
        batch,
        value_bytes,
        seconds,
        dir,
        plain,
    } = r;
    let tmp =
        tempfile::tempdir_in(&dir).with_context(|| format!("temp dir in {}", dir.display()))?;
    let security = if plain {
        Security::Plain
    } else {
        Security::default()
    };
    let cluster = Cluster::<S>::start_secured(slaves, tmp.path(), security).await;
    let load = Load::For(Duration::from_secs_f64(seconds));
    let out = match (mode, pipeline) {
        (ModeArg::One, Some(window)) => {
            let (ops, elapsed) = cluster::run_pipelined(&cluster, load, window, value_bytes).await;
            report(ops, elapsed, &mut [])
        }
        (ModeArg::Two, Some(_)) => bail!("--pipeline is for one-phase updates"),
        (mode, None) => {
            let mode = match mode {
                ModeArg::One => Mode::OnePhase,
                ModeArg::Two => cluster::TWO_PHASE,
            };
            let mut conns = cluster::clients(&cluster, clients).await;
            let mut run = cluster::run(&cluster, &mut conns, mode, load, batch, value_bytes).await;
            let mut out = report(run.ops, run.elapsed, &mut run.client_latency);
            if mode != Mode::OnePhase {
                out["all_slaves_p50_us"] = us(quantile(&mut run.all_slaves_latency, 0.5)).into();
                out["all_slaves_p99_us"] = us(quantile(&mut run.all_slaves_latency, 0.99)).into();
            }
            out
        }
    };
    cluster.shutdown().await;
    let mut out = out;
    out["transport"] = if plain { "plain" } else { "tls" }.into();
    Ok(out)
}

/// A RESP array of bulk strings.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection to Redis: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TLS 1.3 connector that trusts the CA in `ca` (a PEM file).
fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert.with_context(|| format!("{}", ca.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Connects to `addr`, over TLS when `tls` is given.
async fn connect(addr: &str, tls: Option<tokio_rustls::TlsConnector>) -> Result<Box<dyn Io>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(match tls {
        None => Box::new(s),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            Box::new(tls.connect(name, s).await?)
        }
    })
}

/// Reads one simple RESP reply line (`+OK`, `:2`, `-ERR ...`).
async fn resp_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, line: &mut String) -> Result<()> {
    line.clear();
    if r.read_line(line).await? == 0 {
        bail!("redis closed the connection");
    }
    if line.starts_with('-') {
        bail!("redis: {}", line.trim_end());
    }
    Ok(())
}

async fn redis(
    addr: String,
    clients: usize,
    wait: u32,
    depth: usize,
    value_bytes: usize,
    seconds: f64,
    tls_ca: Option<PathBuf>,
) -> Result<serde_json::Value> {
    let tls = tls_ca.as_deref().map(tls_connector).transpose()?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = addr.clone();
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = BufReader::new(connect(&addr, tls).await?);
            let value = vec![0x5a_u8; value_bytes];
            let wait_n = wait.to_string();
            let mut line = String::new();
            let mut latency = Vec::new();
            let mut short_waits = 0u64;
            let mut i = 0u64;
            while Instant::now() < until {
                let mut batch = Vec::new();
                let n = if wait > 0 { 1 } else { depth.max(1) };
                for _ in 0..n {
                    let key = format!("c{c:02}k{:06}", i % 100_000);
                    i += 1;
                    batch.extend(resp(&[b"SET", key.as_bytes(), &value]));
                }
                if wait > 0 {
                    batch.extend(resp(&[b"WAIT", wait_n.as_bytes(), b"1000"]));
                }
                let t = Instant::now();
                r.get_mut().write_all(&batch).await?;
                for _ in 0..n {
                    resp_line(&mut r, &mut line).await?;
                }
                if wait > 0 {
                    resp_line(&mut r, &mut line).await?;
                    let acked: u32 = line.trim_start_matches(':').trim_end().parse()?;
                    if acked < wait {
                        short_waits += 1;
                    }
                }
                let d = t.elapsed();
                for _ in 0..n {
                    latency.push(d);
                }
            }
            anyhow::Ok((latency, short_waits))
        }));
    }
    let mut latency = Vec::new();
    let mut short = 0;
    for t in tasks {
        let (l, s) = t.await??;
        latency.extend(l);
        short += s;
    }
    let elapsed = started.elapsed();
    let mut out = report(latency.len() as u64, elapsed, &mut latency);
    out["waits_short_of_replicas"] = short.into();
    out["transport"] = if tls_ca.is_some() { "tls" } else { "plain" }.into();
    Ok(out)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads one HTTP/1.1 response (Content-Length or chunked); returns the status code.
async fn http_response(r: &mut BufReader<TcpStream>) -> Result<u16> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        bail!("etcd closed the connection");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .context("no HTTP status")?
        .parse()?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        let h = line.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim_end(), 16)?;
            let mut body = vec![0; size + 2];
            r.read_exact(&mut body).await?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length];
        r.read_exact(&mut body).await?;
    }
    Ok(status)
}

async fn etcd(
    endpoints: String,
    clients: usize,
    value_bytes: usize,
    seconds: f64,
) -> Result<serde_json::Value> {
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_string).collect();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = endpoints[c % endpoints.len()].clone();
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let mut r = BufReader::new(s);
            let value = base64(&vec![0x5a_u8; value_bytes]);
            let mut latency = Vec::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let key = base64(format!("c{c:02}k{:06}", i % 100_000).as_bytes());
                i += 1;
                let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
                let req = format!(
                    "POST /v3/kv/put HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t = Instant::now();
                r.get_mut().write_all(req.as_bytes()).await?;
                let status = http_response(&mut r).await?;
                if status != 200 {
                    bail!("etcd answered HTTP {status}");
                }
                latency.push(t.elapsed());
            }
            anyhow::Ok(latency)
        }));
    }
    let mut latency = Vec::new();
    for t in tasks {
        latency.extend(t.await??);
    }
    let elapsed = started.elapsed();
    Ok(report(latency.len() as u64, elapsed, &mut latency))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = match cli.command {
        Command::Floor { dir, samples } => floor(dir, samples)?,
        Command::Replicore {
            slaves,
            clients,
            mode,
            pipeline,
            batch,
            value_bytes,
            seconds,
            dir,
            plain,
        } => rt.block_on(replicore(ReplicoreRun {
            slaves,
            clients,
            mode,
            pipeline,
            batch: batch as usize,
            value_bytes,
            seconds,
            dir,
            plain,
        }))?,
        Command::Redis {
            addr,
            clients,
            wait,
            depth,
            value_bytes,
            seconds,
            tls_ca,
        } => rt.block_on(redis(
            addr,
            clients,
            wait,
            depth,
            value_bytes,
            seconds,
            tls_ca,
        ))?,
        Command::Etcd {
            endpoints,
            clients,
            value_bytes,
            seconds,
        } => rt.block_on(etcd(endpoints, clients, value_bytes, seconds))?,
    };
    println!("{out}");
    Ok(())
}
