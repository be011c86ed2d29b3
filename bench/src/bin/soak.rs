//! A soak: mixed traffic at a constant rate (open loop: requests are sent on schedule whether or
//! not earlier ones have answered), reporting errors, latency and the server's RSS every 30 s.
//! Exits non-zero if any request failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::{Mutex, Semaphore};

#[derive(Parser)]
struct Args {
    /// The server, e.g. http://127.0.0.1:5007
    #[arg(long)]
    url: String,
    /// The server's process id, for its RSS.
    #[arg(long)]
    pid: u32,
    /// Requests per second, all workloads together.
    #[arg(long)]
    rate: u64,
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Percent of new-visitor page views (W1), remembered-visitor views (W2) and signups (W3).
    #[arg(long, default_value = "30,60,10")]
    mix: String,
}

#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shares: Vec<u64> =
        args.mix.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
    anyhow::ensure!(
        shares.len() == 3 && shares.iter().sum::<u64>() == 100,
        "--mix needs three percentages summing to 100"
    );
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let origin = args.url.clone();

    // One remembered visitor for W2.
    let signup = client
        .post(format!("{origin}/signup"))
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .form(&[("email", "soak-remembered@bench.example")])
        .send()
        .await?;
    let cookie = signup
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|c| c.starts_with("enlist_session=")))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no session cookie from the signup"))?;

    let counters = Arc::new(Counters::default());
    let window = Arc::new(Mutex::new(Window::default()));
    let in_flight = Arc::new(Semaphore::new(512));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut next = Instant::now();
    let mut next_report = started + Duration::from_secs(30);
    let mut sequence = 0u64;
    println!(
        "{:>6} {:>10} {:>8} {:>6} {:>6} {:>9} {:>9} {:>8}",
        "t(s)", "sent", "ok", "errors", "late", "p50(ms)", "p99(ms)", "RSS(MB)"
    );
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let now = Instant::now();
        if now < next {
            tokio::time::sleep(next - now).await;
        }
        next += interval;
        sequence += 1;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // More than 512 requests waiting: the server is not keeping up.
            counters.late.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let pick = sequence % 100;
        let request = if pick < shares[0] {
            client.get(format!("{origin}/"))
        } else if pick < shares[0] + shares[1] {
            client.get(format!("{origin}/")).header("cookie", &cookie)
        } else {
            client
                .post(format!("{origin}/signup"))
                .header("origin", &origin)
                .header("sec-fetch-site", "same-origin")
                .form(&[("email", format!("soak-{sequence}@bench.example"))])
        };
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let (task_counters, task_window) = (counters.clone(), window.clone());
        tokio::spawn(async move {
            let (counters, window) = (task_counters, task_window);
            let sent_at = Instant::now();
            let answered = request.send().await;
            let took = sent_at.elapsed().as_micros() as u64;
            match answered {
                Ok(response)
                    if response.status().is_success() || response.status().is_redirection() =>
                {
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            window.lock().await.latencies_us.push(took);
            drop(permit);
        });
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            let mut latencies = std::mem::take(&mut window.lock().await.latencies_us);
            latencies.sort_unstable();
            let at = |q: f64| {
                latencies
                    .get(
                        ((latencies.len() as f64 * q) as usize)
                            .min(latencies.len().saturating_sub(1)),
                    )
                    .copied()
                    .unwrap_or(0) as f64
                    / 1000.0
            };
            println!(
                "{:>6} {:>10} {:>8} {:>6} {:>6} {:>9.2} {:>9.2} {:>8.1}",
                started.elapsed().as_secs(),
                counters.sent.load(Ordering::Relaxed),
                counters.ok.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed),
                counters.late.load(Ordering::Relaxed),
                at(0.5),
                at(0.99),
                rss_mb(args.pid),
            );
        }
    }
    let _ = in_flight.acquire_many(512).await;
    let errors = counters.errors.load(Ordering::Relaxed) + counters.late.load(Ordering::Relaxed);
    println!(
        "done: {} sent, {} ok, {} errors, {} late, RSS {:.1} MB",
        counters.sent.load(Ordering::Relaxed),
        counters.ok.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.late.load(Ordering::Relaxed),
        rss_mb(args.pid)
    );
    anyhow::ensure!(errors == 0, "{errors} requests failed or could not be sent on time");
    Ok(())
}
