//! BLAKE3 digests with a type per meaning: a chunk's hash is not an object's hash.

use std::fmt;
use std::str::FromStr;

use crate::error::StoreError;

macro_rules! blake3_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps raw digest bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// Hashes `data` in one call.
            pub fn of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }

            /// The raw digest.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex, the form `b3sum` prints.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses raw bytes read back from the store.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, StoreError> {
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("{} of {} bytes", stringify!($name), bytes.len())))?;
                Ok(Self(arr))
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| StoreError::InvalidHash(s.chars().take(80).collect()))?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }
    };
}

blake3_newtype!(
    /// BLAKE3 of one content-defined chunk: the chunk's address.
    ChunkHash
);
blake3_newtype!(
    /// BLAKE3 of an object's whole content (what `b3sum` prints for the file).
    ContentHash
);
blake3_newtype!(
    /// BLAKE3 of an encoded manifest: how a journal entry names a chunk list too long to carry.
    ManifestHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_b3sum_format() {
        let h = ContentHash::of(b"abc");
        assert_eq!(
            h.to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(h.to_hex().parse::<ContentHash>().unwrap(), h);
        assert!("zz".parse::<ChunkHash>().is_err());
        assert!("ab".parse::<ChunkHash>().is_err());
    }
}

/// A chunk's bytes, checked against its hash: the only form in which bytes from elsewhere
/// (a peer) enter the store, so they are hashed once, on arrival, and never stored unchecked.
#[derive(Clone, Debug)]
pub struct VerifiedChunk {
    hash: ChunkHash,
    bytes: bytes::Bytes,
}

impl VerifiedChunk {
    /// `None` if the bytes do not hash to `hash`.
    pub fn new(hash: ChunkHash, bytes: bytes::Bytes) -> Option<Self> {
        (ChunkHash::of(&bytes) == hash).then_some(Self { hash, bytes })
    }

    pub fn hash(&self) -> &ChunkHash {
        &self.hash
    }

    pub fn into_parts(self) -> (ChunkHash, bytes::Bytes) {
        (self.hash, self.bytes)
    }
}
