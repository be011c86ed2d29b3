//! A webhook receiver for the tests: a real HTTP server on loopback that records every request
//! (headers and the exact body bytes) and answers as the test scripts it. Signatures are checked
//! twice: here, from the specification's rules, and by the `standardwebhooks` package from PyPI.

use std::collections::VecDeque;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Say nothing for this long (then 200, long after any sender gave up).
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub json: Value,
    pub answered: Reply,
}

impl Delivery {
    pub fn event(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    next: Mutex<VecDeque<Reply>>,
    always: Mutex<Option<Reply>>,
    received: Mutex<Vec<Delivery>>,
}

pub struct Receiver {
    pub url: String,
    script: Arc<Script>,
}

async fn receive(State(script): State<Arc<Script>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let reply = script
        .next
        .lock()
        .unwrap()
        .pop_front()
        .or(*script.always.lock().unwrap())
        .unwrap_or(Reply::Status(200));
    let body = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    script.received.lock().unwrap().push(Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        json: serde_json::from_str(&body).expect("a JSON body"),
        body,
        answered: reply,
    });
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::Hang(time) => {
            tokio::time::sleep(time).await;
            StatusCode::OK
        }
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/enlist", listener.local_addr().unwrap());
        let script = Arc::new(Script::default());
        let app = axum::Router::new()
            .route("/hooks/enlist", axum::routing::post(receive))
            .with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, script }
    }

    /// The next requests get these answers, in order; then the standing one.
    pub fn reply_next(&self, replies: &[Reply]) {
        self.script.next.lock().unwrap().extend(replies.iter().copied());
    }

    pub fn reply_always(&self, reply: Reply) {
        *self.script.always.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.script.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests arrived.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} webhook requests within {within:?}: {received:#?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The specification's check: `v1,` + base64(HMAC-SHA256(key, id.timestamp.body)), the key
/// being the base64 after `whsec_`.
pub fn signature_is_valid(secret: &str, delivery: &Delivery) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", delivery.id, delivery.timestamp, delivery.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    delivery.signature.split(' ').any(|s| s == expected)
}

/// Verifies every delivery with the `standardwebhooks` package, as a receiver in Python would.
/// Without the package, says so and returns, unless `CI` is set: then it is a failure.
pub fn verified_by_standardwebhooks(secret: &str, deliveries: &[Delivery]) {
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
given = json.load(sys.stdin)
hook = Webhook(given["secret"])
for d in given["deliveries"]:
    headers = {"webhook-id": d["id"], "webhook-timestamp": d["timestamp"],
               "webhook-signature": d["signature"]}
    hook.verify(d["body"], headers)
print(len(given["deliveries"]), "verified")
"#;
    let input = serde_json::json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|d| serde_json::json!({
            "id": d.id, "timestamp": d.timestamp, "signature": d.signature, "body": d.body,
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to verify webhooks with standardwebhooks");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'standardwebhooks'") && std::env::var_os("CI").is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the standardwebhooks check: pip install standardwebhooks (CI requires it)"
        );
        return;
    }
    assert!(output.status.success(), "standardwebhooks refused a delivery: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), format!("{} verified", deliveries.len()));
}
