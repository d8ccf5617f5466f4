//! Bucket names and object keys, validated once at the edge.

use std::fmt;

use crate::error::{Result, StoreError};

/// A bucket name that follows S3's naming rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    /// Checks `name` against the S3 rules for general purpose buckets.
    pub fn new(name: &str) -> Result<Self> {
        let bad = |why: &str| Err(StoreError::InvalidBucketName(format!("{name:?}: {why}")));
        if !(3..=63).contains(&name.len()) {
            return bad("must be between 3 and 63 characters long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return bad("may contain only lowercase letters, digits, '.' and '-'");
        }
        let first = name.as_bytes()[0];
        let last = name.as_bytes()[name.len() - 1];
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return bad("must begin and end with a letter or digit");
        }
        if name.contains("..") || name.contains(".-") || name.contains("-.") {
            return bad("must not contain '..', '.-' or '-.'");
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return bad("must not be formatted as an IP address");
        }
        for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
            if name.starts_with(p) {
                return bad(&format!("must not start with {p:?}"));
            }
        }
        for s in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
            if name.ends_with(s) {
                return bad(&format!("must not end with {s:?}"));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// For names already validated when they were stored.
    pub(crate) fn trusted(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names one incarnation of a bucket: 16 random bytes drawn when the bucket is created. A name
/// deleted and created again (perhaps by another identity) is another bucket, so nothing
/// written into the old one, however late it arrives from a peer, lands in the new one.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketId(pub [u8; 16]);

impl BucketId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BucketId({self})")
    }
}

impl serde::Serialize for BucketId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BucketId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

/// Longest object key S3 accepts, in UTF-8 bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// An object key: 1 to 1024 bytes of UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn new(key: &str) -> Result<Self> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey("the key is empty".into()));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(StoreError::KeyTooLong(key.len()));
        }
        // NUL separates key parts in the metadata layout; S3 clients never send it.
        if key.contains('\0') {
            return Err(StoreError::InvalidKey(
                "the key contains a NUL character".into(),
            ));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket.data", "a1b", &"a".repeat(63)] {
            assert!(BucketName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "a_b",
            &"a".repeat(64),
            "b-s3alias",
        ] {
            assert!(BucketName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_limited_to_1024_bytes() {
        assert!(ObjectKey::new(&"k".repeat(1024)).is_ok());
        assert!(matches!(
            ObjectKey::new(&"k".repeat(1025)),
            Err(StoreError::KeyTooLong(1025))
        ));
        assert!(ObjectKey::new("").is_err());
        assert!(ObjectKey::new("a\0b").is_err());
        assert!(ObjectKey::new("ünïcødé/ key+%//").is_ok());
    }
}
