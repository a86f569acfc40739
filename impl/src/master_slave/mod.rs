//! Protocol 1 (master/slave replication, seeds 000 and 001) on the runtime: the model's
//! `MasterServer` and `SlaveServer` on the generic driver ([`node`], the embedding API), a
//! remote client ([`client`]), and the replay of recorded traces through the model
//! ([`conformance`]).

pub mod client;
pub mod conformance;
pub mod node;
pub mod observe;

pub use node::{Node, NodeConfig, NodeError, UpdateError, View};

/// Protocol 1's messages on the wire: round trips, limits, and hostile bytes.
#[cfg(test)]
mod wire_tests {
    use crate::runtime::codec::{CodecError, Frame, decode, encode};
    use replicore_model::master_slave::{ClientMsg, Mode, Msg, ServiceMsg};
    use replicore_model::store::{Kv, KvOp};

    type M = Msg<Kv<String, Vec<u8>>>;

    #[test]
    fn frames_round_trip() {
        let msg: M = Msg::Client(ClientMsg::Update {
            req: 3,
            op: KvOp::Put("k".into(), b"v".to_vec()),
            mode: Mode::TwoPhase { timeout_ms: 500 },
        });
        let bytes = encode(&Frame::Actor(&msg), 1024).unwrap();
        match decode::<Frame<M>>(&bytes).unwrap() {
            Frame::Actor(m) => assert_eq!(m, msg),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let msg: M = Msg::Service(ServiceMsg::Commit { version: 1 });
        assert!(matches!(
            encode(&Frame::Actor(&msg), 1),
            Err(CodecError::TooLarge { .. })
        ));
    }

    /// Found by `fuzz/` (`frame_decode`): a Snapshot frame whose data claims a huge map
    /// made the decoder preallocate it (11 GB for these 9 bytes; a capacity overflow panic
    /// for a larger claim). The claim must cost nothing until entries arrive.
    #[test]
    fn a_frame_claiming_a_huge_map_is_refused_without_allocating_it() {
        let found = [0x00, 0x00, 0x03, 0x00, 0x0a, 0xff, 0xfd, 0xff, 0x70];
        assert!(decode::<Frame<M>>(&found).is_err());
        // Actor, Service, Snapshot { from: 0, to: 10, data: a map of 2^63 entries }.
        let mut huge = vec![0x00, 0x00, 0x03, 0x00, 0x0a];
        huge.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(decode::<Frame<M>>(&huge).is_err());
        // The same claim in a Prepare's delta.
        let mut delta = vec![0x00, 0x00, 0x04, 0x00, 0x01];
        delta.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(decode::<Frame<M>>(&delta).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic pseudo-random sweep of bodies: decoding may fail, never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..512 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<Frame<M>>(&body);
            let _ = decode::<crate::runtime::handshake::HandshakeMsg>(&body);
        }
    }
}
