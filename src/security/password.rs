use std::fmt;

use anyhow::Context;
use argon2::password_hash::phc;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use sha2::{Digest, Sha256};

use crate::domain::{AdminPassword, MAX_PASSWORD_BYTES};

/// A well-formed argon2id PHC string. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    #[error("not a PHC string ({0})")]
    Malformed(String),
    #[error("the algorithm is {0}, expected argon2id")]
    WrongAlgorithm(String),
    #[error("unusable argon2 parameters ({0})")]
    BadParams(String),
}

impl PasswordHash {
    pub fn parse(phc_string: &str) -> Result<Self, PasswordHashError> {
        let parsed = phc::PasswordHash::new(phc_string.trim())
            .map_err(|e| PasswordHashError::Malformed(e.to_string()))?;
        if parsed.algorithm.as_str() != Algorithm::Argon2id.as_str() {
            return Err(PasswordHashError::WrongAlgorithm(parsed.algorithm.to_string()));
        }
        Params::try_from(&parsed).map_err(|e| PasswordHashError::BadParams(e.to_string()))?;
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(PasswordHashError::Malformed("salt or hash missing".into()));
        }
        Ok(Self(phc_string.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, non-secret name for this credential. Admin sessions remember it, so replacing the
    /// password ends every session that was opened with the old one.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// Hashes with argon2id and the crate's recommended parameters. CPU-heavy: call off the async
/// threads.
pub fn hash_password(password: &AdminPassword) -> anyhow::Result<PasswordHash> {
    let hash = Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("hashing the admin password")?;
    Ok(PasswordHash(hash.to_string()))
}

/// Every candidate up to the size limit costs one full argon2 run, whatever it is, so the answer
/// time says nothing about how close a guess was. CPU-heavy: call off the async threads.
pub fn verify_password(candidate: &str, hash: &PasswordHash) -> bool {
    if candidate.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    Argon2::default().verify_password(candidate.as_bytes(), hash.as_str()).is_ok()
}

/// A random password for the first start: 24 characters from an alphabet without look-alikes
/// (about 137 bits).
pub fn generate_password() -> anyhow::Result<AdminPassword> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut password = String::with_capacity(24);
    while password.len() < 24 {
        let mut byte = [0u8; 1];
        getrandom::fill(&mut byte).context("reading the system random generator")?;
        // Rejection sampling keeps every character equally likely.
        let index = usize::from(byte[0]);
        if index < ALPHABET.len() * (256 / ALPHABET.len()) {
            password.push(char::from(ALPHABET[index % ALPHABET.len()]));
        }
    }
    AdminPassword::parse(password).context("generated password breaks the length rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let password = AdminPassword::parse("a long enough password".into()).unwrap();
        let hash = hash_password(&password).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
        assert!(verify_password("a long enough password", &hash));
        assert!(!verify_password("a long enough passwore", &hash));
        assert!(!verify_password("", &hash));
        assert!(!verify_password(&"a".repeat(2000), &hash));
        assert!(PasswordHash::parse(hash.as_str()).is_ok());
    }

    #[test]
    fn refuses_malformed_and_foreign_hashes() {
        assert!(matches!(PasswordHash::parse("hunter2"), Err(PasswordHashError::Malformed(_))));
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$Zm9vYmFyYmF6cXV4";
        assert!(matches!(PasswordHash::parse(argon2i), Err(PasswordHashError::WrongAlgorithm(_))));
    }

    #[test]
    fn generated_passwords_are_long_and_different() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.expose().len(), 24);
        assert_ne!(a, b);
    }
}
