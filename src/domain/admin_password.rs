use std::fmt;

/// Shorter passwords are refused at start: the admin page guards every address on the list.
pub const MIN_ADMIN_PASSWORD_CHARS: usize = 12;
/// Anything longer is refused before hashing, so a huge input cannot buy extra CPU time.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A plain admin password that meets the length rules. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminPassword(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminPasswordError {
    #[error("the admin password is empty")]
    Empty,
    #[error("the admin password must be at least {MIN_ADMIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("the admin password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    TooLong,
}

impl AdminPassword {
    pub fn parse(raw: String) -> Result<Self, AdminPasswordError> {
        if raw.is_empty() {
            Err(AdminPasswordError::Empty)
        } else if raw.chars().count() < MIN_ADMIN_PASSWORD_CHARS {
            Err(AdminPasswordError::TooShort)
        } else if raw.len() > MAX_PASSWORD_BYTES {
            Err(AdminPasswordError::TooLong)
        } else {
            Ok(Self(raw))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminPassword([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_length_rules() {
        assert_eq!(AdminPassword::parse(String::new()), Err(AdminPasswordError::Empty));
        assert_eq!(AdminPassword::parse("elevenchars".into()), Err(AdminPasswordError::TooShort));
        assert_eq!(AdminPassword::parse("x".repeat(1025)), Err(AdminPasswordError::TooLong));
        assert!(AdminPassword::parse("twelve chars".into()).is_ok());
        assert!(AdminPassword::parse("ünïcödé-pässwörd".into()).is_ok());
    }

    #[test]
    fn debug_redacts() {
        let password = AdminPassword::parse("correct horse battery".into()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
