#![no_main]
//! Address parsing: never panics; what it accepts is bounded and parses again to the same identity.

use enlist::domain::SubscriberEmail;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(email) = SubscriberEmail::parse(text) {
        assert!(email.as_str().len() <= 254);
        assert!(!email.as_str().chars().any(char::is_control));
        let again = SubscriberEmail::parse(email.as_str()).expect("an accepted address parses again");
        assert_eq!(again.key(), email.key());
    }
});
