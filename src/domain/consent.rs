//! How a person came to be on the list, and what they agreed to.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The longest user agent kept as evidence: enough to tell browsers apart, not a place to store
/// whatever a client sends.
const MAX_AGENT_BYTES: usize = 256;

/// Where a subscriber stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberStatus {
    /// Signed up, waiting for the click in the confirmation mail.
    Pending,
    Confirmed,
}

impl SubscriberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
        }
    }

    /// `None` for anything else, so a status filter can only name a real one.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::from_bytes(raw.as_bytes())
    }

    /// [`Self::parse`] of a column's bytes as stored: a row is read without a UTF-8 check of a
    /// word that can only be one of two.
    pub fn from_bytes(raw: &[u8]) -> Option<Self> {
        match raw {
            b"pending" => Some(Self::Pending),
            b"confirmed" => Some(Self::Confirmed),
            _ => None,
        }
    }
}

impl TryFrom<String> for SubscriberStatus {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw).ok_or_else(|| format!("unknown subscriber status {raw:?}"))
    }
}

impl fmt::Display for SubscriberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The way in: every door goes through the same signup path, and the evidence says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    Form,
    Api,
    Import,
    Admin,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Form => "form",
            Self::Api => "api",
            Self::Import => "import",
            Self::Admin => "admin",
        }
    }
}

/// Who acted, as far as consent records need to know: the client's network (truncated unless
/// the operator keeps full addresses) and its user agent, cut to a bounded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvidence {
    pub ip: String,
    pub agent: Option<String>,
}

impl ClientEvidence {
    pub fn new(ip: IpAddr, user_agent: Option<&str>, keep_full_ip: bool) -> Self {
        let ip = if keep_full_ip { ip.to_string() } else { truncate_ip(ip) };
        let agent = user_agent.map(str::trim).filter(|a| !a.is_empty()).map(|agent| {
            let mut end = agent.len().min(MAX_AGENT_BYTES);
            while !agent.is_char_boundary(end) {
                end -= 1;
            }
            agent[..end].to_owned()
        });
        Self { ip, agent }
    }
}

/// IPv4 to its /24 and IPv6 to its /48, written as networks: enough to show where a signup came
/// from, not enough to name a household.
fn truncate_ip(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// How consent was given at signup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub door: Door,
    pub client: ClientEvidence,
    /// Which consent text was shown: a hash of the rendered signup intro.
    pub consent: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_truncated_unless_kept() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(ClientEvidence::new(v4, None, false).ip, "203.0.113.0/24");
        assert_eq!(ClientEvidence::new(v4, None, true).ip, "203.0.113.77");
        let v6: IpAddr = "2001:db8:abcd:12:1:2:3:4".parse().unwrap();
        assert_eq!(ClientEvidence::new(v6, None, false).ip, "2001:db8:abcd::/48");
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(ClientEvidence::new(mapped, None, false).ip, "198.51.100.0/24");
    }

    #[test]
    fn user_agents_are_bounded_on_a_character_boundary() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let long = "é".repeat(200);
        let kept = ClientEvidence::new(ip, Some(&long), false).agent.unwrap();
        assert!(kept.len() <= MAX_AGENT_BYTES && kept.chars().all(|c| c == 'é'));
        assert_eq!(ClientEvidence::new(ip, Some("  "), false).agent, None);
        assert_eq!(SubscriberStatus::parse("pending"), Some(SubscriberStatus::Pending));
        assert_eq!(SubscriberStatus::parse("left"), None);
    }
}
