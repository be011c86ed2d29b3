/// What the owner calls an API token: 1 to 64 letters, digits, `.`, `_` or `-`, so it is safe
/// in a shell, a log line and a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("A token name is 1 to 64 letters, digits, dots, underscores or hyphens.")]
pub struct TokenNameError;

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, TokenNameError> {
        let raw = raw.trim();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(allowed) {
            return Err(TokenNameError);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert_eq!(TokenName::parse(" ci-bot.2 ").unwrap().as_str(), "ci-bot.2");
        for bad in ["", " ", "a b", "x;rm", "é", &"a".repeat(65)] {
            assert!(TokenName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
