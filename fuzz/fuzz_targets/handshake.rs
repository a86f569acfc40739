//! A peer that sends arbitrary bytes during the handshake, to the accepting and to the
//! dialing side. The handshake may fail; it must never panic, and it must never accept a
//! peer that does not know the cluster key (the input cannot contain a valid proof).
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicore_runtime::runtime::handshake::{self, Identity};
use std::sync::OnceLock;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn me() -> Identity {
    Identity::new(1, 0, &b"the cluster key, unknown to the fuzzer"[..])
}

fuzz_target!(|data: &[u8]| {
    // The duplex buffer holds the whole input before the handshake reads it.
    let data = &data[..data.len().min(60_000)];
    let (first, accepting) = data.split_at(data.len() / 2);
    runtime().block_on(async {
        for (input, dialing) in [(accepting, false), (first, true)] {
            let (mut peer, node) = tokio::io::duplex(1 << 16);
            peer.write_all(input).await.expect("duplex write");
            peer.shutdown().await.expect("duplex shutdown");
            let mut io = Framed::new(node, handshake::handshake_codec());
            let r = if dialing {
                handshake::initiate(&mut io, &me()).await
            } else {
                handshake::accept(&mut io, &me()).await
            };
            assert!(r.is_err(), "a peer without the key was accepted: {r:?}");
            drop(peer);
        }
    });
});
