//! Rewriting messages for the next hop: hop-by-hop headers dropped (RFC 9110
//! §7.6.1), `Content-Length` re-rendered once in canonical form, keep-alive and
//! upgrade decided, credentials checked.

use super::super::framing::{self, content_length, header, header_tokens};
use super::head::{RequestHead, ResponseHead};
use super::uri::Uri;
use crate::config::auth::AuthConfig;

pub(super) fn wants_keep_alive(version: u8, headers: &[(String, Vec<u8>)]) -> bool {
    let mut tokens = header_tokens(headers, "connection");
    tokens.extend(header_tokens(headers, "proxy-connection"));
    if tokens.iter().any(|t| t == "close") {
        return false;
    }
    version >= 1 || tokens.iter().any(|t| t == "keep-alive")
}

pub(super) fn is_upgrade(headers: &[(String, Vec<u8>)]) -> bool {
    header(headers, "upgrade").is_some()
        && header_tokens(headers, "connection")
            .iter()
            .any(|t| t == "upgrade")
}

pub(super) fn authorized(auth: &AuthConfig, head: &RequestHead) -> bool {
    header(&head.headers, "proxy-authorization").is_some_and(|v| auth.matches_basic(v))
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
/// `Transfer-Encoding` is not among them here: bodies pass through verbatim, so
/// their framing header travels with them.
pub(super) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
];

/// Whether a header stays on this hop. `Connection` tokens add to the list, but
/// never a framing header (see [`framing`]): those are ignored as tokens.
/// `Content-Length` is dropped here too, and re-rendered once in canonical form.
pub(super) fn is_hop_by_hop(name: &str, connection_tokens: &[String], keep_upgrade: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    if keep_upgrade && lower == "upgrade" {
        return false;
    }
    if framing::is_framing_header(&lower) {
        return false;
    }
    HOP_BY_HOP.contains(&lower.as_str()) || connection_tokens.contains(&lower)
}

/// Push the head's headers that travel on, with `Content-Length` in canonical
/// form (one line, one number) when it is valid; an invalid one only survives on
/// messages without a body (a `HEAD` or `304` answer), where it frames nothing.
/// `Host` is left out of requests: it is rewritten from the URI.
pub(super) fn push_end_to_end(
    out: &mut Vec<u8>,
    headers: &[(String, Vec<u8>)],
    upgrade: bool,
    request: bool,
) {
    let tokens = header_tokens(headers, "connection");
    let length = content_length(headers).ok().flatten();
    for (name, value) in headers {
        let canonical_cl = length.is_some() && name.eq_ignore_ascii_case("content-length");
        let host = request && name.eq_ignore_ascii_case("host");
        if canonical_cl || host || is_hop_by_hop(name, &tokens, upgrade) {
            continue;
        }
        push_header(out, name, value);
    }
    if let Some(n) = length {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
}

pub(super) fn render_request(
    head: &RequestHead,
    uri: &Uri,
    keep_alive: bool,
    upgrade: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!("{} {} HTTP/1.{}\r\n", head.method, uri.path, head.version).as_bytes(),
    );
    out.extend_from_slice(format!("Host: {}\r\n", uri.host_header).as_bytes());
    push_end_to_end(&mut out, &head.headers, upgrade, true);
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The response head for a client speaking HTTP/1.`client_version`. An HTTP/1.0
/// client assumes the connection closes after the response unless told
/// otherwise, so a kept connection is announced with `Connection: keep-alive`;
/// it gets no `Transfer-Encoding` (nor `Trailer`): the handler decodes a chunked
/// body for it (RFC 9112 §6.1).
pub(super) fn render_response(
    resp: &ResponseHead,
    keep_alive: bool,
    client_version: u8,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", resp.code, resp.reason).as_bytes());
    let upgrade = resp.code == 101;
    if client_version == 0 {
        let coding = |n: &str| {
            n.eq_ignore_ascii_case("transfer-encoding") || n.eq_ignore_ascii_case("trailer")
        };
        let kept: Vec<(String, Vec<u8>)> = (resp.headers.iter())
            .filter(|(n, _)| !coding(n))
            .cloned()
            .collect();
        push_end_to_end(&mut out, &kept, upgrade, false);
    } else {
        push_end_to_end(&mut out, &resp.headers, upgrade, false);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !keep_alive && resp.code >= 200 {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if keep_alive && client_version == 0 && resp.code >= 200 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub(super) fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
