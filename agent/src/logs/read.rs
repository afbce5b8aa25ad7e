//! The container log reader behind the kubelet's `/containerLogs/{ns}/{pod}/{container}`
//! endpoint: the query's options, the CRI log line format and the writer that turns parsed lines
//! into the response body. Reading the file (tail, follow, rotation) is in `follow`.
//!
//! Reference: kubelet `pkg/kubelet/kuberuntime/logs/logs.go` (`NewLogOptions`, `parseCRILog`,
//! `logWriter`), the query decoding of `v1.PodLogOptions` (apimachinery's query conversions) and
//! `ValidatePodLogOptions`. Where upstream differs from a plain reading of the API:
//! - Booleans decode as apimachinery's query conversion does, not as `strconv.ParseBool`: only
//!   `false` and `0` (any case) are false, any other value, the empty one included, is true.
//! - The kubelet server's legacy `tail` key (`all` meaning every line) overrides `tailLines`.
//! - With `timestamps`, the timestamp of a logical line's first fragment prefixes it once
//!   (upstream since kubernetes#113481), re-formatted with nine fractional digits in the offset
//!   the runtime wrote (Go's `RFC3339NanoFixed`); `P` fragments are written without a newline.
//! - A line that is not in the CRI format is skipped with a debug log. Upstream picks the parser
//!   (CRI or Docker JSON) from the first line and fails the request when that line is neither;
//!   kernlet reads only CRI logs, so one bad line costs that line, not the response.

use std::{
    io::Write as _,
    ops::ControlFlow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper::body::Bytes;
use k8s_openapi::jiff::{Timestamp, civil::DateTime, fmt::temporal::Pieces, tz::Offset};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::follow::LogEnd;

/// What a log request asks for: `v1.PodLogOptions` as the kubelet's log reader uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `tailLines`: only the last N lines of the file (at least 0).
    pub tail_lines: Option<i64>,
    /// `limitBytes`: at most this many bytes of output (at least 1); the last line may be cut.
    pub limit_bytes: Option<i64>,
    /// `sinceSeconds` (relative to the request) or `sinceTime`: lines logged before are skipped.
    pub since: Option<SystemTime>,
    /// `timestamps`: each line is prefixed with its timestamp and a space.
    pub timestamps: bool,
    /// `follow`: after the end of the file, wait for more while the container runs.
    pub follow: bool,
    /// `previous`: the caller reads the previous instance's log instead of the current one.
    pub previous: bool,
}

/// Why a log query was refused. The message names the key and the value; it goes in the body
/// of the error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogQueryError {
    #[error("invalid {key} {value:?}: not an integer")]
    NotAnInteger { key: &'static str, value: String },
    #[error("invalid sinceTime {value:?}: not an RFC 3339 time")]
    NotATime { value: String },
    #[error("invalid {key} {value}: must be greater than or equal to 0")]
    Negative { key: &'static str, value: i64 },
    #[error("invalid {key} {value}: must be greater than 0")]
    NotPositive { key: &'static str, value: i64 },
    #[error("at most one of sinceTime or sinceSeconds may be specified")]
    SinceTwice,
}

impl LogQueryError {
    /// Whether the query decoded but failed validation: upstream answers 422 to those and 400 to
    /// values that do not decode.
    #[must_use]
    pub fn is_validation(&self) -> bool {
        matches!(
            self,
            Self::Negative { .. } | Self::NotPositive { .. } | Self::SinceTwice
        )
    }
}

/// The query keys kernlet reads; the first value of each counts, as in Go's query decoding.
#[derive(Default)]
struct Query {
    follow: Option<String>,
    previous: Option<String>,
    timestamps: Option<String>,
    tail_lines: Option<String>,
    tail: Option<String>,
    limit_bytes: Option<String>,
    since_seconds: Option<String>,
    since_time: Option<String>,
}

impl LogOptions {
    /// The options of a log request from its url-decoded query pairs; `now` anchors
    /// `sinceSeconds`. Unknown keys (`container`, `insecureSkipTLSVerifyBackend`, ...) are ignored.
    pub fn from_query(
        pairs: impl IntoIterator<Item = (String, String)>,
        now: SystemTime,
    ) -> Result<Self, LogQueryError> {
        let mut query = Query::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "follow" => &mut query.follow,
                "previous" => &mut query.previous,
                "timestamps" => &mut query.timestamps,
                "tailLines" => &mut query.tail_lines,
                "tail" => &mut query.tail,
                "limitBytes" => &mut query.limit_bytes,
                "sinceSeconds" => &mut query.since_seconds,
                "sinceTime" => &mut query.since_time,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        // The kubelet server's backwards-compatible `tail`; `all` is the same as no limit.
        let tail_lines = match query.tail.as_deref() {
            Some("all") => None,
            Some(tail) if !tail.is_empty() => Some(integer("tailLines", tail)?),
            _ => query
                .tail_lines
                .as_deref()
                .map(|value| integer("tailLines", value))
                .transpose()?,
        };
        let limit_bytes = query
            .limit_bytes
            .as_deref()
            .map(|value| integer("limitBytes", value))
            .transpose()?;
        let since_seconds = query
            .since_seconds
            .as_deref()
            .map(|value| integer("sinceSeconds", value))
            .transpose()?;
        let since_time = match query.since_time.as_deref() {
            // metav1.Time reads an empty or `null` query value as no time.
            None | Some("" | "null") => None,
            Some(value) => {
                Some(
                    value
                        .parse::<Timestamp>()
                        .map_err(|_| LogQueryError::NotATime {
                            value: value.to_owned(),
                        })?,
                )
            }
        };
        validate(tail_lines, limit_bytes, since_seconds, since_time.is_some())?;
        let since = match (since_seconds, since_time) {
            // Validated positive; a span `SystemTime` cannot hold means every line.
            (Some(seconds), _) => now.checked_sub(Duration::from_secs(seconds.unsigned_abs())),
            (None, Some(time)) => system_time(time),
            (None, None) => None,
        };
        Ok(Self {
            tail_lines,
            limit_bytes,
            since,
            timestamps: boolean(query.timestamps.as_deref()),
            follow: boolean(query.follow.as_deref()),
            previous: boolean(query.previous.as_deref()),
        })
    }
}

/// `ValidatePodLogOptions`.
fn validate(
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    since_seconds: Option<i64>,
    since_time: bool,
) -> Result<(), LogQueryError> {
    if let Some(value) = tail_lines.filter(|&n| n < 0) {
        return Err(LogQueryError::Negative {
            key: "tailLines",
            value,
        });
    }
    if let Some(value) = limit_bytes.filter(|&n| n < 1) {
        return Err(LogQueryError::NotPositive {
            key: "limitBytes",
            value,
        });
    }
    if since_seconds.is_some() && since_time {
        return Err(LogQueryError::SinceTwice);
    }
    if let Some(value) = since_seconds.filter(|&n| n < 1) {
        return Err(LogQueryError::NotPositive {
            key: "sinceSeconds",
            value,
        });
    }
    Ok(())
}

/// apimachinery's query boolean: absent, `false` or `0` (any case) is false, anything else true.
fn boolean(value: Option<&str>) -> bool {
    value.is_some_and(|v| !(v.eq_ignore_ascii_case("false") || v == "0"))
}

/// Go's `strconv.ParseInt(value, 10, 64)`: an optional sign and decimal digits.
fn integer(key: &'static str, value: &str) -> Result<i64, LogQueryError> {
    value.parse().map_err(|_| LogQueryError::NotAnInteger {
        key,
        value: value.to_owned(),
    })
}

/// `time` as a `SystemTime`; `None` when out of its range (never for a real log time).
fn system_time(time: Timestamp) -> Option<SystemTime> {
    let nanos = time.as_nanosecond();
    let since_epoch = Duration::from_nanos_u128(nanos.unsigned_abs());
    if nanos < 0 {
        UNIX_EPOCH.checked_sub(since_epoch)
    } else {
        UNIX_EPOCH.checked_add(since_epoch)
    }
}

/// `time` as a jiff timestamp, clamped to jiff's range.
fn timestamp(time: SystemTime) -> Timestamp {
    let nanos = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    };
    Timestamp::from_nanosecond(nanos).unwrap_or(if nanos < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// A CRI log line's timestamp: the instant, and the civil time and offset the runtime wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogTime {
    pub(crate) instant: Timestamp,
    civil: DateTime,
    offset: Offset,
}

impl LogTime {
    /// Parses an RFC 3339 time with optional fractional seconds (Go's `RFC3339NanoLenient`).
    fn parse(text: &[u8]) -> Option<Self> {
        let pieces = Pieces::parse(text).ok()?;
        let civil = pieces.date().to_datetime(pieces.time()?);
        let offset = pieces.to_numeric_offset()?;
        let instant = offset.to_timestamp(civil).ok()?;
        Some(Self {
            instant,
            civil,
            offset,
        })
    }

    /// Go's `RFC3339NanoFixed` in the written offset: nine fractional digits, `Z` for UTC.
    fn write_to(&self, out: &mut Vec<u8>) {
        let c = self.civil;
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}",
            c.year(),
            c.month(),
            c.day(),
            c.hour(),
            c.minute(),
            c.second(),
            c.subsec_nanosecond()
        );
        let seconds = self.offset.seconds();
        if seconds == 0 {
            out.extend_from_slice(b"Z");
        } else {
            let sign = if seconds < 0 { '-' } else { '+' };
            let minutes = seconds.unsigned_abs() / 60;
            let _ = write!(out, "{sign}{:02}:{:02}", minutes / 60, minutes % 60);
        }
    }
}

/// One parsed CRI log line: `<RFC 3339 time> <stdout|stderr> <tag>[:<tag>...] <content>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CriLine<'a> {
    pub(crate) time: LogTime,
    pub(crate) stderr: bool,
    /// Tag `P`: a fragment the runtime split; the next line continues it.
    pub(crate) partial: bool,
    /// The content; its newline is kept on a full line and dropped on a partial one.
    pub(crate) content: &'a [u8],
}

/// Why a line is not in the CRI format (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CriLineError {
    #[error("no timestamp")]
    NoTimestamp,
    #[error("timestamp is not RFC 3339")]
    BadTimestamp,
    #[error("no stream type")]
    NoStream,
    #[error("stream type is neither stdout nor stderr")]
    BadStream,
    #[error("no log tag")]
    NoTag,
}

/// Parses one line of a CRI log, its newline included if it has one (`parseCRILog`).
pub(crate) fn parse_cri_line(line: &[u8]) -> Result<CriLine<'_>, CriLineError> {
    let (time, rest) = split_space(line).ok_or(CriLineError::NoTimestamp)?;
    let time = LogTime::parse(time).ok_or(CriLineError::BadTimestamp)?;
    let (stream, rest) = split_space(rest).ok_or(CriLineError::NoStream)?;
    let stderr = match stream {
        b"stdout" => false,
        b"stderr" => true,
        _ => return Err(CriLineError::BadStream),
    };
    let (tags, mut content) = split_space(rest).ok_or(CriLineError::NoTag)?;
    // Tags are `:`-separated for forward compatibility; only the first is defined.
    let partial = tags.split(|&b| b == b':').next() == Some(b"P");
    if partial {
        content = content.strip_suffix(b"\n").unwrap_or(content);
    }
    Ok(CriLine {
        time,
        stderr,
        partial,
        content,
    })
}

fn split_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Flush the output once this much is pending, so one response chunk stays small.
pub(crate) const FLUSH_AT: usize = 32 * 1024;

/// Turns log lines into response bytes, applying `since`, `timestamps`, `limitBytes` and the
/// line count of a `tailLines` read without `follow` (upstream's `logWriter` and limited mode).
pub(crate) struct Output<'a> {
    timestamps: bool,
    since: Option<Timestamp>,
    /// Bytes `limitBytes` still allows.
    remaining: Option<u64>,
    /// Lines a `tailLines` read without `follow` still writes.
    lines_left: Option<u64>,
    /// Whether the last content written ended a line, so the next one gets a timestamp.
    at_line_start: bool,
    pending: Vec<u8>,
    tx: &'a mpsc::Sender<Bytes>,
    cancel: &'a CancellationToken,
}

impl<'a> Output<'a> {
    pub(crate) fn new(
        options: &LogOptions,
        tx: &'a mpsc::Sender<Bytes>,
        cancel: &'a CancellationToken,
    ) -> Self {
        let positive = |n: Option<i64>| n.map(|n| u64::try_from(n).unwrap_or(0));
        Self {
            timestamps: options.timestamps,
            since: options.since.map(timestamp),
            remaining: positive(options.limit_bytes),
            lines_left: positive(options.tail_lines).filter(|_| !options.follow),
            at_line_start: true,
            pending: Vec::with_capacity(FLUSH_AT),
            tx,
            cancel,
        }
    }

    /// Whether nothing more may be written: the line count or the byte limit is used up.
    pub(crate) fn exhausted(&self) -> Option<LogEnd> {
        if self.remaining == Some(0) {
            Some(LogEnd::LimitReached)
        } else if self.lines_left == Some(0) {
            Some(LogEnd::Eof)
        } else {
            None
        }
    }

    /// Adds one raw line of the file to the pending output; a malformed one is skipped.
    pub(crate) fn line(&mut self, raw: &[u8]) -> ControlFlow<LogEnd> {
        let line = match parse_cri_line(raw) {
            Ok(line) => line,
            Err(reason) => {
                tracing::debug!(%reason, line = %String::from_utf8_lossy(raw),
                    "skipping a container log line not in the CRI format");
                return ControlFlow::Continue(());
            }
        };
        if let Some(lines) = &mut self.lines_left {
            *lines = lines.saturating_sub(1);
        }
        if self.since.is_some_and(|since| line.time.instant < since) {
            return self
                .exhausted()
                .map_or(ControlFlow::Continue(()), ControlFlow::Break);
        }
        let start = self.pending.len();
        if self.timestamps && self.at_line_start {
            line.time.write_to(&mut self.pending);
            self.pending.extend_from_slice(b" ");
        }
        self.pending.extend_from_slice(line.content);
        self.at_line_start = line.content.ends_with(b"\n");
        if let Some(remaining) = &mut self.remaining {
            let written = (self.pending.len() - start) as u64;
            if written > *remaining {
                self.pending.truncate(start + *remaining as usize);
            }
            *remaining = remaining.saturating_sub(written);
        }
        self.exhausted()
            .map_or(ControlFlow::Continue(()), ControlFlow::Break)
    }

    /// Resolves when the request is cancelled.
    pub(crate) async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Resolves when the receiver of the output is dropped.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Whether enough output is pending to send it now.
    pub(crate) fn full(&self) -> bool {
        self.pending.len() >= FLUSH_AT
    }

    /// Sends the pending output; stops when the receiver is gone or the request is cancelled.
    pub(crate) async fn flush(&mut self) -> ControlFlow<LogEnd> {
        if self.pending.is_empty() {
            return ControlFlow::Continue(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(FLUSH_AT),
        ));
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => ControlFlow::Break(LogEnd::Cancelled),
            sent = self.tx.send(chunk) => match sent {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(LogEnd::ReceiverGone),
            },
        }
    }
}
