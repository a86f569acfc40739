//! Bytes from a peer after the handshake: the length-delimited layer, then the postcard body
//! of a `Frame` (and of a handshake message). Decoding may fail; it must never panic, and a
//! frame that decodes must encode back to a body that decodes to the same message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use replicore_model::master_slave::Msg;
use replicore_runtime::KvStore;
use replicore_runtime::runtime::codec::{self, Frame};
use replicore_runtime::runtime::handshake::HandshakeMsg;
use tokio_util::codec::Decoder;

type M = Msg<KvStore>;

fn body(data: &[u8]) {
    if let Ok(frame) = codec::decode::<Frame<M>>(data) {
        let msg = match frame {
            Frame::Actor(m) | Frame::Traced(_, m) => m,
            Frame::Query(_) | Frame::Reply(_) => return,
        };
        let again = codec::encode(&Frame::Actor(&msg), usize::MAX).expect("a decoded message encodes");
        match codec::decode::<Frame<M>>(&again) {
            Ok(Frame::Actor(m)) => assert_eq!(m, msg, "round trip"),
            other => panic!("re-encoded frame does not decode: {other:?}"),
        }
    }
    let _ = codec::decode::<HandshakeMsg>(data);
}

fuzz_target!(|data: &[u8]| {
    body(data);
    let mut framing = codec::frame_codec(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = framing.decode(&mut buf) {
        body(&frame);
    }
});
