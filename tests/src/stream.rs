//! Clients of the kubelet's streaming endpoints (`/exec`, `/attach`, `/portForward`), over
//! kernlet's TLS port with the fixture's client certificate, speaking the two protocols
//! `kubectl` and the API server speak:
//! - WebSocket with the `v4.channel.k8s.io` channel protocol: each binary message starts with
//!   its channel (0 stdin, 1 stdout, 2 stderr, 3 the exit status, 4 resize; for port-forward,
//!   data and error channels per port, each opened by the port number), and for exec and
//!   attach `v5.channel.k8s.io`, which adds the close signal `[255, channel]`;
//! - SPDY/3.1 (`Upgrade: SPDY/3.1`): one SPDY stream per channel, opened by the client with a
//!   `streamType` header; framed here by hand (control frames, data frames, and header blocks
//!   as one zlib stream per direction).
#![expect(
    clippy::disallowed_methods,
    reason = "bounds blocking reads of a real connection: std time is the right clock"
)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compress, Compression, FlushCompress};
use tungstenite::{Message, client::IntoClientRequest, handshake::client::Request};
use xtask::http::{TlsClient, TlsStream};

/// What a session brought back.
#[derive(Debug, Default, Clone)]
pub struct Session {
    /// The protocol the server chose (`Sec-WebSocket-Protocol` / `X-Stream-Protocol-Version`).
    pub protocol: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error channel: the exit status as a `metav1.Status` JSON, or a port-forward error.
    pub status: String,
}

impl Session {
    #[must_use]
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The WebSocket channel protocols of exec and attach.
pub const V4: &str = "v4.channel.k8s.io";
/// v4 plus the close signal: `[255, channel]` ends the client's half of a channel.
pub const V5: &str = "v5.channel.k8s.io";

/// WebSocket `v4.channel.k8s.io`: see [`websocket_with`].
pub fn websocket(
    client: &TlsClient,
    path: &str,
    send: &[(u8, &[u8])],
    until: Option<&str>,
    limit: Duration,
) -> Result<Session> {
    websocket_with(client, path, V4, send, until, limit)
}

/// WebSocket with channel `protocol`: runs `path` (exec or attach), sends each
/// `(channel, bytes)` of `send` (0 is stdin, 4 a resize, 255 v5's close signal), and reads
/// until the server closes, `until` is seen on stdout, or `limit` passes.
pub fn websocket_with(
    client: &TlsClient,
    path: &str,
    protocol: &str,
    send: &[(u8, &[u8])],
    until: Option<&str>,
    limit: Duration,
) -> Result<Session> {
    let (mut socket, protocol) = ws_connect(client, path, protocol)?;
    let mut session = Session {
        protocol,
        ..Session::default()
    };
    for (channel, data) in send {
        socket.send(Message::binary([&[*channel], *data].concat()))?;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let message = match socket.read() {
            Ok(message) => message,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => continue,
            Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(_),
            ) => break,
            Err(e) => return Err(e.into()),
        };
        match message {
            Message::Binary(data) if !data.is_empty() => match data[0] {
                1 => session.stdout.extend_from_slice(&data[1..]),
                2 => session.stderr.extend_from_slice(&data[1..]),
                3 => session
                    .status
                    .push_str(&String::from_utf8_lossy(&data[1..])),
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
        if until.is_some_and(|text| session.stdout_text().contains(text)) {
            break;
        }
    }
    let _ = socket.close(None);
    Ok(session)
}

/// WebSocket port-forward (`/portForward/...?port=<port>`, upstream's query name): sends `request` on the
/// data channel and reads the data channel until the server closes or `limit` passes.
pub fn websocket_port_forward(
    client: &TlsClient,
    path: &str,
    request: &[u8],
    limit: Duration,
) -> Result<Session> {
    let (mut socket, protocol) = ws_connect(client, path, V4)?;
    let mut session = Session {
        protocol,
        ..Session::default()
    };
    let mut opened = [false, false];
    let started = std::time::Instant::now();
    let mut sent = false;
    while started.elapsed() < limit {
        let message = match socket.read() {
            Ok(message) => message,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => continue,
            Err(_) => break,
        };
        let Message::Binary(data) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((&channel, rest)) = data.split_first() else {
            continue;
        };
        let channel = usize::from(channel);
        // The first message of each channel is its port (two bytes, little-endian).
        if channel < 2 && !opened[channel] {
            opened[channel] = true;
            ensure!(rest.len() == 2, "channel {channel} opened with {rest:?}");
            if opened == [true, true] && !sent {
                socket.send(Message::binary([&[0u8], request].concat()))?;
                sent = true;
            }
            continue;
        }
        match channel {
            0 => session.stdout.extend_from_slice(rest),
            1 => session.status.push_str(&String::from_utf8_lossy(rest)),
            _ => {}
        }
    }
    let _ = socket.close(None);
    Ok(session)
}

/// The socket and the protocol the server chose.
fn ws_connect(
    client: &TlsClient,
    path: &str,
    protocol: &str,
) -> Result<(tungstenite::WebSocket<TlsStream>, String)> {
    let stream = client.open(Duration::from_millis(300))?;
    let mut request: Request =
        format!("ws://localhost:{}{path}", client.port).into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let (socket, response) = tungstenite::client::client(request, stream)
        .map_err(|e| anyhow::anyhow!("websocket handshake for {path}: {e}"))?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(chosen == protocol, "server chose protocol {chosen:?}");
    Ok((socket, chosen))
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A SPDY/3.1 connection after the upgrade.
pub struct Spdy {
    stream: TlsStream,
    headers: Compress,
    next_id: u32,
    /// The server's choice of `X-Stream-Protocol-Version`.
    pub protocol: String,
}

/// A frame the server sent.
#[derive(Debug)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        data: Vec<u8>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
}

const SYN_STREAM: u16 = 1;
const GOAWAY: u16 = 7;
const PING: u16 = 6;
const FIN: u8 = 1;

impl Spdy {
    /// `POST path` with `Upgrade: SPDY/3.1`, offering `protocol`; fails unless the answer is
    /// `101 Switching Protocols`.
    pub fn connect(client: &TlsClient, path: &str, protocol: &str) -> Result<Self> {
        let mut stream = client.open(Duration::from_secs(10))?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
             Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\
             Content-Length: 0\r\n\r\n"
        )?;
        stream.flush()?;
        let head = read_head(&mut stream)?;
        let status = head.lines().next().unwrap_or_default().to_owned();
        ensure!(status.contains(" 101 "), "no upgrade for {path}: {head}");
        let chosen = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        stream
            .sock
            .set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(Self {
            stream,
            headers: Compress::new(Compression::default(), true),
            next_id: 1,
            protocol: chosen,
        })
    }

    /// Opens a stream with `headers` (names lower-case, as SPDY wants): its id.
    pub fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> Result<u32> {
        let id = self.next_id;
        self.next_id += 2;
        let mut block = Vec::new();
        block.extend_from_slice(&u32::try_from(headers.len())?.to_be_bytes());
        for (name, value) in headers {
            for text in [name, value] {
                block.extend_from_slice(&u32::try_from(text.len())?.to_be_bytes());
                block.extend_from_slice(text.as_bytes());
            }
        }
        let mut compressed = Vec::with_capacity(block.len() + 64);
        self.headers
            .compress_vec(&block, &mut compressed, FlushCompress::Sync)?;
        let mut payload = Vec::new();
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&compressed);
        self.control(SYN_STREAM, if fin { FIN } else { 0 }, &payload)?;
        Ok(id)
    }

    /// Sends `data` on stream `id`, closing the client's half with `fin`.
    pub fn send(&mut self, id: u32, data: &[u8], fin: bool) -> Result<()> {
        let mut frame = Vec::with_capacity(8 + data.len());
        frame.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        let length = u32::try_from(data.len())?;
        frame.push(if fin { FIN } else { 0 });
        frame.extend_from_slice(&length.to_be_bytes()[1..]);
        frame.extend_from_slice(data);
        self.stream.write_all(&frame)?;
        Ok(self.stream.flush()?)
    }

    fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&[0x80, 3]);
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&u32::try_from(payload.len())?.to_be_bytes()[1..]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)?;
        Ok(self.stream.flush()?)
    }

    /// Reads until the server closes or sends GOAWAY, or `limit` passes: the data of each
    /// stream.
    pub fn drain(&mut self, limit: Duration) -> Result<HashMap<u32, Vec<u8>>> {
        let started = std::time::Instant::now();
        let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
        while started.elapsed() < limit {
            match self.read_until(started, limit)? {
                None | Some(Frame::Control { kind: GOAWAY, .. }) => break,
                Some(Frame::Data { stream, data, .. }) => {
                    got.entry(stream).or_default().extend_from_slice(&data);
                }
                Some(Frame::Control { .. }) => {}
            }
        }
        Ok(got)
    }

    /// The next frame; `None` when the server closed the connection or `limit` (counted from
    /// `started`) passed. PINGs are answered.
    pub fn read_until(
        &mut self,
        started: std::time::Instant,
        limit: Duration,
    ) -> Result<Option<Frame>> {
        let mut head = [0u8; 8];
        let mut filled = 0;
        while filled < head.len() {
            if started.elapsed() >= limit {
                return Ok(None);
            }
            match self.stream.read(&mut head[filled..]) {
                Ok(0) => return Ok(None),
                Ok(n) => filled += n,
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut data = vec![0u8; length];
        read_fully(&mut self.stream, &mut data)?;
        if head[0] & 0x80 != 0 {
            let kind = u16::from_be_bytes([head[2], head[3]]);
            if kind == PING {
                self.control(PING, 0, &data)?;
            }
            return Ok(Some(Frame::Control {
                kind,
                flags: head[4],
                data,
            }));
        }
        Ok(Some(Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
            fin: head[4] & FIN != 0,
            data,
        }))
    }
}

/// Exec or attach over SPDY with the v4 channel protocol: opens the error, stdin (when
/// `stdin` is given), stdout and stderr streams, sends `stdin`, reads until the server closes
/// or `limit` passes.
pub fn spdy_exec(
    client: &TlsClient,
    path: &str,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<Session> {
    let mut spdy = Spdy::connect(client, path, "v4.channel.k8s.io")?;
    let error = spdy.open(&[("streamtype", "error")], true)?;
    let input = match stdin {
        Some(_) => Some(spdy.open(&[("streamtype", "stdin")], false)?),
        None => None,
    };
    let out = spdy.open(&[("streamtype", "stdout")], true)?;
    let err = spdy.open(&[("streamtype", "stderr")], true)?;
    if let (Some(id), Some(data)) = (input, stdin) {
        spdy.send(id, data, false)?;
    }
    let got = spdy.drain(limit)?;
    let text = |id: u32| got.get(&id).cloned().unwrap_or_default();
    Ok(Session {
        protocol: spdy.protocol.clone(),
        stdout: text(out),
        stderr: text(err),
        status: String::from_utf8_lossy(&text(error)).into_owned(),
    })
}

/// Port-forward over SPDY (`portforward.k8s.io`): an error and a data stream for `port`, sends
/// `request`, reads the data stream until the server closes it or `limit` passes.
pub fn spdy_port_forward(
    client: &TlsClient,
    path: &str,
    port: u16,
    request: &[u8],
    limit: Duration,
) -> Result<Session> {
    let mut spdy = Spdy::connect(client, path, "portforward.k8s.io")?;
    let port = port.to_string();
    let error = spdy.open(
        &[("streamtype", "error"), ("port", &port), ("requestid", "0")],
        true,
    )?;
    let data = spdy.open(
        &[("streamtype", "data"), ("port", &port), ("requestid", "0")],
        false,
    )?;
    spdy.send(data, request, false)?;
    let started = std::time::Instant::now();
    let mut session = Session {
        protocol: spdy.protocol.clone(),
        ..Session::default()
    };
    while started.elapsed() < limit {
        match spdy.read_until(started, limit)? {
            None | Some(Frame::Control { kind: GOAWAY, .. }) => break,
            Some(Frame::Data {
                stream,
                fin,
                data: bytes,
            }) => {
                if stream == data {
                    session.stdout.extend_from_slice(&bytes);
                } else if stream == error {
                    session.status.push_str(&String::from_utf8_lossy(&bytes));
                }
                if stream == data && fin {
                    break;
                }
            }
            Some(Frame::Control { .. }) => {}
        }
    }
    Ok(session)
}

fn read_fully(stream: &mut TlsStream, buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    let started = std::time::Instant::now();
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => bail!("connection closed inside a frame"),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) && started.elapsed() < Duration::from_secs(10) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The HTTP answer's head, read byte by byte so nothing after it is consumed.
fn read_head(stream: &mut TlsStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream
            .read(&mut byte)
            .context("reading the upgrade answer")?;
        ensure!(n == 1, "connection closed before the upgrade answer ended");
        head.push(byte[0]);
        ensure!(head.len() < 64 * 1024, "upgrade answer head too long");
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
