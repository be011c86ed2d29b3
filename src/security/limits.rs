//! Abuse limits, kept in memory (so per instance): signups per client address and per email
//! address, and a growing wait after repeated failed admin logins.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::metrics::{LimitRule, Metrics};

/// `N` events per `period`, as written in a setting (`10/1m`). `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub events: u32,
    pub period: Duration,
}

impl Rate {
    /// `N/PERIOD` (`10/1m`, `3/1h`) or `0` for no limit.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        let raw = raw.trim();
        if raw == "0" {
            return Ok(None);
        }
        let (events, period) = raw.split_once('/').ok_or("expected N/PERIOD (like 10/1m) or 0")?;
        let events: u32 =
            events.trim().parse().map_err(|_| format!("{events:?} is not a count"))?;
        let period = humantime::parse_duration(period.trim()).map_err(|e| e.to_string())?;
        if events == 0 || period.is_zero() {
            return Err(
                "the count and the period must be above zero (or write 0 for no limit)".into()
            );
        }
        Ok(Some(Self { events, period }))
    }
}

/// A refusal, with how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany {
    pub retry_after: Duration,
}

/// Longest wait a run of failed logins from one address can impose.
const MAX_LOGIN_WAIT: Duration = Duration::from_secs(5 * 60);
/// Longest wait failures from everywhere together can impose on everyone.
const MAX_GLOBAL_LOGIN_WAIT: Duration = Duration::from_secs(60);
/// Failures from all addresses together, as a multiple of the per-address allowance.
const GLOBAL_LOGIN_FACTOR: usize = 20;
/// Keys that no longer matter are swept once this many have piled up (and again each time the
/// map doubles), so a flood of new clients costs amortised O(1) per request.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Default)]
pub struct Limits {
    per_ip: Option<KeyedBucket<IpAddr>>,
    per_address: Option<KeyedWindow<String>>,
    login: Option<LoginThrottle>,
    /// Where refusals are counted, by rule.
    metrics: Arc<Metrics>,
}

impl Limits {
    pub fn new(
        signup_per_ip: Option<Rate>,
        signup_per_address: Option<Rate>,
        login: Option<Rate>,
    ) -> Self {
        Self {
            per_ip: signup_per_ip.map(KeyedBucket::new),
            per_address: signup_per_address.map(KeyedWindow::new),
            login: login.map(LoginThrottle::new),
            metrics: Arc::default(),
        }
    }

    /// Counts refusals in `metrics` (the server's, shown on `/metrics`).
    pub fn counted_in(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..self }
    }

    fn refused(&self, rule: LimitRule, result: Result<(), TooMany>) -> Result<(), TooMany> {
        if result.is_err() {
            self.metrics.rate_limited(rule);
        }
        result
    }

    /// Counts a signup attempt from `ip` (before the address is even read).
    pub fn signup_from(&self, ip: IpAddr, now: Instant) -> Result<(), TooMany> {
        let taken = self.per_ip.as_ref().map_or(Ok(()), |bucket| bucket.take(ip, now));
        self.refused(LimitRule::SignupClient, taken)
    }

    /// Counts a signup of the address with this key, whoever submits it.
    pub fn signup_of(&self, address_key: &str, now: Instant) -> Result<(), TooMany> {
        let taken = self
            .per_address
            .as_ref()
            .map_or(Ok(()), |window| window.take(address_key.to_owned(), now));
        self.refused(LimitRule::SignupAddress, taken)
    }

    /// Whether `ip` may try a password now.
    pub fn login_allowed(&self, ip: IpAddr, now: Instant) -> Result<(), TooMany> {
        let allowed = self.login.as_ref().map_or(Ok(()), |throttle| throttle.allowed(ip, now));
        self.refused(LimitRule::Login, allowed)
    }

    pub fn login_failed(&self, ip: IpAddr, now: Instant) {
        if let Some(throttle) = &self.login {
            throttle.failed(ip, now);
        }
    }

    pub fn login_succeeded(&self, ip: IpAddr) {
        if let Some(throttle) = &self.login {
            throttle.succeeded(ip);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while they were held: each change is one insert.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A map of per-key state that forgets keys whose state has lapsed.
#[derive(Debug)]
struct Swept<K, V> {
    map: HashMap<K, V>,
    sweep_at: usize,
}

impl<K, V> Default for Swept<K, V> {
    fn default() -> Self {
        Self { map: HashMap::new(), sweep_at: SWEEP_AT }
    }
}

impl<K: Hash + Eq, V> Swept<K, V> {
    fn sweep_if_due(&mut self, still_matters: impl FnMut(&K, &mut V) -> bool) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(still_matters);
            self.sweep_at = SWEEP_AT.max(self.map.len() * 2);
        }
    }
}

/// A token bucket per key (GCRA): `events` per `period` on average, up to half of `events` at
/// once (10/1m allows a burst of 5, then one every 6 s).
#[derive(Debug)]
struct KeyedBucket<K> {
    interval: Duration,
    burst_allowance: Duration,
    /// When each key's bucket is full again ("theoretical arrival time").
    full_at: Mutex<Swept<K, Instant>>,
}

impl<K: Hash + Eq> KeyedBucket<K> {
    fn new(rate: Rate) -> Self {
        let interval = rate.period / rate.events;
        let burst = (rate.events / 2).max(1);
        Self { interval, burst_allowance: interval * (burst - 1), full_at: Mutex::default() }
    }

    fn take(&self, key: K, now: Instant) -> Result<(), TooMany> {
        let mut full_at = lock(&self.full_at);
        full_at.sweep_if_due(|_, at| *at > now);
        let at = full_at.map.get(&key).copied().unwrap_or(now).max(now);
        let allowed_from = at.checked_sub(self.burst_allowance).unwrap_or(now);
        if now < allowed_from {
            return Err(TooMany { retry_after: allowed_from - now });
        }
        full_at.map.insert(key, at + self.interval);
        Ok(())
    }
}

/// At most `events` per key in any `period` (a sliding log of recent events).
#[derive(Debug)]
struct KeyedWindow<K> {
    rate: Rate,
    events: Mutex<Swept<K, VecDeque<Instant>>>,
}

impl<K: Hash + Eq> KeyedWindow<K> {
    fn new(rate: Rate) -> Self {
        Self { rate, events: Mutex::default() }
    }

    fn take(&self, key: K, now: Instant) -> Result<(), TooMany> {
        let mut events = lock(&self.events);
        let period = self.rate.period;
        events.sweep_if_due(|_, log| {
            log.back().is_some_and(|last| now.duration_since(*last) < period)
        });
        let log = events.map.entry(key).or_default();
        while log.front().is_some_and(|first| now.duration_since(*first) >= period) {
            log.pop_front();
        }
        if log.len() >= self.rate.events as usize {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(TooMany { retry_after: period.saturating_sub(now.duration_since(oldest)) });
        }
        log.push_back(now);
        Ok(())
    }
}

/// Failed logins: after `events` failures within `period` (per address, or 20 times that from
/// everywhere), each further try must wait twice as long as the last, up to a cap. Never a
/// lockout: the wait ends, and then the right password works.
#[derive(Debug)]
struct LoginThrottle {
    rate: Rate,
    per_ip: Mutex<Swept<IpAddr, VecDeque<Instant>>>,
    global: Mutex<VecDeque<Instant>>,
}

impl LoginThrottle {
    fn new(rate: Rate) -> Self {
        Self { rate, per_ip: Mutex::default(), global: Mutex::default() }
    }

    /// How long after the last of `failures` the next attempt must wait.
    fn wait(
        failures: &VecDeque<Instant>,
        allowed: usize,
        cap: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let excess = failures.len().checked_sub(allowed).filter(|excess| *excess > 0)?;
        let last = *failures.back()?;
        let exponent = u32::try_from(excess).unwrap_or(u32::MAX).min(20);
        let wait = Duration::from_secs(1u64 << exponent).min(cap);
        let ready = last + wait;
        (now < ready).then(|| ready - now)
    }

    fn forget_old(failures: &mut VecDeque<Instant>, period: Duration, now: Instant) {
        while failures.front().is_some_and(|first| now.duration_since(*first) >= period) {
            failures.pop_front();
        }
    }

    fn allowed(&self, ip: IpAddr, now: Instant) -> Result<(), TooMany> {
        let allowed = self.rate.events as usize;
        let own = {
            let mut per_ip = lock(&self.per_ip);
            per_ip.map.get_mut(&ip).and_then(|failures| {
                Self::forget_old(failures, self.rate.period, now);
                Self::wait(failures, allowed, MAX_LOGIN_WAIT, now)
            })
        };
        let everyone = {
            let mut global = lock(&self.global);
            Self::forget_old(&mut global, self.rate.period, now);
            Self::wait(&global, allowed * GLOBAL_LOGIN_FACTOR, MAX_GLOBAL_LOGIN_WAIT, now)
        };
        match own.max(everyone) {
            Some(retry_after) => Err(TooMany { retry_after }),
            None => Ok(()),
        }
    }

    fn failed(&self, ip: IpAddr, now: Instant) {
        let mut per_ip = lock(&self.per_ip);
        let period = self.rate.period;
        per_ip.sweep_if_due(|_, log| {
            log.back().is_some_and(|last| now.duration_since(*last) < period)
        });
        per_ip.map.entry(ip).or_default().push_back(now);
        drop(per_ip);
        let mut global = lock(&self.global);
        global.push_back(now);
        // Only the newest failures matter for the global wait; keep the log bounded.
        let keep = self.rate.events as usize * GLOBAL_LOGIN_FACTOR + 64;
        while global.len() > keep {
            global.pop_front();
        }
    }

    fn succeeded(&self, ip: IpAddr) {
        lock(&self.per_ip).map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn rate(raw: &str) -> Option<Rate> {
        Rate::parse(raw).unwrap()
    }

    #[test]
    fn parses_settings() {
        assert_eq!(rate("10/1m"), Some(Rate { events: 10, period: Duration::from_secs(60) }));
        assert_eq!(rate("0"), None);
        for bad in ["", "10", "x/1m", "10/soon", "0/1m", "5/0s", "-1/1m"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn per_ip_allows_a_burst_then_the_average_rate() {
        let limits = Limits::new(rate("10/1m"), None, None);
        let t0 = Instant::now();
        for _ in 0..5 {
            limits.signup_from(IP, t0).unwrap();
        }
        let refused = limits.signup_from(IP, t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        limits.signup_from(OTHER, t0).unwrap();
        limits.signup_from(IP, t0 + Duration::from_secs(6)).unwrap();
        assert!(limits.signup_from(IP, t0 + Duration::from_secs(6)).is_err());
        // A minute of quiet refills the burst.
        for _ in 0..5 {
            limits.signup_from(IP, t0 + Duration::from_secs(70)).unwrap();
        }
    }

    #[test]
    fn per_address_is_a_strict_window() {
        let limits = Limits::new(None, rate("3/1h"), None);
        let t0 = Instant::now();
        for minute in [0, 10, 20] {
            limits.signup_of("a@example.com", t0 + Duration::from_secs(minute * 60)).unwrap();
        }
        let refused =
            limits.signup_of("a@example.com", t0 + Duration::from_secs(59 * 60)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        limits.signup_of("b@example.com", t0).unwrap();
        limits.signup_of("a@example.com", t0 + Duration::from_secs(3600)).unwrap();
    }

    #[test]
    fn failed_logins_back_off_exponentially_and_never_lock_out() {
        let limits = Limits::new(None, None, rate("5/15m"));
        let t0 = Instant::now();
        for _ in 0..5 {
            limits.login_allowed(IP, t0).unwrap();
            limits.login_failed(IP, t0);
        }
        // The fifth failure is still free; the sixth costs a wait.
        limits.login_allowed(IP, t0).unwrap();
        limits.login_failed(IP, t0);
        assert_eq!(limits.login_allowed(IP, t0).unwrap_err().retry_after, Duration::from_secs(2));
        limits.login_allowed(OTHER, t0).unwrap();
        let t1 = t0 + Duration::from_secs(2);
        limits.login_allowed(IP, t1).unwrap();
        limits.login_failed(IP, t1);
        assert_eq!(limits.login_allowed(IP, t1).unwrap_err().retry_after, Duration::from_secs(4));
        // Success after waiting clears the slate.
        let t2 = t1 + Duration::from_secs(4);
        limits.login_allowed(IP, t2).unwrap();
        limits.login_succeeded(IP);
        limits.login_allowed(IP, t2).unwrap();
    }

    #[test]
    fn the_login_wait_is_capped() {
        let limits = Limits::new(None, None, rate("1/1h"));
        let t0 = Instant::now();
        for _ in 0..40 {
            limits.login_failed(IP, t0);
        }
        assert_eq!(limits.login_allowed(IP, t0).unwrap_err().retry_after, MAX_LOGIN_WAIT);
    }

    #[test]
    fn failures_from_everywhere_slow_everyone_a_little() {
        let limits = Limits::new(None, None, rate("2/15m"));
        let t0 = Instant::now();
        for i in 0..=(2 * GLOBAL_LOGIN_FACTOR as u8) {
            limits.login_failed(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)), t0);
        }
        let wait = limits.login_allowed(OTHER, t0).unwrap_err().retry_after;
        assert!(wait <= MAX_GLOBAL_LOGIN_WAIT && wait > Duration::ZERO);
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn lapsed_keys_are_forgotten_and_sweeps_stay_rare() {
        let bucket = KeyedBucket::new(Rate { events: 10, period: Duration::from_secs(60) });
        let t0 = Instant::now();
        for i in 0..SWEEP_AT as u32 {
            bucket.take(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        // A minute later every one of those buckets is full again: the next request sweeps them.
        bucket.take(IpAddr::from([10, 0, 0, 1]), t0 + Duration::from_secs(61)).unwrap();
        assert_eq!(lock(&bucket.full_at).map.len(), 1);
        // While all keys stay live, the next sweep waits until the map has doubled.
        for i in 0..SWEEP_AT as u32 {
            bucket.take(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_secs(61)).unwrap();
        }
        assert!(lock(&bucket.full_at).sweep_at >= SWEEP_AT);
    }
}
