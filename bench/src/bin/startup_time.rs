//! W5: from exec to the first `200` on /healthz, in milliseconds. Polls a plain HTTP/1.0 request
//! every half millisecond; the process is stopped with SIGTERM after each run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// host:port the server binds (it must be given the same --bind in `command`).
    #[arg(long)]
    address: String,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The server command line.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn healthy(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.ends_with(b"200")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut times = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        let mut child = Command::new(&args.command[0])
            .args(&args.command[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        while !healthy(&args.address) {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no 200 within 30 s");
            std::thread::sleep(Duration::from_micros(500));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        child.wait()?;
    }
    times.sort_by(f64::total_cmp);
    println!("{:.1}", times[times.len() / 2]);
    Ok(())
}
