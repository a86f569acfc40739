//! The cost of TLS on the one transport (`impl/src/runtime/tls.rs`), plain TCP beside TLS 1.3,
//! over loopback against a real master node:
//!
//! - `transport_round_trip`: one `Get` query and its reply on an open connection, the value
//!   16 B, 4 KiB or 64 KiB (throughput in value bytes): the per-frame cost of encryption.
//! - `transport_connect`: opening a connection (TCP, TLS, the key proof) and closing it,
//!   with derived keys and with certificate files (ECDSA P-256, one CA): what each
//!   short-lived CLI client pays.
//!
//! `cargo bench -p replicore --bench transport`; `cargo test -p replicore --release --bench
//! transport` runs each case once as a smoke check.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{SinkExt, StreamExt};
use replicore_runtime::master_slave::node::{MASTER_ID, Node, NodeConfig};
use replicore_runtime::runtime::codec::{self, Frame, Query, Reply};
use replicore_runtime::runtime::handshake::Identity;
use replicore_runtime::runtime::tls::{Authority, CertFiles, CertPaths, Role, Security};
use replicore_runtime::runtime::transport::{self, CLIENT_ID_MIN};
use replicore_runtime::{KvStore, Mode};
use std::path::Path;
use std::time::Duration;

const CLUSTER: u64 = 3;
const KEY: &str = "bench-key";
const SIZES: [(usize, &str); 3] = [(16, "16B"), (4096, "4KiB"), (64 * 1024, "64KiB")];

/// The certificate files of `role` issued into `dir` (a CA is made on the first call).
fn certificates(dir: &Path, role: Role) -> Security {
    if !dir.join("ca.pem").exists() {
        let ca = Authority::new(CLUSTER).expect("a CA");
        ca.save(dir).expect("save the CA");
        for r in [Role::Node(MASTER_ID), Role::Client] {
            ca.issue(dir, CLUSTER, r, 0, 4_000_000_000).expect("issue");
        }
    }
    let stem = role.stem();
    Security::Certificates(
        CertFiles::load(CertPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        })
        .expect("load certificates"),
    )
}

async fn ask(io: &mut transport::Connection, key: &str) -> usize {
    let frame = codec::encode(
        &Frame::<()>::Query(Query::Get {
            key: key.as_bytes().to_vec(),
        }),
        1 << 20,
    )
    .expect("encode");
    io.send(frame).await.expect("send");
    let body = io.next().await.expect("a reply").expect("a frame");
    match codec::decode::<Frame<()>>(&body) {
        Ok(Frame::Reply(Reply::Value { value, .. })) => value.map_or(0, |v| v.len()),
        other => panic!("unexpected {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let certs = tempfile::tempdir().expect("tempdir");
    let modes = |role: Role| {
        [
            ("plain", Security::Plain),
            ("tls_derived", Security::DerivedKey),
            ("tls_certificates", certificates(certs.path(), role)),
        ]
    };
    // One master per mode, each holding the three values.
    let data = tempfile::tempdir().expect("tempdir");
    let masters: Vec<(&str, Node<KvStore>, Security)> = modes(Role::Node(MASTER_ID))
        .into_iter()
        .zip(modes(Role::Client))
        .map(|((name, node_security), (_, client_security))| {
            let mut cfg = NodeConfig::new(CLUSTER, KEY, MASTER_ID, 0, data.path().join(name));
            cfg.security = node_security;
            cfg.init = true;
            let node = rt.block_on(async {
                let node = Node::<KvStore>::start(cfg).await.expect("master starts");
                for (size, label) in SIZES {
                    node.put(label, vec![0xa5; size], Mode::OnePhase)
                        .await
                        .expect("put");
                }
                node
            });
            (name, node, client_security)
        })
        .collect();

    let mut group = c.benchmark_group("transport_round_trip");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, node, security) in &masters {
        let me = Identity::new(CLUSTER, CLIENT_ID_MIN + 1, KEY).with_security(security.clone());
        let addr = node.local_addr().to_string();
        let mut io = rt.block_on(async {
            let (mut io, _) = transport::connect(&addr, &me).await.expect("connect");
            io.codec_mut().set_max_frame_length(1 << 20);
            io
        });
        for (size, label) in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new(*name, label), |b| {
                b.iter(|| rt.block_on(ask(&mut io, label)));
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("transport_connect");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, node, security) in &masters {
        let me = Identity::new(CLUSTER, CLIENT_ID_MIN + 2, KEY).with_security(security.clone());
        let addr = node.local_addr().to_string();
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (io, peer) = transport::connect(&addr, &me).await.expect("connect");
                    drop(io);
                    peer
                })
            });
        });
    }
    group.finish();

    for (_, node, _) in masters {
        rt.block_on(node.shutdown()).expect("shutdown");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
