//! SPDY/3 framing: the client half kernlet needs to drive a runtime's streaming server itself
//! (see `translate`). The runtime's server is upstream's `httpstream/spdy` over moby's
//! spdystream, which frames with Go's `x/net/spdy` (SPDY/3, announced as `Upgrade: SPDY/3.1`).
//!
//! A frame is an 8-byte head and its payload: a control frame starts with bit 1, version 3 and
//! its type; a data frame with its stream id; then 8 bits of flags (`FIN`) and a 24-bit length.
//! A client opens stream 1, 3, 5, … with `SYN_STREAM`, whose header block is a zlib stream that
//! runs across the connection, flushed at each frame. Header names go lower-case. Any valid zlib
//! stream is read, so no SPDY dictionary is set on kernlet's side.
//! What the server sends in header blocks (`SYN_REPLY`) is not needed and not inflated.
//! spdystream does no flow control (it reads `WINDOW_UPDATE` and drops it), so neither side
//! sends one: a frame the runtime never reads before it closes would turn its close into a
//! reset and cut off the end of the output.

use flate2::{Compress, Compression, FlushCompress};
use tokio::io::{AsyncRead, AsyncReadExt as _};

pub const SYN_STREAM: u16 = 1;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
/// The flag that ends the sender's half of a stream.
pub const FIN: u8 = 1;
/// The most payload one data frame carries here (SPDY allows 2^24 - 1).
pub const MAX_DATA: usize = 64 * 1024;
/// The largest frame accepted from the runtime; spdystream writes what the process wrote, in
/// pieces of at most 32 KiB.
const MAX_FRAME: usize = 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading a spdy frame: {0}")]
    Read(#[from] std::io::Error),
    #[error("the runtime sent a spdy frame of {0} bytes, more than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("the runtime sent spdy version {0}, not 3")]
    Version(u16),
    #[error("compressing a spdy header block: {0}")]
    Compress(#[from] flate2::CompressError),
}

/// One frame from the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
}

/// The client's side of one connection: its stream ids and its header compressor.
pub struct Client {
    headers: Compress,
    next_id: u32,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            headers: Compress::new(Compression::default(), true),
            next_id: 1,
        }
    }
}

impl Client {
    /// A `SYN_STREAM` that opens the next stream with `headers`; `fin` when the client will
    /// send nothing on it. Its id and the frame.
    pub fn open(
        &mut self,
        headers: &[(&str, &str)],
        fin: bool,
    ) -> Result<(u32, Vec<u8>), SpdyError> {
        let id = self.next_id;
        self.next_id += 2;
        let mut block = Vec::new();
        push_len(&mut block, headers.len());
        for (name, value) in headers {
            for text in [name.to_ascii_lowercase().as_str(), value] {
                push_len(&mut block, text.len());
                block.extend_from_slice(text.as_bytes());
            }
        }
        let mut compressed = Vec::with_capacity(block.len() + 64);
        self.headers
            .compress_vec(&block, &mut compressed, FlushCompress::Sync)?;
        let mut payload = Vec::with_capacity(10 + compressed.len());
        payload.extend_from_slice(&id.to_be_bytes());
        // No associated stream; priority 0 and no slot.
        payload.extend_from_slice(&[0; 6]);
        payload.extend_from_slice(&compressed);
        Ok((id, control(SYN_STREAM, if fin { FIN } else { 0 }, &payload)))
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

/// A control frame of `kind`.
#[must_use]
pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&[0x80, 3]);
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&length(payload.len()));
    frame.extend_from_slice(payload);
    frame
}

/// Data frames carrying `data` on `stream`, at most [`MAX_DATA`] each; `fin` on the last (an
/// empty `data` with `fin` only closes the stream).
#[must_use]
pub fn data(stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8 * (data.len() / MAX_DATA + 1));
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_DATA).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.push(if fin && i == last { FIN } else { 0 });
        out.extend_from_slice(&length(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// The 24-bit length field.
fn length(len: usize) -> [u8; 3] {
    let len = u32::try_from(len.min(0x00ff_ffff)).unwrap_or(0x00ff_ffff);
    let [_, a, b, c] = len.to_be_bytes();
    [a, b, c]
}

/// The next frame; `None` when the connection ends between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len =
        usize::try_from(u32::from_be_bytes([0, head[5], head[6], head[7]])).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    let flags = head[4];
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        return Ok(Some(Frame::Control {
            kind,
            flags,
            payload,
        }));
    }
    Ok(Some(Frame::Data {
        stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
        fin: flags & FIN != 0,
        data: payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back_as_written() {
        let mut wire = data(3, b"hello", true);
        wire.extend(control(PING, 0, &7u32.to_be_bytes()));
        let mut reader = wire.as_slice();
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: vec![0, 0, 0, 7]
            })
        );
        assert_eq!(read_frame(&mut reader).await.unwrap(), None, "clean end");
    }

    #[test]
    fn big_data_is_split_and_only_the_last_piece_ends_the_stream() {
        let wire = data(1, &vec![7u8; MAX_DATA + 10], true);
        assert_eq!(wire.len(), MAX_DATA + 10 + 16);
        assert_eq!(wire[4], 0, "first piece open");
        assert_eq!(&wire[5..8], &[1, 0, 0], "64 KiB");
        let second = 8 + MAX_DATA;
        assert_eq!(wire[second + 4], FIN);
        assert_eq!(&wire[second + 5..second + 8], &[0, 0, 10]);
        assert_eq!(data(1, &[], true), [0, 0, 0, 1, FIN, 0, 0, 0], "fin alone");
    }

    #[test]
    fn syn_stream_header_blocks_inflate_to_lower_case_pairs() {
        let mut client = Client::default();
        let (first, _) = client.open(&[("streamType", "error")], true).unwrap();
        let (second, frame) = client.open(&[("streamType", "stdout")], true).unwrap();
        assert_eq!((first, second), (1, 3));
        assert_eq!(&frame[..5], &[0x80, 3, 0, 1, FIN]);
        assert_eq!(&frame[8..12], &3u32.to_be_bytes());
        // A connection's first block inflates on its own (later ones continue its stream).
        let mut inflate = flate2::Decompress::new(true);
        let (_, first_frame) = Client::default()
            .open(&[("streamType", "error")], true)
            .unwrap();
        let mut out = Vec::with_capacity(256);
        inflate
            .decompress_vec(&first_frame[18..], &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        let expected = [
            &1u32.to_be_bytes()[..],
            &10u32.to_be_bytes(),
            b"streamtype",
            &5u32.to_be_bytes(),
            b"error",
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn oversized_or_foreign_frames_are_errors() {
        let mut huge = vec![0, 0, 0, 1, 0];
        huge.extend_from_slice(&length(MAX_FRAME + 1));
        assert!(matches!(
            read_frame(&mut huge.as_slice()).await,
            Err(SpdyError::TooLarge(_))
        ));
        let mut v2 = control(PING, 0, &[0; 4]);
        v2[1] = 2;
        assert!(matches!(
            read_frame(&mut v2.as_slice()).await,
            Err(SpdyError::Version(2))
        ));
        let cut = &data(1, b"abc", false)[..9];
        assert!(
            read_frame(&mut &cut[..]).await.is_err(),
            "cut inside a frame"
        );
    }
}
