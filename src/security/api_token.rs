//! Bearer tokens for the JSON API: 256 random bits, shown once, kept only as a SHA-256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Makes tokens easy to recognise in a config file or a secret scanner's rules.
const PREFIX: &str = "enl_";

/// A new token and the hash to store.
pub fn new_api_token() -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = api_token_hash(&token);
    Ok((token, hash))
}

/// What a presented token is looked up by. A fast hash is enough: the token is random, not a
/// password, so there is nothing to guess offline.
pub fn api_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_to_what_is_stored() {
        let (a, hash) = new_api_token().unwrap();
        let (b, _) = new_api_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("enl_") && a.len() == 4 + 43);
        assert_eq!(api_token_hash(&a), hash);
    }
}
