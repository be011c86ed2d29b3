//! The tokens in links that travel by mail: confirming a signup and leaving the list. Each is a
//! row id and an HMAC under the installation's secret key, so the database holds nothing that
//! works as a link, and a link cannot be guessed or moved to another row.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::SecretKey;

const CONFIRM: &str = "enlist confirm link v1";
const UNSUBSCRIBE: &str = "enlist unsubscribe link v1";
const ADDRESS: &str = "enlist address hash v1";
const MESSAGE_ID: &str = "enlist message id v1";
/// 128 bits of MAC: far beyond guessing, and the links stay short.
const MAC_BYTES: usize = 16;
const TOKEN_BYTES: usize = 8 + MAC_BYTES;

/// A link token split into its row id and MAC, not yet checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LinkToken {
    pub id: i64,
    mac: [u8; MAC_BYTES],
}

impl std::fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkToken({}, ..)", self.id)
    }
}

impl LinkToken {
    /// `None` for anything that is not the shape of one of ours.
    pub fn parse(raw: &str) -> Option<Self> {
        // 24 bytes are exactly 32 base64 characters.
        if raw.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(raw, &mut bytes) {
            Ok(TOKEN_BYTES) => {}
            _ => return None,
        }
        let (id, mac) = bytes.split_at(8);
        let id = i64::from_be_bytes(id.try_into().ok()?);
        Some(Self { id, mac: mac.try_into().ok()? })
    }
}

/// Makes and checks link tokens, and the keyed hashes that stand for an address where the
/// address itself must not be kept.
#[derive(Clone, Debug)]
pub struct Links {
    key: SecretKey,
}

impl Links {
    pub fn new(key: SecretKey) -> Self {
        Self { key }
    }

    fn mac(&self, purpose: &str, id: i64, bound_to: &[u8]) -> [u8; MAC_BYTES] {
        let mut message = id.to_be_bytes().to_vec();
        message.extend_from_slice(bound_to);
        let full = self.key.sign(purpose, &message);
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&full[..MAC_BYTES]);
        mac
    }

    fn token(&self, purpose: &str, id: i64, bound_to: &[u8]) -> String {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.mac(purpose, id, bound_to));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn verify(&self, purpose: &str, token: &LinkToken, bound_to: &[u8]) -> bool {
        bool::from(self.mac(purpose, token.id, bound_to).ct_eq(&token.mac))
    }

    /// The token in a confirmation link: the confirmation's id, bound to its random nonce.
    pub fn confirm_token(&self, confirmation_id: i64, nonce: &[u8]) -> String {
        self.token(CONFIRM, confirmation_id, nonce)
    }

    pub fn verify_confirm(&self, token: &LinkToken, nonce: &[u8]) -> bool {
        self.verify(CONFIRM, token, nonce)
    }

    /// The token in every mail's unsubscribe link: the subscriber's id, bound to their address,
    /// so it dies with the row and a new signup gets a new one.
    pub fn unsubscribe_token(&self, subscriber_id: i64, email_key: &str) -> String {
        self.token(UNSUBSCRIBE, subscriber_id, email_key.as_bytes())
    }

    pub fn verify_unsubscribe(&self, token: &LinkToken, email_key: &str) -> bool {
        self.verify(UNSUBSCRIBE, token, email_key.as_bytes())
    }

    /// A Message-ID for the outbox row `id`: stable across retries (receivers can drop a
    /// repeat), unique to this installation, and saying nothing about the database.
    pub fn message_id(&self, id: i64, host: &str) -> String {
        let mac = self.key.sign(MESSAGE_ID, &id.to_be_bytes());
        let hex: String = mac[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("<{id}.{hex}@{host}>")
    }

    /// A keyed hash of an address's identity: what suppressions, the confirmation limit and
    /// session ownership keep instead of the address.
    pub fn address_hash(&self, email_key: &str) -> [u8; 32] {
        self.key.sign(ADDRESS, email_key.as_bytes())
    }
}

/// 128 random bits for a confirmation link.
pub fn new_nonce() -> anyhow::Result<[u8; 16]> {
    let mut nonce = [0u8; 16];
    super::random::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        let dir = tempfile::tempdir().unwrap();
        Links::new(SecretKey::load_or_create(&dir.path().join("k")).unwrap())
    }

    #[test]
    fn tokens_round_trip_and_bind_to_their_row() {
        let links = links();
        let nonce = new_nonce().unwrap();
        let raw = links.confirm_token(42, &nonce);
        let token = LinkToken::parse(&raw).unwrap();
        assert_eq!(token.id, 42);
        assert!(links.verify_confirm(&token, &nonce));
        assert!(!links.verify_confirm(&token, &new_nonce().unwrap()));
        assert!(!links.verify_unsubscribe(&token, "a@example.com"), "purposes never mix");

        let raw = links.unsubscribe_token(7, "a@example.com");
        let token = LinkToken::parse(&raw).unwrap();
        assert!(links.verify_unsubscribe(&token, "a@example.com"));
        assert!(!links.verify_unsubscribe(&token, "b@example.com"));
        let other = links.unsubscribe_token(8, "a@example.com");
        assert_ne!(raw, other);
    }

    #[test]
    fn junk_is_not_a_token() {
        for junk in
            ["", "short", &"A".repeat(33), &"*".repeat(32), "../../../../etc/passwd/xxxxxxxx"]
        {
            assert!(LinkToken::parse(junk).is_none(), "{junk:?}");
        }
    }
}
