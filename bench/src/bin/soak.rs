//! A soak: mixed traffic at a constant rate (open loop: requests are sent on schedule whether or
//! not earlier ones have answered), reporting errors, latency and the server's RSS every 30 s.
//! Exits non-zero if any request failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Mutex;

/// Senders: enough to keep many requests in flight without a task per request.
const WORKERS: usize = 256;

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
    /// Instead of soaking: send the mix as fast as 64 connections allow for `seconds`, and print
    /// the requests per second (this driver's peak, which `--rate` is then set against).
    #[arg(long)]
    find_peak: bool,
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

/// The `sequence`-th request of the mix.
fn mixed_request(
    client: &reqwest::Client,
    origin: &str,
    cookie: &str,
    shares: &[u64],
    sequence: u64,
) -> reqwest::RequestBuilder {
    let pick = sequence % 100;
    if pick < shares[0] {
        client.get(format!("{origin}/"))
    } else if pick < shares[0] + shares[1] {
        client.get(format!("{origin}/")).header("cookie", cookie)
    } else {
        client
            .post(format!("{origin}/signup"))
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .form(&[("email", format!("soak-{sequence}@bench.example"))])
    }
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

    if args.find_peak {
        let started = Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..64u64)
            .map(|worker| {
                let (client, origin, cookie, done, shares) =
                    (client.clone(), origin.clone(), cookie.clone(), done.clone(), shares.clone());
                let seconds = args.seconds;
                tokio::spawn(async move {
                    let mut sequence = worker * 1_000_000_000;
                    while started.elapsed() < Duration::from_secs(seconds) {
                        sequence += 1;
                        let request = mixed_request(&client, &origin, &cookie, &shares, sequence);
                        if request.send().await.is_ok() {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
        println!("{:.0}", done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
        return Ok(());
    }

    let counters = Arc::new(Counters::default());
    let window = Arc::new(Mutex::new(Window::default()));
    // A fixed crew of senders takes scheduled requests from a queue: no task per request, and a
    // full queue means the server (or this machine) is not keeping up: counted as late.
    let (tickets, queue) = async_channel::bounded::<(u64, Instant)>(WORKERS * 4);
    let crew: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (queue, client, origin, cookie, shares) =
                (queue.clone(), client.clone(), origin.clone(), cookie.clone(), shares.clone());
            let (counters, window) = (counters.clone(), window.clone());
            tokio::spawn(async move {
                while let Ok((sequence, due)) = queue.recv().await {
                    let answered =
                        mixed_request(&client, &origin, &cookie, &shares, sequence).send().await;
                    // From when it was due, not when it went out: waiting in line is latency too.
                    let took = due.elapsed().as_micros() as u64;
                    match answered {
                        Ok(response)
                            if response.status().is_success()
                                || response.status().is_redirection() =>
                        {
                            counters.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    window.lock().await.latencies_us.push(took);
                }
            })
        })
        .collect();
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
        let due = next;
        next += interval;
        sequence += 1;
        match tickets.try_send((sequence, due)) {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.late.fetch_add(1, Ordering::Relaxed);
            }
        }
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
    tickets.close();
    for worker in crew {
        worker.await?;
    }
    let errors = counters.errors.load(Ordering::Relaxed);
    let late = counters.late.load(Ordering::Relaxed);
    if late > 0 {
        println!(
            "note: {late} requests could not be sent on schedule: this machine (server and driver together) fell short of the rate at times"
        );
    }
    println!(
        "done: {} sent, {} ok, {} errors, {} late, RSS {:.1} MB",
        counters.sent.load(Ordering::Relaxed),
        counters.ok.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.late.load(Ordering::Relaxed),
        rss_mb(args.pid)
    );
    anyhow::ensure!(errors == 0, "{errors} requests failed");
    Ok(())
}
