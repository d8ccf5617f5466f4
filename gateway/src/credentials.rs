//! S3 identities: who may sign requests, and where generated keys are kept.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::Rng;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use crate::config::KeyPair;

/// File in the data directory that holds a generated key pair (mode 0600).
pub const GENERATED_FILE: &str = "credentials.toml";

/// The set of access keys this node accepts.
#[derive(Clone, Debug)]
pub struct KeyStore {
    keys: HashMap<String, String>,
}

/// What `KeyStore::load` did, so `serve` can tell the user once.
pub enum KeyOrigin {
    Configured,
    Generated(KeyPair),
    LoadedGenerated(KeyPair),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct GeneratedFile {
    access_key: String,
    secret_key: String,
}

impl KeyStore {
    /// Uses the configured keys; with none, loads or creates a generated pair in `data_dir`.
    pub fn load(configured: &[KeyPair], data_dir: &Path) -> std::io::Result<(Self, KeyOrigin)> {
        if !configured.is_empty() {
            return Ok((Self::from_pairs(configured), KeyOrigin::Configured));
        }
        let path = data_dir.join(GENERATED_FILE);
        if path.exists() {
            let text = fs::read_to_string(&path)?;
            let g: GeneratedFile = toml::from_str(&text).map_err(|e| {
                std::io::Error::other(format!("{} is not valid: {e}", path.display()))
            })?;
            // Someone may have loosened it; a secret must not stay world-readable.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            let pair = KeyPair {
                access_key: g.access_key,
                secret_key: g.secret_key,
            };
            return Ok((Self::single(&pair), KeyOrigin::LoadedGenerated(pair)));
        }
        let pair = KeyPair {
            access_key: random_token(20, true),
            secret_key: random_token(40, false),
        };
        let text = toml::to_string(&GeneratedFile {
            access_key: pair.access_key.clone(),
            secret_key: pair.secret_key.clone(),
        })
        .map_err(std::io::Error::other)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok((Self::single(&pair), KeyOrigin::Generated(pair)))
    }

    /// The given pairs, as configured.
    pub fn from_pairs(pairs: &[KeyPair]) -> Self {
        Self {
            keys: pairs
                .iter()
                .map(|k| (k.access_key.clone(), k.secret_key.clone()))
                .collect(),
        }
    }

    /// The secret of `access_key`, for the signatures checked outside s3s (SigV2).
    pub fn secret(&self, access_key: &str) -> Option<&str> {
        self.keys.get(access_key).map(String::as_str)
    }

    fn single(pair: &KeyPair) -> Self {
        Self {
            keys: [(pair.access_key.clone(), pair.secret_key.clone())]
                .into_iter()
                .collect(),
        }
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn random_token(len: usize, upper_only: bool) -> String {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let set = if upper_only { UPPER } else { ANY };
    let mut rng = rand::rng();
    (0..len)
        .map(|_| set[rng.random_range(0..set.len())] as char)
        .collect()
}

#[async_trait::async_trait]
impl S3Auth for KeyStore {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.get(access_key) {
            Some(s) => Ok(SecretKey::from(s.clone())),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS access key Id you provided does not exist in our records."
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_private_and_stable() {
        let dir = std::env::temp_dir().join(format!(
            "s3swarm-keys-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).unwrap();
        let (_, first) = KeyStore::load(&[], &dir).unwrap();
        let KeyOrigin::Generated(a) = first else {
            panic!("expected a generated key")
        };
        let mode = fs::metadata(dir.join(GENERATED_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (_, again) = KeyStore::load(&[], &dir).unwrap();
        let KeyOrigin::LoadedGenerated(b) = again else {
            panic!("expected the stored key")
        };
        assert_eq!(a, b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
