//! HTTP/1.x message framing, by the rules of RFC 9112 as HAProxy and nginx apply
//! them.
//!
//! A proxy and the server behind it must agree on where each message ends; where
//! they can disagree, one request becomes two at the server (request smuggling) or
//! a response swallows the next one (response desync). So every framing decision
//! of the `http` handler is made here, strictly, and anything ambiguous is refused
//! (`400` to a client, `502` for a target) instead of being passed on for the
//! next hop to guess:
//!
//! * `Content-Length` must be digits; several values (lines or a list) must all be
//!   the same number. It is forwarded as one canonical `Content-Length: N`.
//! * `Transfer-Encoding` must be a list of tokens ending in `chunked`, with
//!   `chunked` only once, and never next to `Content-Length`, nor in an HTTP/1.0
//!   message (RFC 9112 §6.1: such framing is faulty). A response whose transfer
//!   coding does not end in `chunked` is delimited by the close of the connection
//!   (§6.3, rule 4).
//! * Framing headers are never hop-by-hop: a `Connection` token naming
//!   `Content-Length` or `Transfer-Encoding` is **ignored** (the header is kept and
//!   forwarded), because dropping it would leave the body with no framing at the
//!   next hop. (Ignoring is what HAProxy does; refusing would break nothing
//!   legitimate either, but would turn a harmless oddity into an error.)
//! * Chunk-size lines follow §7.1 exactly: `1*HEXDIG *( BWS ";" BWS name [ BWS "="
//!   BWS ( token / quoted-string ) ] ) CRLF`. A bare CR or LF, a space inside the
//!   number, a missing name: refused. Chunk data must end in CRLF.
//! * Trailer lines are `token ":" value CRLF` (no obs-fold, no whitespace before the
//!   colon, no control characters), at most [`MAX_TRAILERS`] of them, and never a
//!   framing header.
//!
//! The head itself is parsed by `httparse`, which already refuses obs-fold,
//! whitespace before a colon and control characters; heads are re-rendered with
//! CRLF line ends, so bare LFs in a received head never reach the next hop.

/// How a message body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

/// Header fields of one head, as received (name, raw value).
pub(super) type Headers = [(String, Vec<u8>)];

/// Most trailer lines accepted after a chunked body.
pub(super) const MAX_TRAILERS: usize = 128;

/// First value of a header (names are case-insensitive).
pub(super) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Comma-separated tokens of every instance of a header, lower-cased.
pub(super) fn header_tokens(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The headers that frame a body: a `Connection` token never removes them.
pub(super) fn is_framing_header(lower_name: &str) -> bool {
    lower_name == "content-length" || lower_name == "transfer-encoding"
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The elements of every instance of a list header, strictly: split on commas,
/// optional whitespace trimmed (SP/HTAB only), empty elements skipped as RFC 9110
/// §5.6.1 allows. `None` when the header is absent.
fn list(headers: &Headers, name: &str) -> Option<Vec<Vec<u8>>> {
    let mut out: Option<Vec<Vec<u8>>> = None;
    for (_, v) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
        let items = out.get_or_insert_with(Vec::new);
        for item in v.split(|&b| b == b',') {
            let item = trim_ows(item);
            if !item.is_empty() {
                items.push(item.to_vec());
            }
        }
    }
    out
}

/// `Content-Length`: `Ok(None)` when absent; an error unless every value is the
/// same run of digits (RFC 9110 §8.6).
pub(super) fn content_length(headers: &Headers) -> Result<Option<u64>, String> {
    let Some(values) = list(headers, "content-length") else {
        return Ok(None);
    };
    let mut value = None;
    for v in &values {
        let n = std::str::from_utf8(v)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("invalid Content-Length {:?}", String::from_utf8_lossy(v)))?;
        if value.is_some_and(|v| v != n) {
            return Err("conflicting Content-Length values".into());
        }
        value = Some(n);
    }
    value
        .map(Some)
        .ok_or_else(|| "empty Content-Length".to_string())
}

/// `Transfer-Encoding`: `Ok(None)` when absent, else whether it ends in
/// `chunked`. Malformed codings, an empty value and `chunked` anywhere but last
/// are errors.
fn transfer_encoding(headers: &Headers) -> Result<Option<bool>, String> {
    let Some(codings) = list(headers, "transfer-encoding") else {
        return Ok(None);
    };
    if codings.is_empty() {
        return Err("empty Transfer-Encoding".into());
    }
    for c in &codings {
        if !is_token(c) {
            return Err(format!(
                "invalid transfer coding {:?}",
                String::from_utf8_lossy(c)
            ));
        }
    }
    let chunked = |c: &Vec<u8>| c.eq_ignore_ascii_case(b"chunked");
    let n = codings.iter().filter(|c| chunked(c)).count();
    let last = codings.last().is_some_and(chunked);
    if n > 1 || (n == 1 && !last) {
        return Err("chunked is not the final transfer coding, or appears twice".into());
    }
    Ok(Some(last))
}

/// Request body framing (RFC 9112 §6.3), strict: anything ambiguous is an error
/// (answered with `400`).
pub(super) fn request_framing(version: u8, headers: &Headers) -> Result<Framing, String> {
    let te = transfer_encoding(headers)?;
    let cl = content_length(headers)?;
    match (te, cl) {
        (Some(_), Some(_)) => Err("both Transfer-Encoding and Content-Length".into()),
        (Some(_), None) if version == 0 => Err("Transfer-Encoding in an HTTP/1.0 request".into()),
        (Some(true), None) => Ok(Framing::Chunked),
        (Some(false), None) => Err("Transfer-Encoding without final chunked".into()),
        (None, Some(0) | None) => Ok(Framing::None),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// Response body framing (RFC 9112 §6.3), strict like requests: conflicting or
/// malformed framing is an error (answered with `502`).
pub(super) fn response_framing(
    version: u8,
    code: u16,
    headers: &Headers,
    request_was_head: bool,
) -> Result<Framing, String> {
    if request_was_head || (100..200).contains(&code) || code == 204 || code == 304 {
        return Ok(Framing::None);
    }
    let te = transfer_encoding(headers)?;
    let cl = content_length(headers)?;
    match (te, cl) {
        (Some(_), Some(_)) => Err("both Transfer-Encoding and Content-Length".into()),
        (Some(_), None) if version == 0 => Err("Transfer-Encoding in an HTTP/1.0 response".into()),
        (Some(true), None) => Ok(Framing::Chunked),
        (Some(false), None) | (None, None) => Ok(Framing::Close),
        (None, Some(0)) => Ok(Framing::None),
        (None, Some(n)) => Ok(Framing::Length(n)),
    }
}

/// A chunk-size line, terminator included: `1a;name=value\r\n` → 26.
pub(super) fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or("chunk-size line not ended by CRLF")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("bad chunk size");
    }
    // 15 hex digits: below 2^60, so the sum below cannot overflow.
    if digits > 15 {
        return Err("chunk size too large");
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).ok_or("bad chunk size")?;
        size = size * 16 + u64::from(v);
    }
    chunk_extensions(&line[digits..])?;
    Ok(size)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, the whole rest of the line.
fn chunk_extensions(mut s: &[u8]) -> Result<(), &'static str> {
    const BAD: &str = "bad chunk extension";
    let skip_ws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    };
    let take_token = |s: &mut &[u8]| -> Result<(), &'static str> {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 {
            return Err(BAD);
        }
        *s = &s[n..];
        Ok(())
    };
    loop {
        if s.is_empty() {
            return Ok(());
        }
        // Whitespace only before a `;` (BWS), never trailing.
        skip_ws(&mut s);
        s = s.strip_prefix(b";").ok_or(BAD)?;
        skip_ws(&mut s);
        take_token(&mut s)?;
        skip_ws(&mut s);
        if let Some(rest) = s.strip_prefix(b"=") {
            s = rest;
            skip_ws(&mut s);
            if let Some(rest) = s.strip_prefix(b"\"") {
                s = quoted_string_rest(rest).ok_or(BAD)?;
            } else {
                take_token(&mut s)?;
            }
        }
    }
}

/// After an opening quote: the input past the closing quote.
fn quoted_string_rest(mut s: &[u8]) -> Option<&[u8]> {
    loop {
        match s {
            [b'"', rest @ ..] => return Some(rest),
            [b'\\', c, rest @ ..] if *c == b'\t' || *c >= 0x20 && *c != 0x7f => s = rest,
            [c, rest @ ..] if *c == b'\t' || (*c >= 0x20 && *c != 0x7f && *c != b'\\') => s = rest,
            _ => return None,
        }
    }
}

/// One line of a trailer section, terminator included. `Ok(true)` for the empty
/// line that ends it.
pub(super) fn trailer_line(line: &[u8]) -> Result<bool, &'static str> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or("trailer line not ended by CRLF")?;
    if line.is_empty() {
        return Ok(true);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or("bad trailer field")?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err("bad trailer field name");
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("bad trailer field value");
    }
    if is_framing_header(&String::from_utf8_lossy(name).to_ascii_lowercase()) {
        return Err("framing header in trailers");
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn request_framing_is_strict() {
        let f = |v, l: &[(&str, &str)]| request_framing(v, &h(l));
        assert_eq!(f(1, &[("Content-Length", "5")]), Ok(Framing::Length(5)));
        assert_eq!(f(1, &[("Content-Length", "5, 5")]), Ok(Framing::Length(5)));
        assert_eq!(f(1, &[("Content-Length", "0")]), Ok(Framing::None));
        assert_eq!(f(1, &[]), Ok(Framing::None));
        assert_eq!(
            f(1, &[("Transfer-Encoding", "gzip, chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f(
                1,
                &[
                    ("Transfer-Encoding", "gzip"),
                    ("transfer-encoding", "chunked")
                ]
            ),
            Ok(Framing::Chunked)
        );
        for bad in [
            &[("Content-Length", "5"), ("Content-Length", "6")][..],
            &[("Content-Length", "5, 6")],
            &[("Content-Length", "+5")],
            &[("Content-Length", "0x5")],
            &[("Content-Length", "5 5")],
            &[("Content-Length", "")],
            &[("Content-Length", "99999999999999999999999")],
            &[("Transfer-Encoding", "chunked, gzip")],
            &[("Transfer-Encoding", "chunked, chunked")],
            &[("Transfer-Encoding", "")],
            &[("Transfer-Encoding", "chunked\x0b")],
            &[("Transfer-Encoding", "\"chunked\"")],
            &[("Transfer-Encoding", "xchunked")],
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
        ] {
            assert!(f(1, bad).is_err(), "{bad:?}");
        }
        assert!(f(0, &[("Transfer-Encoding", "chunked")]).is_err());
    }

    #[test]
    fn response_framing_rules() {
        let f = |v, code, l: &[(&str, &str)]| response_framing(v, code, &h(l), false);
        assert_eq!(f(1, 200, &[]), Ok(Framing::Close));
        assert_eq!(
            f(1, 200, &[("Transfer-Encoding", "gzip")]),
            Ok(Framing::Close)
        );
        assert_eq!(
            f(1, 200, &[("Transfer-Encoding", "chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(f(1, 204, &[("Content-Length", "x")]), Ok(Framing::None));
        assert!(f(1, 200, &[("Content-Length", "1"), ("Content-Length", "2")]).is_err());
        assert!(
            f(
                1,
                200,
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "2")]
            )
            .is_err()
        );
        assert!(f(0, 200, &[("Transfer-Encoding", "chunked")]).is_err());
        assert_eq!(
            response_framing(1, 200, &h(&[("Content-Length", "9")]), true),
            Ok(Framing::None)
        );
    }

    #[test]
    fn chunk_lines() {
        assert_eq!(chunk_size(b"1a\r\n"), Ok(26));
        assert_eq!(chunk_size(b"1A;name=value\r\n"), Ok(26));
        assert_eq!(chunk_size(b"5 ; a = \"q \\\" x\" ;b\r\n"), Ok(5));
        assert_eq!(chunk_size(b"0000000000000005\r\n").ok(), None);
        assert_eq!(chunk_size(b"000000000000005\r\n"), Ok(5));
        for bad in [
            &b"5\rXYZ\n"[..],
            b"5\n",
            b"5\r\r\n",
            b"5 \r\n",
            b"5;a=b \r\n",
            b" 5\r\n",
            b"5 5\r\n",
            b"x\r\n",
            b"\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"5;\r\n",
            b"5;=v\r\n",
            b"5;a=\r\n",
            b"5;a=\"x\r\n",
            b"5;a b\r\n",
            b"5;a=\"\x01\"\r\n",
            b"5,a\r\n",
            b"ffffffffffffffff\r\n",
        ] {
            assert!(
                chunk_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailers() {
        assert_eq!(trailer_line(b"\r\n"), Ok(true));
        assert_eq!(trailer_line(b"X-Sum: abc\r\n"), Ok(false));
        for bad in [
            &b"\n"[..],
            b"X-Sum: abc\n",
            b" folded\r\n",
            b"X-Sum : abc\r\n",
            b"no colon\r\n",
            b"X: a\rb\r\n",
            b"Content-Length: 5\r\n",
            b"transfer-encoding: chunked\r\n",
        ] {
            assert!(
                trailer_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn line_parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = chunk_size(&data);
            let _ = trailer_line(&data);
        }
    }
}
