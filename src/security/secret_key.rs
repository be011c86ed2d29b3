use std::fmt;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const GENERATED_KEY_BYTES: usize = 64;
const MIN_KEY_BYTES: usize = 32;

/// The installation's secret: it signs per-session form tokens (and, later, links in mail).
/// Several instances behind one load balancer must share the same file.
///
/// Kept as HMAC's state after the key: every signature starts from a copy of it, instead of
/// hashing both padded key blocks again each time (and, for a key longer than a block, the key
/// itself): two of the four SHA-256 blocks a short message's signature costs, or four of six.
#[derive(Clone)]
pub struct SecretKey(Hmac<Sha256>);

#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("cannot read {path}: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    Uncreatable { path: String, source: std::io::Error },
    #[error("{path} holds {len} bytes; a key needs at least {MIN_KEY_BYTES}")]
    TooShort { path: String, len: usize },
}

impl SecretKey {
    /// Reads the key file, or creates it with fresh random bytes (mode 0600) if it does not
    /// exist. Creation is exclusive, so two instances starting together end up with one key.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretKeyError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => Self::from_file_bytes(&shown, bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => match Self::create(path) {
                Ok(key) => Ok(key),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let bytes = std::fs::read(path).map_err(|source| {
                        SecretKeyError::Unreadable { path: shown.clone(), source }
                    })?;
                    Self::from_file_bytes(&shown, bytes)
                }
                Err(source) => Err(SecretKeyError::Uncreatable { path: shown, source }),
            },
            Err(source) => Err(SecretKeyError::Unreadable { path: shown, source }),
        }
    }

    fn from_file_bytes(path: &str, bytes: Vec<u8>) -> Result<Self, SecretKeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(SecretKeyError::TooShort { path: path.to_owned(), len: bytes.len() });
        }
        Ok(Self::keyed(&bytes))
    }

    fn keyed(bytes: &[u8]) -> Self {
        Self(
            <Hmac<Sha256> as KeyInit>::new_from_slice(bytes)
                .expect("HMAC accepts keys of any length"),
        )
    }

    fn create(path: &Path) -> std::io::Result<Self> {
        let mut key = vec![0u8; GENERATED_KEY_BYTES];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        // The umask cannot widen 0600, but an inherited ACL-free mode is worth pinning anyway.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&key)?;
        file.sync_all()?;
        Ok(Self::keyed(&key))
    }

    /// HMAC-SHA256 of `message` under this key, separated by `purpose` so a value signed for one
    /// use can never be replayed as another.
    pub fn sign(&self, purpose: &str, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_mode_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enlist.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), GENERATED_KEY_BYTES);
        let second = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(first.sign("t", b"m"), second.sign("t", b"m"));
        assert_ne!(first.sign("t", b"m"), first.sign("u", b"m"));
    }

    /// The kept state signs as a fresh HMAC of the whole key would, for keys shorter than,
    /// equal to and longer than SHA-256's block, and each signature starts from it anew.
    #[test]
    fn signs_as_hmac_over_the_whole_key_every_time() {
        let dir = tempfile::tempdir().unwrap();
        for len in [32, 64, 88, 131] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let path = dir.path().join(format!("{len}.key"));
            std::fs::write(&path, &bytes).unwrap();
            let key = SecretKey::load_or_create(&path).unwrap();
            for message in [&b""[..], b"m", &[0xa5; 200]] {
                let mut fresh = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes).unwrap();
                fresh.update(b"purpose\0");
                fresh.update(message);
                let expected: [u8; 32] = fresh.finalize().into_bytes().into();
                assert_eq!(key.sign("purpose", message), expected, "a {len}-byte key");
                assert_eq!(key.sign("purpose", message), expected, "signed again");
            }
        }
    }

    #[test]
    fn refuses_short_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, b"tiny").unwrap();
        assert!(matches!(SecretKey::load_or_create(&short), Err(SecretKeyError::TooShort { .. })));
        let missing_dir = dir.path().join("no/such/dir/enlist.key");
        assert!(matches!(
            SecretKey::load_or_create(&missing_dir),
            Err(SecretKeyError::Uncreatable { .. })
        ));
    }
}
