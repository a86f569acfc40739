//! The stable hasher that the protocols' canonical fingerprints are built with (for an
//! explorer's `Options::fingerprint`).

use std::hash::{BuildHasher, Hash, Hasher};

/// A fast hasher with fixed keys, for fingerprints: the same value hashes the same in every
/// run.
pub fn hasher() -> impl Hasher {
    ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
    .build_hasher()
}

/// The fingerprint of one value, with [`hasher`].
pub fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = hasher();
    value.hash(&mut h);
    h.finish()
}
