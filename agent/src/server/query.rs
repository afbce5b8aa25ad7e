//! Decoding what a request carries: query pairs (`application/x-www-form-urlencoded`, as Go's
//! `url.ParseQuery`), path segments (percent-decoding, `+` kept), and whether it asks for a
//! WebSocket.

/// The decoded `(key, value)` pairs of `query`, in order (a key without `=` has an empty value).
pub(super) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .into_iter()
        .flat_map(|encoded| encoded.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(name), url_decode(value))
        })
}

/// The decoded values of `key` in the url-encoded `query`.
pub(super) fn query_values<'a>(
    query: Option<&'a str>,
    key: &'a str,
) -> impl Iterator<Item = String> + 'a {
    query
        .into_iter()
        .flat_map(|encoded| encoded.split('&'))
        .filter_map(move |pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(name) == key).then(|| url_decode(value))
        })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
pub(super) fn url_decode(text: &str) -> String {
    decode(text, true)
}

/// A path segment's percent-decoding (`+` is itself).
pub(super) fn path_decode(text: &str) -> String {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `headers` ask for a WebSocket (`Connection: upgrade`, `Upgrade: websocket`).
pub(super) fn is_websocket(headers: &hyper::HeaderMap) -> bool {
    let has = |name: hyper::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(hyper::header::CONNECTION, "upgrade") && has(hyper::header::UPGRADE, "websocket")
}
