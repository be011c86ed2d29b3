use std::fmt;

const MAX_SEARCH_CHARS: usize = 254;
/// A trigram index can find terms of at least this many characters; shorter ones are looked for
/// by walking the list.
const TRIGRAM: usize = 3;

/// What the admin typed into the search box: trimmed, lower-cased, 1 to 254 characters, free of
/// control characters. Matching is a case-insensitive substring match on the address.
#[derive(Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SearchTermError {
    #[error("Searches are at most 254 characters long.")]
    TooLong,
    #[error("Searches cannot contain control characters.")]
    ControlCharacter,
}

impl SearchTerm {
    /// `Ok(None)` for an empty search, which means "everything".
    pub fn parse(raw: &str) -> Result<Option<Self>, SearchTermError> {
        let trimmed = raw.trim();
        if trimmed.chars().count() > MAX_SEARCH_CHARS {
            return Err(SearchTermError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(SearchTermError::ControlCharacter);
        }
        Ok((!trimmed.is_empty()).then(|| Self(trimmed.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the trigram indexes can find this term (else the list is walked).
    pub fn has_trigrams(&self) -> bool {
        self.0.chars().count() >= TRIGRAM
    }

    /// A SQL `LIKE` pattern matching the term anywhere, with wildcards in the term escaped by `\`.
    pub fn like_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.0.len() + 2);
        pattern.push('%');
        for c in self.0.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        pattern
    }
}

impl fmt::Debug for SearchTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SearchTerm(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_escapes() {
        assert_eq!(SearchTerm::parse("   ").unwrap(), None);
        let term = SearchTerm::parse(" Ex_AMPLE%\\ ").unwrap().unwrap();
        assert_eq!(term.as_str(), "ex_ample%\\");
        assert_eq!(term.like_pattern(), "%ex\\_ample\\%\\\\%");
        assert!(term.has_trigrams());
        let short = SearchTerm::parse(" Ü ").unwrap().unwrap();
        assert_eq!(short.as_str(), "ü");
        assert!(!short.has_trigrams());
        assert!(!SearchTerm::parse("ab").unwrap().unwrap().has_trigrams());
    }

    #[test]
    fn refuses_long_or_control_input() {
        assert_eq!(SearchTerm::parse(&"a".repeat(255)), Err(SearchTermError::TooLong));
        assert_eq!(SearchTerm::parse("a\0b"), Err(SearchTermError::ControlCharacter));
    }
}
