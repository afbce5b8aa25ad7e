//! WebSocket `v5.channel.k8s.io` for `/exec` and `/attach`, which kernlet serves itself and
//! translates to SPDY for the runtime: upstream's stream translator
//! (`apiserver/pkg/util/proxy/streamtranslator.go`, which the kubelet runs as well with
//! `ExtendWebSocketsToKubelet`), because containerd's streaming server speaks WebSocket only up
//! to v4.
//!
//! v5 is v4 plus one signal: a client message `[255, n]` closes channel `n`, so a client can
//! end the process's stdin (`kubectl exec -i … < file`, `kubectl cp`) and still read what
//! follows. WebSocket v4 has no such message, SPDY has (a data frame with `FIN`), so the
//! runtime gets SPDY with the `v4.channel.k8s.io` stream protocol: an error, stdin, stdout,
//! stderr and (with a tty) resize stream, as the CRI request asked for them. WebSocket messages
//! are `[channel, data…]`: 0 stdin, 1 stdout, 2 stderr, 3 the status (the runtime's
//! `metav1.Status` JSON, passed on as it is), 4 resize (JSON, passed on to the resize stream).
//! As upstream, the first message is an empty one on the lowest channel the client reads, and
//! the session ends with a close frame when the runtime closes its connection.

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode,
};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};
use tokio_util::sync::CancellationToken;

use super::Slot;
use super::routes::{Body, TEXT, respond};
use super::spdy::{self, Frame};
use super::stream::{StreamOptions, ask_runtime, proxy_failed, refusal, spawn_session};

/// The channel protocol kernlet terminates.
pub(super) const V5: &str = "v5.channel.k8s.io";
/// The stream protocol it asks the runtime for.
const RUNTIME_PROTOCOL: &str = "v4.channel.k8s.io";
/// The v5 signal that closes a channel.
const CLOSE_SIGNAL: u8 = 255;
/// The largest client message (stdin arrives in pieces far smaller).
const MAX_MESSAGE: usize = 1024 * 1024;
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;

/// Whether the client offers `v5.channel.k8s.io` as a WebSocket subprotocol.
pub(super) fn offers_v5(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == V5)
}

/// The SPDY stream ids of one session, by channel.
#[derive(Debug, Default, Clone, Copy)]
struct Streams {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Streams {
    /// The WebSocket channel of the runtime's stream `id`.
    fn channel(&self, id: u32) -> Option<u8> {
        [
            (Some(self.error), STATUS),
            (self.stdout, STDOUT),
            (self.stderr, STDERR),
        ]
        .into_iter()
        .find_map(|(stream, channel)| (stream == Some(id)).then_some(channel))
    }
}

/// Serves the v5 session of `request` against the runtime's `url`: the runtime's SPDY upgrade
/// first (so a refusal is still an HTTP answer), then the client's `101`.
pub(super) async fn translate(
    url: &str,
    mut request: Request<Incoming>,
    options: &StreamOptions,
    shutdown: &CancellationToken,
) -> Response<Body> {
    let Some(accept) = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .and_then(|accept| HeaderValue::from_str(&accept).ok())
    else {
        return respond(StatusCode::BAD_REQUEST, TEXT, "missing Sec-WebSocket-Key\n");
    };
    let mut headers = hyper::HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static(RUNTIME_PROTOCOL),
    );
    let mut answer = match ask_runtime(url, hyper::Method::POST, headers).await {
        Ok(answer) => answer,
        Err(message) => return proxy_failed(url, message),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return refusal(answer).await;
    }
    let slot = request.extensions().get::<Slot>().cloned();
    let (client_side, runtime_side) = (
        hyper::upgrade::on(&mut request),
        hyper::upgrade::on(&mut answer),
    );
    let options = options.clone();
    spawn_session(
        slot,
        client_side,
        runtime_side,
        shutdown.clone(),
        |client, runtime| async move {
            if let Err(error) = session(client, runtime, &options).await {
                tracing::debug!(%error, "v5 session ended");
            }
        },
    );
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let head = response.headers_mut();
    head.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    head.insert(UPGRADE, HeaderValue::from_static("websocket"));
    head.insert(SEC_WEBSOCKET_ACCEPT, accept);
    head.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(V5),
    );
    response
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
    #[error("writing to the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Client(#[from] tokio_tungstenite::tungstenite::Error),
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Opens the runtime's streams, then carries messages both ways until either side ends.
async fn session(
    client: Upgraded,
    runtime: Upgraded,
    options: &StreamOptions,
) -> Result<(), SessionError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws = WebSocketStream::from_raw_socket(client, Role::Server, Some(config)).await;
    let (mut from_runtime, to_runtime) = tokio::io::split(runtime);
    let mut spdy = spdy::Client::default();
    let mut open =
        |name: &str, wanted: bool, fin: bool| -> Result<Option<(u32, Vec<u8>)>, spdy::SpdyError> {
            wanted
                .then(|| spdy.open(&[("streamType", name)], fin))
                .transpose()
        };
    let mut opening = Vec::new();
    let mut id = |frame: Option<(u32, Vec<u8>)>| {
        frame.map(|(id, bytes)| {
            opening.extend(bytes);
            id
        })
    };
    let error = id(open("error", true, true)?).unwrap_or(1);
    let streams = Streams {
        error,
        stdin: id(open("stdin", options.stdin, false)?),
        stdout: id(open("stdout", options.stdout, true)?),
        stderr: id(open("stderr", options.stderr, true)?),
        resize: id(open("resize", options.tty, false)?),
    };
    let mut to_runtime = RuntimeWriter::Open(to_runtime);
    to_runtime.write(&opening).await?;
    // Upstream tells the client the session is up with an empty message on its lowest channel.
    let first = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        STATUS
    };
    ws.send(Message::binary(vec![first])).await?;

    // Frames are read in their own task so that waiting for one never cuts one in half.
    let (tx, mut frames) = tokio::sync::mpsc::channel::<Result<Frame, spdy::SpdyError>>(16);
    let reader = tokio::spawn(async move {
        loop {
            let frame = spdy::read_frame(&mut from_runtime).await.transpose();
            let end = !matches!(frame, Some(Ok(_)));
            if let Some(frame) = frame
                && tx.send(frame).await.is_err()
            {
                return;
            }
            if end {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let mut stdin = streams.stdin;
    loop {
        tokio::select! {
            message = ws.next() => match message {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Binary(data))) => {
                    let bytes = client_message(&data, &mut stdin, streams.resize);
                    to_runtime.send(&bytes).await;
                }
                // A pong is queued by tungstenite and goes out with the next flush.
                Some(Ok(Message::Ping(_))) => ws.flush().await?,
                Some(Ok(_)) => {}
            },
            frame = frames.recv() => match frame {
                None | Some(Ok(Frame::Control { kind: spdy::GOAWAY, .. })) => break,
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Frame::Data { stream, data, .. })) => {
                    if let Some(channel) = streams.channel(stream) {
                        let mut message = Vec::with_capacity(data.len() + 1);
                        message.push(channel);
                        message.extend_from_slice(&data);
                        ws.send(Message::binary(message)).await?;
                    }
                }
                Some(Ok(Frame::Control { kind: spdy::PING, payload, .. })) => {
                    to_runtime.send(&spdy::control(spdy::PING, 0, &payload)).await;
                }
                Some(Ok(Frame::Control { .. })) => {}
            },
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    ws.close(Some(close)).await?;
    Ok(())
}

/// The runtime's half of the connection. The runtime closes it when the process has ended,
/// possibly before everything it sent has been passed on: what kernlet still has to say then
/// (late stdin, a ping's answer) is dropped, and the rest still reaches the client.
enum RuntimeWriter {
    Open(tokio::io::WriteHalf<Upgraded>),
    Gone,
}

impl RuntimeWriter {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Open(writer) => writer.write_all(bytes).await,
            Self::Gone => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Writes `bytes` unless the runtime has gone.
    async fn send(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || matches!(self, Self::Gone) {
            return;
        }
        if let Err(error) = self.write(bytes).await {
            tracing::debug!(%error, "the runtime's streaming connection closed");
            *self = Self::Gone;
        }
    }
}

/// The SPDY bytes for one client message: stdin data, a resize, or the v5 close of stdin
/// (after which stdin is gone). Anything else is dropped, as upstream drops a message for a
/// channel the session does not read.
fn client_message(data: &[u8], stdin: &mut Option<u32>, resize: Option<u32>) -> Vec<u8> {
    match data {
        [STDIN, rest @ ..] => stdin
            .map(|id| spdy::data(id, rest, false))
            .unwrap_or_default(),
        [RESIZE, rest @ ..] => resize
            .map(|id| spdy::data(id, rest, false))
            .unwrap_or_default(),
        [CLOSE_SIGNAL, STDIN, ..] => stdin
            .take()
            .map(|id| spdy::data(id, &[], true))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Aborts the task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_is_found_among_the_offered_protocols() {
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        assert!(offers_v5(&headers));
        headers.insert(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io,base64url.bearer.authorization.k8s.io.eA"),
        );
        assert!(!offers_v5(&headers));
    }

    #[test]
    fn client_messages_become_stream_data_and_the_close_signal_ends_stdin_once() {
        let mut stdin = Some(3);
        assert_eq!(
            client_message(&[STDIN, b'h', b'i'], &mut stdin, None),
            spdy::data(3, b"hi", false)
        );
        assert_eq!(
            client_message(&[RESIZE, b'{', b'}'], &mut stdin, Some(9)),
            spdy::data(9, b"{}", false)
        );
        assert!(
            client_message(&[RESIZE, b'{'], &mut stdin, None).is_empty(),
            "no tty"
        );
        assert_eq!(
            client_message(&[CLOSE_SIGNAL, STDIN], &mut stdin, None),
            spdy::data(3, &[], true)
        );
        assert_eq!(stdin, None);
        assert!(
            client_message(&[STDIN, b'x'], &mut stdin, None).is_empty(),
            "stdin closed"
        );
        assert!(
            client_message(&[CLOSE_SIGNAL, STDIN], &mut stdin, None).is_empty(),
            "closed once"
        );
        assert!(
            client_message(&[STDOUT, b'x'], &mut Some(1), None).is_empty(),
            "not a read channel"
        );
        assert!(client_message(&[], &mut Some(1), None).is_empty());
    }

    #[test]
    fn runtime_streams_map_to_their_channels() {
        let streams = Streams {
            error: 1,
            stdin: Some(3),
            stdout: Some(5),
            stderr: None,
            resize: None,
        };
        assert_eq!(streams.channel(1), Some(STATUS));
        assert_eq!(streams.channel(5), Some(STDOUT));
        assert_eq!(streams.channel(3), None, "stdin is the client's");
        assert_eq!(streams.channel(7), None);
    }
}
