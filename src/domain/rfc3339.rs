//! A stored time (Unix seconds) as RFC 3339 in UTC, `2026-11-26T00:00:00Z`: what the API,
//! webhooks, the tools and the pages' `datetime` attributes show.
//!
//! Written into a fixed 20-byte buffer on the stack: a page of the API's list shows a hundred of
//! these, and going through `SystemTime` and a formatter cost an allocation or three each.

use std::fmt;

/// Unix seconds, shown as RFC 3339 UTC. Times before 1970 show as the epoch and times after the
/// year 9999 as its last second: enlist stores only times it took from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub i64);

/// 9999-12-31T23:59:59Z, the last time with four digits of year.
const LAST: i64 = 253_402_300_799;

impl Rfc3339 {
    /// The 20 bytes of the text, all ASCII.
    pub fn bytes(self) -> [u8; 20] {
        let seconds = u64::try_from(self.0.clamp(0, LAST)).unwrap_or(0);
        // Both fit: the clamp bounds the days below 2,932,897.
        let days = u32::try_from(seconds / 86_400).unwrap_or(0);
        let in_day = u32::try_from(seconds % 86_400).unwrap_or(0);
        let (year, month, day) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00Z";
        put(&mut out[0..2], year / 100);
        put(&mut out[2..4], year % 100);
        put(&mut out[5..7], month);
        put(&mut out[8..10], day);
        put(&mut out[11..13], in_day / 3600);
        put(&mut out[14..16], in_day % 3600 / 60);
        put(&mut out[17..19], in_day % 60);
        out
    }

    /// `2026-11-26 00:00 UTC`: the same time to the minute, for people.
    pub fn for_people(self) -> String {
        let bytes = self.bytes();
        let mut out = String::with_capacity(20);
        out.push_str(as_str(&bytes[..10]));
        out.push(' ');
        out.push_str(as_str(&bytes[11..16]));
        out.push_str(" UTC");
        out
    }
}

fn as_str(ascii: &[u8]) -> &str {
    // Only digits and separators are ever written, so this never falls back.
    std::str::from_utf8(ascii).unwrap_or_default()
}

/// Writes `value`, below 100, as two decimal digits.
fn put(into: &mut [u8], value: u32) {
    let tens = u8::try_from(value / 10 % 10).unwrap_or(0);
    let ones = u8::try_from(value % 10).unwrap_or(0);
    into[0] = b'0' + tens;
    into[1] = b'0' + ones;
}

/// Year, month and day of a day count since 1970-01-01 (0 or more), by Howard Hinnant's
/// `civil_from_days`: the proleptic Gregorian calendar in 400-year eras.
fn civil_from_days(days: u32) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u32::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(as_str(&self.bytes()))
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(as_str(&self.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_humantime_across_leap_years_and_centuries() {
        // Day boundaries (and a second before and a time inside the day) a week and a third
        // apart from 1970 to 2500, against the formatter that goes through `SystemTime`.
        let mut seconds = 0i64;
        while seconds < 16_725_225_600 {
            for t in [seconds, seconds + 86_399, seconds + 45_296] {
                let time = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(t).unwrap());
                let expected = humantime::format_rfc3339_seconds(time).to_string();
                assert_eq!(Rfc3339(t).to_string(), expected, "{t}");
            }
            seconds += 86_400 * 7 + 86_400 / 3;
        }
    }

    #[test]
    fn shows_out_of_range_times_at_the_ends() {
        assert_eq!(Rfc3339(-5).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Rfc3339(i64::MAX).to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(Rfc3339(951_782_400).to_string(), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn people_see_minutes() {
        assert_eq!(Rfc3339(1_795_651_200).for_people(), "2026-11-26 00:00 UTC");
        assert_eq!(Rfc3339(1_795_651_259 + 60).for_people(), "2026-11-26 00:01 UTC");
    }

    #[test]
    fn serialises_as_a_json_string() {
        assert_eq!(serde_json::to_string(&Rfc3339(0)).unwrap(), "\"1970-01-01T00:00:00Z\"");
    }
}
