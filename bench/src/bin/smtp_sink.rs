//! A local SMTP server that accepts every message and keeps none: what the mail benchmarks send
//! to. It writes how many messages it has accepted to `--count-file` every 100 ms.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:2525")]
    bind: String,
    #[arg(long)]
    count_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.bind).await?;
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let file = args.count_file.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let partial = file.with_extension("partial");
            let n = counter.load(Ordering::Relaxed).to_string();
            if tokio::fs::write(&partial, n).await.is_ok() {
                let _ = tokio::fs::rename(&partial, &file).await;
            }
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let _ = session(stream, &accepted).await;
        });
    }
}

async fn session(stream: TcpStream, accepted: &AtomicU64) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 sink ready\r\n").await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with(b"EHLO") {
            b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with(b"DATA") {
            write.write_all(b"354 go on\r\n").await?;
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" {
                    break;
                }
            }
            accepted.fetch_add(1, Ordering::Relaxed);
            b"250 accepted\r\n"
        } else if upper.starts_with(b"QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 OK\r\n"
        };
        write.write_all(reply).await?;
    }
}
