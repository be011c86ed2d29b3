//! What `/metrics` reports, in the Prometheus text format (version 0.0.4). Counters are
//! atomics; label values are the route templates and fixed words of this module, never anything
//! a client sent, so no label can hold an address and the number of series is bounded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A fixed set of label values for one counter family.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
        }
        impl LabelText for $name {
            fn text(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
    };
}

label_set!(
    /// What became of a signup on the form or the API.
    SignupResult {
        Listed => "listed",
        Pending => "pending",
        Trapped => "bot",
        Invalid => "invalid",
        Limited => "limited",
    }
);
label_set!(
    /// Where a person left from.
    UnsubscribeDoor {
        Unregister => "unregister",
        Link => "link",
        OneClick => "one_click",
        Erase => "erase",
    }
);
label_set!(
    /// Which abuse limit refused a request.
    LimitRule {
        SignupClient => "signup_per_client",
        SignupAddress => "signup_per_address",
        Login => "login",
    }
);
label_set!(
    /// What one attempt to send a mail ended in.
    MailResult { Sent => "sent", Retry => "retry", Failed => "failed" }
);
label_set!(
    /// What one attempt to deliver a webhook ended in.
    WebhookResult {
        Delivered => "delivered",
        Retry => "retry",
        Failed => "failed",
        Disabled => "disabled",
    }
);

/// One counter per label value.
struct Counters<L: 'static> {
    labels: &'static [L],
    values: Vec<AtomicU64>,
}

impl<L: Copy + PartialEq> Counters<L> {
    fn new(labels: &'static [L]) -> Self {
        Self { labels, values: labels.iter().map(|_| AtomicU64::new(0)).collect() }
    }

    fn add(&self, label: L) {
        if let Some(i) = self.labels.iter().position(|l| *l == label) {
            self.values[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Microseconds, so that the sum is an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Requests by route template: the status counts and the duration histogram.
#[derive(Default)]
struct RouteStats {
    /// (method, status) → count; a handful per route.
    answers: RwLock<HashMap<(Method, u16), AtomicU64>>,
    durations: Histogram,
}

/// The process's counters. One per server, held in the application state (no global registry,
/// so that tests can run several servers in one process).
pub struct Metrics {
    routes: RwLock<HashMap<String, RouteStats>>,
    signups: Counters<SignupResult>,
    unsubscribes: Counters<UnsubscribeDoor>,
    rate_limited: Counters<LimitRule>,
    mail: Counters<MailResult>,
    webhooks: Counters<WebhookResult>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            routes: RwLock::default(),
            signups: Counters::new(SignupResult::ALL),
            unsubscribes: Counters::new(UnsubscribeDoor::ALL),
            rate_limited: Counters::new(LimitRule::ALL),
            mail: Counters::new(MailResult::ALL),
            webhooks: Counters::new(WebhookResult::ALL),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Values read from the database when `/metrics` is asked for.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub pending: u64,
    pub confirmed: u64,
    /// (kind, queued, age of the oldest in seconds)
    pub outbox: Vec<(String, u64, u64)>,
    pub connections_in_use: u64,
    pub connections_idle: u64,
}

impl Metrics {
    /// `route` is the matched route's template (`/confirm/{token}`), never the raw path.
    pub fn request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let key = (method.clone(), status);
        if let Some(stats) = self.routes.read().unwrap_or_else(|p| p.into_inner()).get(route) {
            stats.durations.observe(elapsed);
            if let Some(counter) = stats.answers.read().unwrap_or_else(|p| p.into_inner()).get(&key)
            {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut answers = stats.answers.write().unwrap_or_else(|p| p.into_inner());
            answers.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The route's first request: add its series.
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let stats = routes.entry(route.to_owned()).or_default();
        stats.durations.observe(elapsed);
        let answers = stats.answers.get_mut().unwrap_or_else(|p| p.into_inner());
        answers.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
    }

    pub fn signup(&self, outcome: SignupResult) {
        self.signups.add(outcome);
    }

    pub fn unsubscribe(&self, door: UnsubscribeDoor) {
        self.unsubscribes.add(door);
    }

    pub fn rate_limited(&self, rule: LimitRule) {
        self.rate_limited.add(rule);
    }

    pub fn mail(&self, result: MailResult) {
        self.mail.add(result);
    }

    pub fn webhook(&self, result: WebhookResult) {
        self.webhooks.add(result);
    }

    /// The whole exposition.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_http(&mut out);
        family(&mut out, "enlist_subscribers", "gauge", "Addresses on the list, by status.");
        sample(&mut out, "enlist_subscribers", &[("status", "pending")], snapshot.pending);
        sample(&mut out, "enlist_subscribers", &[("status", "confirmed")], snapshot.confirmed);
        counters(
            &mut out,
            "enlist_signups_total",
            "Signups, by outcome.",
            "outcome",
            &self.signups,
        );
        counters(
            &mut out,
            "enlist_unsubscribes_total",
            "People who left, by the door they left through.",
            "door",
            &self.unsubscribes,
        );
        counters(
            &mut out,
            "enlist_rate_limited_total",
            "Requests refused by an abuse limit, by rule.",
            "rule",
            &self.rate_limited,
        );
        counters(
            &mut out,
            "enlist_mail_sent_total",
            "Attempts to send a mail, by result.",
            "result",
            &self.mail,
        );
        counters(
            &mut out,
            "enlist_webhook_deliveries_total",
            "Attempts to deliver a webhook, by result.",
            "result",
            &self.webhooks,
        );
        family(&mut out, "enlist_outbox_pending", "gauge", "Messages waiting in the outbox.");
        for (kind, queued, _) in &snapshot.outbox {
            sample(&mut out, "enlist_outbox_pending", &[("kind", kind)], *queued);
        }
        family(
            &mut out,
            "enlist_outbox_oldest_seconds",
            "gauge",
            "Age of the oldest message waiting in the outbox.",
        );
        for (kind, _, oldest) in &snapshot.outbox {
            sample(&mut out, "enlist_outbox_oldest_seconds", &[("kind", kind)], *oldest);
        }
        family(&mut out, "enlist_db_connections", "gauge", "Database connections of the pool.");
        let connections =
            [("in_use", snapshot.connections_in_use), ("idle", snapshot.connections_idle)];
        for (state, n) in connections {
            sample(&mut out, "enlist_db_connections", &[("state", state)], n);
        }
        family(&mut out, "enlist_build_info", "gauge", "The running version.");
        sample(&mut out, "enlist_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
        out
    }

    fn render_http(&self, out: &mut String) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        family(out, "http_requests_total", "counter", "Requests answered, by route template.");
        for name in &names {
            let answers = routes[*name].answers.read().unwrap_or_else(|p| p.into_inner());
            let mut keys: Vec<&(Method, u16)> = answers.keys().collect();
            keys.sort_by_key(|(method, status)| (method.as_str(), *status));
            for key in keys {
                let status = key.1.to_string();
                let labels =
                    [("route", name.as_str()), ("method", key.0.as_str()), ("status", &status)];
                sample(out, "http_requests_total", &labels, answers[key].load(Ordering::Relaxed));
            }
        }
        family(
            out,
            "http_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to its answer, by route template.",
        );
        for name in names {
            let histogram = &routes[name].durations;
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&histogram.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = bound.to_string();
                let labels = [("route", name.as_str()), ("le", le.as_str())];
                sample(out, "http_request_duration_seconds_bucket", &labels, cumulative);
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let labels = [("route", name.as_str()), ("le", "+Inf")];
            sample(out, "http_request_duration_seconds_bucket", &labels, count);
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{route=\"{}\"}} {sum}",
                escape(name)
            );
            sample(out, "http_request_duration_seconds_count", &[("route", name.as_str())], count);
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counters<L: Copy + PartialEq + LabelText>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    counters: &Counters<L>,
) {
    family(out, name, "counter", help);
    for (value, counter) in counters.labels.iter().zip(&counters.values) {
        sample(out, name, &[(label, value.text())], counter.load(Ordering::Relaxed));
    }
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values are route templates and fixed words, but the format's escapes cost nothing.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A label value as written in the exposition.
trait LabelText {
    fn text(self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_template_and_the_histogram_is_cumulative() {
        let metrics = Metrics::default();
        metrics.request("/confirm/{token}", &Method::GET, 200, Duration::from_micros(300));
        metrics.request("/confirm/{token}", &Method::GET, 200, Duration::from_millis(3));
        metrics.request("/confirm/{token}", &Method::POST, 303, Duration::from_secs(20));
        let text = metrics.render(&Snapshot::default());
        assert!(text.contains(
            "http_requests_total{route=\"/confirm/{token}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "http_requests_total{route=\"/confirm/{token}\",method=\"POST\",status=\"303\"} 1"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{route=\"/confirm/{token}\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{route=\"/confirm/{token}\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{route=\"/confirm/{token}\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("http_request_duration_seconds_count{route=\"/confirm/{token}\"} 3"));
    }
}
