//! A TCP proxy for fault tests: it stands between kernlet and the API server (TLS passes through
//! untouched, so kernlet still verifies the real server and authenticates with its own
//! certificate) and can cut every open connection (a watch ends mid-stream) or refuse new ones
//! for a while (the server unreachable while pods change).
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use anyhow::{Context, Result};

/// A running proxy to `127.0.0.1:<upstream>`; it stops accepting when dropped.
pub struct FaultProxy {
    /// The port to connect to instead of the upstream's.
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// New connections are closed at once while set.
    refusing: AtomicBool,
    stopped: AtomicBool,
    /// Both halves of every open connection.
    open: Mutex<Vec<TcpStream>>,
    accepted: AtomicU64,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fault proxy")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                accepting.accepted.fetch_add(1, Ordering::SeqCst);
                if accepting.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                if let Err(error) = forward(&accepting, client, server) {
                    eprintln!("fault proxy: {error:#}");
                }
            }
        });
        Ok(Self { port, shared })
    }

    /// Closes every open connection (both directions), as a network cut would.
    pub fn cut(&self) {
        cut_all(&self.shared.open);
    }

    /// While `refuse` is set, new connections are accepted and closed at once.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refusing.store(refuse, Ordering::SeqCst);
    }

    /// Connections accepted so far (refused ones included).
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.cut();
    }
}

/// Shuts down every stream in `open` and forgets them.
pub(crate) fn cut_all(open: &Mutex<Vec<TcpStream>>) {
    let streams = std::mem::take(&mut *open.lock().unwrap_or_else(PoisonError::into_inner));
    for stream in streams {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Copies both directions on their own threads and records the streams for [`FaultProxy::cut`].
fn forward(shared: &Shared, client: TcpStream, server: TcpStream) -> Result<()> {
    {
        let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    let (client_in, server_out) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || copy(client_in, server_out));
    thread::spawn(move || copy(server, client));
    Ok(())
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_cuts_and_refuses() -> Result<()> {
        let upstream = TcpListener::bind("127.0.0.1:0")?;
        let upstream_port = upstream.local_addr()?.port();
        thread::spawn(move || {
            for stream in upstream.incoming().flatten() {
                let mut echo = stream;
                thread::spawn(move || {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = echo.read(&mut buffer) {
                        if n == 0 || echo.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(upstream_port)?;
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port))?;
        stream.write_all(b"ping")?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer)?;
        assert_eq!(&answer, b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        assert_eq!(
            stream.read_to_end(&mut rest).unwrap_or(0),
            0,
            "cut: end of stream"
        );

        proxy.refuse(true);
        let mut refused = TcpStream::connect(("127.0.0.1", proxy.port))?;
        let _ = refused.write_all(b"ping");
        assert_eq!(refused.read(&mut answer).unwrap_or(0), 0, "refused: closed");
        proxy.refuse(false);
        let mut again = TcpStream::connect(("127.0.0.1", proxy.port))?;
        again.write_all(b"pong")?;
        again.read_exact(&mut answer)?;
        assert_eq!(&answer, b"pong");
        assert_eq!(proxy.accepted(), 3);
        Ok(())
    }
}
