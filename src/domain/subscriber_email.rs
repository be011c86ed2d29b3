use std::borrow::Cow;
use std::fmt;

use email_address::{EmailAddress, Options};

/// The longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
const MAX_ADDRESS_LEN: usize = 254;
const MAX_LOCAL_PART_LEN: usize = 64;

/// An address that passed every check the list cares about.
///
/// The only way to get one is [`SubscriberEmail::parse`], so code holding one never re-validates.
/// The local part is kept exactly as typed (some mail servers treat it case-sensitively); the
/// domain is lower-cased and IDNA-normalised. Two addresses that differ only in case are the same
/// subscriber: [`SubscriberEmail::key`] is what uniqueness and lookups use.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubscriberEmail {
    address: String,
    key: String,
}

/// Why an address was refused, in words a visitor can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Please enter your email address.")]
    Empty,
    #[error("That address is too long (at most 254 characters).")]
    TooLong,
    #[error("The part before the @ is too long (at most 64 characters).")]
    LocalPartTooLong,
    #[error("That address contains characters that are not allowed.")]
    ControlCharacter,
    #[error("Please enter a complete address, like name@example.com.")]
    Malformed,
    #[error("The part after the @ is not a valid domain name.")]
    BadDomain,
}

/// Characters that render as nothing (or as something else) and so let two different stored
/// addresses look identical on the admin page, plus U+FFFD, which only appears when a client sent
/// bytes that were not UTF-8.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFD}'
        | '\u{E000}'..='\u{F8FF}'
        | '\u{E0000}'..='\u{E007F}')
}

/// What an address must look like as typed, and as stored.
fn syntax() -> Options {
    Options::default().without_display_text().without_domain_literal().with_required_tld()
}

/// The local part and the domain of an address as typed, once every check that reads the
/// typed text has passed.
fn split_as_typed(raw: &str) -> Result<(&str, &str), EmailError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    if trimmed.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(EmailError::ControlCharacter);
    }
    if trimmed.len() > MAX_ADDRESS_LEN {
        return Err(EmailError::TooLong);
    }
    let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::Malformed)?;
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(EmailError::LocalPartTooLong);
    }
    // Quoted local parts and display names are legal in headers but nobody types them into a
    // signup form; refusing them keeps every stored address safe to paste anywhere.
    if local.starts_with('"') {
        return Err(EmailError::Malformed);
    }
    EmailAddress::parse_with_options(trimmed, syntax()).map_err(|_| EmailError::Malformed)?;
    Ok((local, domain))
}

impl SubscriberEmail {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let (local, domain) = split_as_typed(raw)?;
        let ascii_domain =
            idna::domain_to_ascii_strict(domain).map_err(|_| EmailError::BadDomain)?;
        // Nearly every address typed into a form has nothing to decode.
        let unicode_domain = if ascii_domain.split('.').any(|label| label.starts_with("xn--")) {
            let (unicode_domain, unicode_check) = idna::domain_to_unicode(&ascii_domain);
            unicode_check.map_err(|_| EmailError::BadDomain)?;
            Cow::Owned(unicode_domain)
        } else {
            Cow::Borrowed(ascii_domain.as_str())
        };

        let address = format!("{local}@{unicode_domain}");
        if address.len() > MAX_ADDRESS_LEN {
            return Err(EmailError::TooLong);
        }
        // The form people see must be a valid address too: punycode can decode to symbols that no
        // domain may contain (found by fuzzing), mapping can turn characters into dots, and the
        // stored form must parse again unchanged. A domain that reads as typed but for its
        // letters' case passed the checks above already.
        if !unicode_domain.eq_ignore_ascii_case(domain)
            && (EmailAddress::parse_with_options(&address, syntax()).is_err()
                || unicode_domain.chars().any(|c| c.is_control() || is_invisible(c)))
        {
            return Err(EmailError::BadDomain);
        }
        let key = format!("{}@{ascii_domain}", local.to_lowercase());
        Ok(Self { address, key })
    }

    /// The address as shown to its owner and the admin.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The case-insensitive identity of the address (lower-cased local part, ASCII domain).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The address as mail servers want it: the local part as typed, the domain in ASCII.
    pub fn smtp_address(&self) -> String {
        let local = self.address.rsplit_once('@').map_or("", |(local, _)| local);
        let domain = self.key.rsplit_once('@').map_or("", |(_, domain)| domain);
        format!("{local}@{domain}")
    }
}

// Stored copies (in sessions) are parsed again on the way in, so they cannot smuggle in an
// address that would be refused today.
impl TryFrom<String> for SubscriberEmail {
    type Error = EmailError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SubscriberEmail> for String {
    fn from(email: SubscriberEmail) -> Self {
        email.address
    }
}

impl AsRef<str> for SubscriberEmail {
    fn as_ref(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for SubscriberEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

// Addresses are personal data: keep them out of logs that print debug output.
impl fmt::Debug for SubscriberEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriberEmail(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_normalises() {
        let email = SubscriberEmail::parse("  Alice.Smith+news@Example.COM \t").unwrap();
        assert_eq!(email.as_str(), "Alice.Smith+news@example.com");
        assert_eq!(email.key(), "alice.smith+news@example.com");
    }

    #[test]
    fn internationalised_domains_share_one_identity() {
        let unicode = SubscriberEmail::parse("kim@Bücher.de").unwrap();
        let punycode = SubscriberEmail::parse("KIM@xn--bcher-kva.de").unwrap();
        assert_eq!(unicode.as_str(), "kim@bücher.de");
        assert_eq!(punycode.as_str(), "KIM@bücher.de");
        assert_eq!(unicode.key(), punycode.key());
        assert_eq!(unicode.key(), "kim@xn--bcher-kva.de");
        assert_eq!(punycode.smtp_address(), "KIM@xn--bcher-kva.de");
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(250));
        let cases: &[(&str, EmailError)] = &[
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("plainaddress", EmailError::Malformed),
            ("@example.com", EmailError::Malformed),
            ("a@", EmailError::Malformed),
            ("a@@example.com", EmailError::Malformed),
            ("a b@example.com", EmailError::Malformed),
            ("a@localhost", EmailError::Malformed),
            ("a@[127.0.0.1]", EmailError::Malformed),
            ("Alice <a@example.com>", EmailError::Malformed),
            ("\"quoted\"@example.com", EmailError::Malformed),
            ("a..b@example.com", EmailError::Malformed),
            ("<script>@example.com", EmailError::Malformed),
            ("'--", EmailError::Malformed),
            ("a@exa mple.com", EmailError::Malformed),
            ("a\n@example.com", EmailError::ControlCharacter),
            ("a@exam\0ple.com", EmailError::ControlCharacter),
            ("a@example.com\r\nBcc: b@example.com", EmailError::ControlCharacter),
            ("a@-example.com", EmailError::Malformed),
            ("a@xn--zz.com", EmailError::BadDomain),
            // Valid punycode for "≆≎≑≓≋≖≖": symbols, not letters.
            ("KIM@xn--bchKIMkta.de", EmailError::BadDomain),
            (&long_local, EmailError::LocalPartTooLong),
            (&long_total, EmailError::TooLong),
        ];
        for (input, expected) in cases {
            assert_eq!(SubscriberEmail::parse(input), Err(*expected), "input {input:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_address() {
        let email = SubscriberEmail::parse("secret@example.com").unwrap();
        assert!(!format!("{email:?}").contains("secret"));
    }

    // Single hyphens only: IDNA reserves "--" in the third and fourth position.
    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,10}(-[a-z0-9]{1,10})?"
    }

    fn valid_address() -> impl Strategy<Value = String> {
        let local = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[A-Za-z0-9_+-]{1,10}){0,2}";
        let domain = (proptest::collection::vec(label(), 1..4), "[a-z]{2,10}")
            .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")));
        (local, domain).prop_map(|(l, d)| format!("{l}@{d}"))
    }

    /// `parse` as it was before it skipped decoding a domain with nothing to decode: every
    /// domain through `domain_to_unicode`, every address parsed a second time.
    fn parse_decoding_every_domain(raw: &str) -> Result<(String, String), EmailError> {
        let (local, domain) = split_as_typed(raw)?;
        let ascii_domain =
            idna::domain_to_ascii_strict(domain).map_err(|_| EmailError::BadDomain)?;
        let (unicode_domain, unicode_check) = idna::domain_to_unicode(&ascii_domain);
        unicode_check.map_err(|_| EmailError::BadDomain)?;
        let address = format!("{local}@{unicode_domain}");
        if address.len() > MAX_ADDRESS_LEN {
            return Err(EmailError::TooLong);
        }
        if EmailAddress::parse_with_options(&address, syntax()).is_err()
            || unicode_domain.chars().any(|c| c.is_control() || is_invisible(c))
        {
            return Err(EmailError::BadDomain);
        }
        Ok((address, format!("{}@{ascii_domain}", local.to_lowercase())))
    }

    /// Domains that UTS 46 maps before it encodes: case, full-width forms, ideographic full
    /// stops, characters that become several letters or a dot, trailing dots, punycode.
    fn mapped_domain() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zA-Z0-9]{1,8}",
            Just("ｅｘａｍｐｌｅ".to_string()),
            Just("Ｅxample".to_string()),
            Just("bücher".to_string()),
            Just("xn--bcher-kva".to_string()),
            Just("xn--zz".to_string()),
            Just("㏂".to_string()),
            Just("㍱".to_string()),
            Just("ﬃ".to_string()),
            Just("ß".to_string()),
            Just("a-b".to_string()),
            Just("-a".to_string()),
        ];
        let dot = prop_oneof![Just("."), Just("。"), Just("．"), Just("")];
        proptest::collection::vec((piece, dot), 1..5).prop_map(|parts| {
            parts.into_iter().map(|(piece, dot)| format!("{piece}{dot}")).collect::<String>()
        })
    }

    proptest! {
        #[test]
        fn skipping_the_decoding_changes_no_answer(
            local in "[A-Za-z0-9.+_-]{1,12}",
            domain in mapped_domain(),
            tld in prop_oneof![Just(".com"), Just(".ＣＯＭ"), Just(".Com。"), Just("")],
        ) {
            let raw = format!("{local}@{domain}{tld}");
            let now = SubscriberEmail::parse(&raw).map(|e| (e.address, e.key));
            prop_assert_eq!(now, parse_decoding_every_domain(&raw), "{:?}", raw);
        }

        #[test]
        fn valid_addresses_parse_and_round_trip(raw in valid_address()) {
            let parsed = SubscriberEmail::parse(&raw).unwrap();
            let again = SubscriberEmail::parse(parsed.as_str()).unwrap();
            prop_assert_eq!(&again, &parsed);
            prop_assert_eq!(parsed.key(), raw.to_lowercase());
        }

        #[test]
        fn case_and_surrounding_space_never_change_identity(raw in valid_address()) {
            let shouted = format!("  {}\t", raw.to_uppercase());
            let parsed = SubscriberEmail::parse(&raw).unwrap();
            let shouted = SubscriberEmail::parse(&shouted).unwrap();
            prop_assert_eq!(parsed.key(), shouted.key());
        }

        #[test]
        fn arbitrary_input_never_panics_and_valid_output_is_bounded(raw in any::<String>()) {
            let now = SubscriberEmail::parse(&raw).map(|e| (e.address.clone(), e.key.clone()));
            prop_assert_eq!(now, parse_decoding_every_domain(&raw));
            if let Ok(email) = SubscriberEmail::parse(&raw) {
                prop_assert!(email.as_str().len() <= MAX_ADDRESS_LEN);
                prop_assert!(!email.as_str().chars().any(char::is_control));
                prop_assert!(email.as_str().contains('@'));
            }
        }
    }
}
