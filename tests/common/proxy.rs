//! A TCP proxy the tests control, to take a database "away" without touching the real server.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways.
    Up,
    /// Refuses: new connections are closed at once, open ones are cut.
    Down,
    /// Black hole: connections are accepted but nothing moves, as with a dead network path.
    Stalled,
}

pub struct TcpProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, watcher) = watch::channel(Mode::Up);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watcher = watcher.clone();
                tokio::spawn(relay(client, upstream, watcher));
            }
        });
        TcpProxy { port, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let initial = *mode.borrow_and_update();
    match initial {
        Mode::Down => return,
        // Hold the connection without a word until things change, then drop it.
        Mode::Stalled => {
            let _ = mode.changed().await;
            return;
        }
        Mode::Up => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
            },
            changed = mode.changed() => {
                if changed.is_err() { return }
                let now = *mode.borrow_and_update();
                match now {
                    Mode::Up => {}
                    Mode::Down => return,
                    // Stop moving bytes; when the path comes back the connection is dead.
                    Mode::Stalled => {
                        let _ = mode.changed().await;
                        return;
                    }
                }
            }
        }
    }
}
