//! The wire codec: encode and decode of every protocol message kind as a frame body
//! (`impl/src/runtime/codec.rs`: postcard of `Frame::Actor(msg)`), with deltas of 16 B, 1 KiB and
//! 64 KiB in the messages that carry one. Throughput is in frame-body bytes.
//!
//! `cargo bench -p replicore --bench codec`; `cargo test -p replicore --release --bench codec`
//! runs each case once as a smoke check.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replicore_model::master_slave::{
    AbortReason, Beat, ClientMsg, Decision, Mode, Msg, Outcome, ServiceMsg,
};
use replicore_model::store::{KvOp, Store};
use replicore_runtime::KvStore;
use replicore_runtime::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use std::hint::black_box;
use std::time::Duration;

type M = Msg<KvStore>;

/// The delta sizes the issue asks for: the value's length in bytes.
const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn op(size: usize) -> KvOp<String, Vec<u8>> {
    KvOp::Put("key00000042".to_string(), vec![0xa5; size])
}

/// Every message kind; those that carry a delta (or data) carry one of `size` bytes.
fn messages(size: usize) -> Vec<(&'static str, M)> {
    let delta = KvStore::default().delta_of(&op(size));
    let mut data = KvStore::default();
    data.apply(&delta);
    let beat = Beat {
        version: 41,
        decision: Some(Decision {
            version: 40,
            outcome: Outcome::Commit,
        }),
    };
    let s = |m: ServiceMsg<KvStore>| Msg::Service(m);
    vec![
        (
            "announce",
            s(ServiceMsg::Announce {
                prior: 41,
                new: 42,
                delta: Some(delta.clone()),
            }),
        ),
        (
            "prepare",
            s(ServiceMsg::Prepare {
                prior: 41,
                new: 42,
                delta: delta.clone(),
            }),
        ),
        (
            "delta",
            s(ServiceMsg::Delta {
                from: 41,
                to: 42,
                delta,
            }),
        ),
        (
            "snapshot",
            s(ServiceMsg::Snapshot {
                from: 3,
                to: 42,
                data,
            }),
        ),
        (
            "update",
            Msg::Client(ClientMsg::Update {
                req: 7,
                op: op(size),
                mode: Mode::TwoPhase { timeout_ms: 5_000 },
            }),
        ),
        ("delta_request", s(ServiceMsg::DeltaRequest { from: 41 })),
        ("prepared", s(ServiceMsg::Prepared { version: 42 })),
        ("refused", s(ServiceMsg::Refused { version: 42 })),
        ("commit", s(ServiceMsg::Commit { version: 42 })),
        ("abort", s(ServiceMsg::Abort { version: 42 })),
        ("heartbeat", s(ServiceMsg::Heartbeat(beat))),
        ("heartbeat_ack", s(ServiceMsg::HeartbeatAck(beat))),
        ("rollback", Msg::Client(ClientMsg::Rollback { req: 7 })),
        (
            "committed",
            Msg::Client(ClientMsg::Committed {
                req: 7,
                version: 42,
            }),
        ),
        (
            "aborted",
            Msg::Client(ClientMsg::Aborted {
                req: 7,
                version: 42,
                reason: AbortReason::TimedOut,
            }),
        ),
    ]
}

fn carries_payload(kind: &str) -> bool {
    matches!(
        kind,
        "announce" | "prepare" | "delta" | "snapshot" | "update"
    )
}

fn bench(c: &mut Criterion) {
    for (direction, encode) in [("encode", true), ("decode", false)] {
        let mut group = c.benchmark_group(format!("codec_{direction}"));
        group
            .sample_size(30)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (size, size_name) in SIZES {
            for (kind, msg) in messages(size) {
                // Fixed-size messages are measured once, with the smallest delta size.
                if !carries_payload(kind) && size != SIZES[0].0 {
                    continue;
                }
                let name = if carries_payload(kind) {
                    format!("{kind}/{size_name}")
                } else {
                    kind.to_string()
                };
                let bytes =
                    codec::encode(&Frame::Actor(&msg), MAX_FRAME_BYTES_DEFAULT).expect("encodes");
                // A smoke check that the bench measures a real round trip.
                match codec::decode::<Frame<M>>(&bytes) {
                    Ok(Frame::Actor(m)) => assert_eq!(m, msg),
                    other => panic!("{kind} did not round-trip: {other:?}"),
                }
                group.throughput(Throughput::Bytes(bytes.len() as u64));
                if encode {
                    group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                        b.iter(|| {
                            codec::encode(&Frame::Actor(black_box(&msg)), MAX_FRAME_BYTES_DEFAULT)
                        })
                    });
                } else {
                    group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                        b.iter(|| codec::decode::<Frame<M>>(black_box(&bytes)))
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
