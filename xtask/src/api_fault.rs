//! An HTTP-level fault proxy for the API server: it ends TLS with the API server's own
//! certificate (so kernlet's kubeconfig verifies it unchanged), forwards each request to the real
//! server as the node (the node's client certificate; only a test holds it), and can answer
//! every new request with an error status instead (429 with `Retry-After`, 500, 503) or delay it.
//! [`crate::fault_proxy::FaultProxy`] is the TCP-level one (cuts, refusals).
//!
//! One request per connection (it asks the server for `Connection: close`), so a fault applies
//! from the next request on; [`ApiFaultProxy::set`] also cuts open connections, ending watches.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use crate::pki::ClientPki;

/// What the proxy does with each new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it.
    Pass,
    /// Answer it with this status (and a `Status` body; `Retry-After: 1` with 429).
    Status(u16),
    /// Forward it after this long.
    Delay(Duration),
}

/// A running proxy; it stops accepting when dropped.
pub struct ApiFaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    fault: Mutex<Fault>,
    stopped: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
    /// Requests answered with an injected status.
    injected: AtomicU64,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    upstream: u16,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[expect(
        deprecated,
        reason = "ring has no post-quantum key exchange; a loopback test proxy needs none"
    )]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

impl ApiFaultProxy {
    /// Listens on a free loopback port; serves `serving` (the API server's certificate and key)
    /// and forwards to `127.0.0.1:<upstream>` as `identity`, trusting `ca`.
    pub fn start(
        upstream: u16,
        serving: (&Path, &Path),
        ca: &Path,
        identity: &ClientPki,
    ) -> Result<Self> {
        let chain = CertificateDer::pem_file_iter(serving.0)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(serving.1)?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let chain =
            CertificateDer::pem_file_iter(&identity.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&identity.key)?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the api fault proxy")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            stopped: AtomicBool::new(false),
            open: Mutex::default(),
            injected: AtomicU64::new(0),
            server: Arc::new(server),
            client: Arc::new(client),
            upstream,
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = accepting.clone();
                thread::spawn(move || {
                    // A client gone mid-request is no failure of the proxy.
                    let _ = shared.serve(stream);
                });
            }
        });
        Ok(Self { port, shared })
    }

    /// Applies `fault` to every request from now on, and cuts the open connections (a watch
    /// then starts again through the fault).
    pub fn set(&self, fault: Fault) {
        *self
            .shared
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
        crate::fault_proxy::cut_all(&self.shared.open);
    }

    /// Requests answered with an injected status so far.
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }
}

impl Drop for ApiFaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.set(Fault::Pass);
    }
}

impl Shared {
    fn track(&self, stream: &TcpStream) -> Result<()> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stream.try_clone()?);
        Ok(())
    }

    /// One connection: one request, answered or forwarded.
    fn serve(&self, stream: TcpStream) -> Result<()> {
        self.track(&stream)?;
        let connection = rustls::ServerConnection::new(self.server.clone())?;
        let mut client = rustls::StreamOwned::new(connection, stream);
        let (head, body) = read_request(&mut client)?;
        let fault = *self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        match fault {
            Fault::Status(code) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                client.write_all(&status_response(code))?;
                client.conn.send_close_notify();
                client.flush()?;
                return Ok(());
            }
            Fault::Delay(delay) => thread::sleep(delay),
            Fault::Pass => {}
        }
        let upstream = TcpStream::connect(("127.0.0.1", self.upstream))?;
        self.track(&upstream)?;
        let name = ServerName::try_from("localhost")?;
        let connection = rustls::ClientConnection::new(self.client.clone(), name)?;
        let mut server = rustls::StreamOwned::new(connection, upstream);
        server.write_all(&close_after(&head))?;
        server.write_all(&body)?;
        server.flush()?;
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match server.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => client.write_all(&buffer[..n])?,
            }
            client.flush()?;
        }
        client.conn.send_close_notify();
        client.flush()?;
        Ok(())
    }
}

/// The request head (through the blank line) and its body (by `Content-Length`).
fn read_request(stream: &mut impl Read) -> Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8 * 1024];
    let end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("connection closed before a request");
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = data[end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("connection closed inside a request body");
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Ok((head, body))
}

/// `head` asking the server to close the connection after its answer.
fn close_after(head: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in head.trim_end().split("\r\n") {
        let connection = line
            .split_once(':')
            .is_some_and(|(name, _)| name.eq_ignore_ascii_case("connection"));
        if !connection {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// An API server error answer: a `Status` object, as the real server sends.
fn status_response(code: u16) -> Vec<u8> {
    let (text, reason) = match code {
        429 => ("Too Many Requests", "TooManyRequests"),
        503 => ("Service Unavailable", "ServiceUnavailable"),
        504 => ("Gateway Timeout", "Timeout"),
        _ => ("Internal Server Error", "InternalError"),
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "injected by the api fault proxy", "reason": reason, "code": code,
    })
    .to_string();
    let retry = if code == 429 {
        "Retry-After: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {retry}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_whole_and_asked_to_close() -> Result<()> {
        let raw = b"PATCH /api/v1/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\
                    content-length: 4\r\n\r\nabcd";
        let (head, body) = read_request(&mut &raw[..])?;
        assert_eq!(body, b"abcd");
        let forwarded = String::from_utf8(close_after(&head))?;
        assert_eq!(
            forwarded,
            "PATCH /api/v1/x HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nConnection: close\r\n\r\n"
        );
        assert!(read_request(&mut &b"GET / HTTP/1.1\r\n"[..]).is_err());
        Ok(())
    }

    #[test]
    fn injected_answers_are_api_statuses() -> Result<()> {
        let answer = String::from_utf8(status_response(429))?;
        assert!(
            answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{answer}"
        );
        assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).context("no body")?;
        let status: serde_json::Value = serde_json::from_str(body)?;
        assert_eq!(status["code"], 429);
        assert_eq!(status["reason"], "TooManyRequests");
        let answer = String::from_utf8(status_response(503))?;
        assert!(!answer.contains("Retry-After"), "{answer}");
        Ok(())
    }
}
