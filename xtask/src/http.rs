//! A minimal HTTP/1.1 GET for reading kernlet's local endpoints from the demo and the tests,
//! without an HTTP client dependency: plain (the read-only port, the kubelet's) or over TLS with
//! a client certificate (kernlet's kubelet port, [`TlsClient`]).
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use crate::pki::ClientPki;

use anyhow::{Context, Result, bail};

/// `GET path` on `127.0.0.1:port`: the body of a 200 response (chunked bodies are joined).
pub fn get(port: u16, path: &str) -> Result<String> {
    get_timeout(port, path, Duration::from_secs(5))
}

/// As [`get`], waiting up to `timeout` for each read (slow servers, e.g. under emulation).
pub fn get_timeout(port: u16, path: &str, timeout: Duration) -> Result<String> {
    let stream = connect(port, timeout)?;
    exchange(stream, path)
}

fn connect(port: u16, timeout: Duration) -> Result<TcpStream> {
    connect_to("127.0.0.1", port, timeout)
}

fn connect_to(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let stream =
        TcpStream::connect((host, port)).with_context(|| format!("connecting to {host}:{port}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Sends `GET path` and reads the whole answer (the server closes after it): the body of a 200.
fn exchange(stream: impl Read + Write, path: &str) -> Result<String> {
    let (status, head, body) = exchange_ask(stream, path, None, &Ask::default())?;
    if status != 200 {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body)
}

/// What to send besides the path: `GET` with no body and no extra headers by default.
#[derive(Debug, Default)]
struct Ask<'a> {
    /// `GET` when empty.
    method: &'a str,
    /// Extra header lines, each ending in `\r\n`.
    headers: String,
    body: &'a str,
}

/// Sends the request and reads the answer until the server closes or, with `for_at_most`, that
/// long has passed (a streaming answer): the status, the head and the (dechunked) body.
fn exchange_ask(
    mut stream: impl Read + Write,
    path: &str,
    for_at_most: Option<Duration>,
    ask: &Ask<'_>,
) -> Result<(u16, String, String)> {
    let method = if ask.method.is_empty() {
        "GET"
    } else {
        ask.method
    };
    let (headers, body) = (&ask.headers, ask.body);
    // A PATCH body is a JSON merge patch, as `kubectl patch --type merge` sends it.
    let kind = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", body.len())
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}{length}Connection: close\r\n\r\n{body}"
    )?;
    stream.flush()?;
    let raw = read_all(&mut stream, for_at_most)?;
    let response = String::from_utf8_lossy(&raw);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("response has no end of headers")?;
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path}: no status in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

/// Reads until the end, or until `for_at_most` passed (the stream's read timeout then ends
/// the last read).
fn read_all(stream: &mut impl Read, for_at_most: Option<Duration>) -> Result<Vec<u8>> {
    let started = std::time::Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if for_at_most.is_some_and(|limit| started.elapsed() >= limit) {
            return Ok(raw);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if for_at_most.is_some()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
            // A TLS peer that closes without close_notify: the answer is complete if it came.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {
                return Ok(raw);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A TLS connection of [`TlsClient`].
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A client of kernlet's kubelet port on localhost: TLS with a client certificate, trusting the
/// serving certificate kernlet generated into its cert dir (read at each request, so the
/// client can be made before kernlet starts).
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// The server's address (`127.0.0.1` for kernlet and a local control plane).
    pub host: String,
    pub port: u16,
    pub pki: ClientPki,
    /// kernlet's `<cert-dir>/kubelet.crt`, or the cluster CA for a certificate the cluster
    /// signed.
    pub server_ca: PathBuf,
    /// The name the server's certificate is verified against (`localhost` for kernlet's
    /// self-signed one).
    pub server_name: String,
}

impl TlsClient {
    /// `GET path`: the body of a 200 response.
    pub fn get(&self, path: &str) -> Result<String> {
        self.get_timeout(path, Duration::from_secs(5))
    }

    /// As [`TlsClient::get`], waiting up to `timeout` for each read.
    pub fn get_timeout(&self, path: &str, timeout: Duration) -> Result<String> {
        exchange(self.connect(timeout)?, path)
    }

    /// `GET path`: the status and the body, whatever the status.
    pub fn request(&self, path: &str) -> Result<(u16, String)> {
        let (status, _, body) = exchange_ask(
            self.connect(Duration::from_secs(10))?,
            path,
            None,
            &Ask::default(),
        )?;
        Ok((status, body))
    }

    /// `GET path` of a streaming answer (`follow=true`): the status and what arrived in
    /// `duration`.
    pub fn stream_for(&self, path: &str, duration: Duration) -> Result<(u16, String)> {
        let stream = self.open(Duration::from_secs(10))?;
        // Short reads from here, so the time limit is kept while nothing arrives.
        stream
            .sock
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        let (status, _, body) = exchange_ask(stream, path, Some(duration), &Ask::default())?;
        Ok((status, body))
    }

    /// `method path` with a JSON `body` (e.g. a `POST` to an API server; a `PATCH` body is a
    /// merge patch): the status and the body, whatever the status.
    pub fn send(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let ask = Ask {
            method,
            body,
            ..Ask::default()
        };
        let stream = self.connect(Duration::from_secs(10))?;
        let (status, _, body) = exchange_ask(stream, path, None, &ask)?;
        Ok((status, body))
    }

    /// `GET path` with a bearer token and no client certificate: the status and the body.
    pub fn request_with_token(&self, path: &str, token: &str) -> Result<(u16, String)> {
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())?;
        let connection = rustls::ClientConnection::new(self.config_with(false)?, name)?;
        let stream = rustls::StreamOwned::new(
            connection,
            connect_to(&self.host, self.port, Duration::from_secs(10))?,
        );
        let header = format!("Authorization: Bearer {token}\r\n");
        let ask = Ask {
            headers: header,
            ..Ask::default()
        };
        let (status, _, body) = exchange_ask(stream, path, None, &ask)?;
        Ok((status, body))
    }

    fn connect(&self, timeout: Duration) -> Result<TlsStream> {
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())?;
        let connection = rustls::ClientConnection::new(self.config_with(true)?, name)?;
        Ok(rustls::StreamOwned::new(
            connection,
            connect_to(&self.host, self.port, timeout)?,
        ))
    }

    /// A connection to kernlet with the handshake done, for a protocol of the caller's
    /// (an upgrade to SPDY or WebSocket); reads time out after `timeout`.
    pub fn open(&self, timeout: Duration) -> Result<TlsStream> {
        let mut stream = self.connect(timeout)?;
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }

    /// The TLS client config, presenting the client certificate when `certificate`.
    fn config_with(&self, certificate: bool) -> Result<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.server_ca)
            .with_context(|| format!("reading {}", self.server_ca.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }

        #[expect(
            deprecated,
            reason = "ring has no post-quantum key exchange; a loopback test client needs none"
        )]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        if !certificate {
            return Ok(Arc::new(builder.with_no_client_auth()));
        }
        let chain =
            CertificateDer::pem_file_iter(&self.pki.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.pki.key)?;
        Ok(Arc::new(builder.with_client_auth_cert(chain, key)?))
    }
}

/// A localhost port nothing listens on right now (the kernel picks it; the caller's server binds
/// it a moment later).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_chunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
