//! Differential framing test: the corpus in `tests/framing/` holds ambiguous
//! HTTP/1.1 messages (split and folded headers, bare LF, whitespace before
//! colons, duplicate and conflicting framing headers, chunk extensions,
//! trailers). Each goes through the `http` handler to a lenient logging origin
//! (`requests/`) or comes back from it (`responses/`).
//!
//! The property, for every case: what the gateway passes on parses to exactly
//! one message at a strict parser (httparse for the head plus the strict body
//! framing check below, written apart from the gateway's own code), or the
//! gateway refuses it. Each file says which of the two it expects
//! (`# expect: forward | refuse | truncate`), so a gateway that refused
//! everything would fail too.
//!
//! File format: `# key: value` lines, then the message. Line breaks in the file
//! are layout only; the bytes are written with escapes (`\r`, `\n`, `\t`, `\\`,
//! `\xHH`), and `{backend}` stands for the origin's address.

mod handlers_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::proxy::handler::http::{HttpHandler, HttpHandlerOptions};
use gateway::proxy::relay::RelayOpts;
use gateway::proxy::router::Router;
use handlers_support::lenient::Lenient;
use handlers_support::serve;
use regex::bytes::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Case {
    name: String,
    expect: String,
    message: Vec<u8>,
}

fn corpus(dir: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/framing")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus {} too small", dir.display());
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let mut expect = None;
            let mut body = String::new();
            for line in text.lines() {
                match line.strip_prefix("# ") {
                    Some(meta) if body.is_empty() => {
                        if let Some(v) = meta.strip_prefix("expect: ") {
                            expect = Some(v.trim().to_string());
                        }
                    }
                    _ => body.push_str(line),
                }
            }
            Case {
                name: p.file_stem().unwrap().to_string_lossy().to_string(),
                expect: expect.unwrap_or_else(|| panic!("{}: no `# expect:`", p.display())),
                message: unescape(&body),
            }
        })
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let (byte, len) = match b[i + 1] {
                b'r' => (b'\r', 2),
                b'n' => (b'\n', 2),
                b't' => (b'\t', 2),
                b'\\' => (b'\\', 2),
                b'x' => (
                    u8::from_str_radix(&s[i + 2..i + 4], 16).expect("\\xHH escape"),
                    4,
                ),
                other => panic!("unknown escape \\{}", other as char),
            };
            out.push(byte);
            i += len;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

// ---- the strict parser ----

const TOKEN: &str = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+";

fn chunk_line() -> Regex {
    let quoted = r#""(?:[\t \x21\x23-\x5B\x5D-\x7E\x80-\xFF]|\\[\t \x21-\x7E\x80-\xFF])*""#;
    Regex::new(&format!(
        r"(?-u)^[0-9A-Fa-f]{{1,16}}(?:[ \t]*;[ \t]*{TOKEN}(?:[ \t]*=[ \t]*(?:{TOKEN}|{quoted}))?)*\r\n"
    ))
    .unwrap()
}

fn trailer_line() -> Regex {
    Regex::new(&format!(r"(?-u)^{TOKEN}:[\t \x21-\x7E\x80-\xFF]*\r\n")).unwrap()
}

/// How a strict recipient sees the bytes.
#[derive(Debug, PartialEq, Eq)]
enum Strict {
    /// Exactly one complete message, nothing after it.
    One,
    /// A message that has not ended (no complete message).
    Incomplete,
    /// Anything else: a framing error, or bytes after the message.
    Bad(String),
}

fn strict(bytes: &[u8], response: bool) -> Strict {
    // The head ends at the first empty line, however its line ends are written.
    let Some(end) = Regex::new(r"\n\r?\n").unwrap().find(bytes) else {
        return Strict::Incomplete;
    };
    let head = &bytes[..end.end()];
    // CRLF only: every LF after a CR, every CR before an LF.
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Strict::Bad("bare LF in head".into());
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Strict::Bad("bare CR in head".into());
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let lower = |hs: &[httparse::Header<'_>]| -> Vec<(String, Vec<u8>)> {
        hs.iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect()
    };
    let (parsed, code, version, headers) = if response {
        let mut r = httparse::Response::new(&mut hs);
        let parsed = r.parse(head);
        (parsed, r.code.unwrap_or(0), r.version, lower(r.headers))
    } else {
        let mut r = httparse::Request::new(&mut hs);
        let parsed = r.parse(head);
        (parsed, 0, r.version, lower(r.headers))
    };
    match parsed {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        other => return Strict::Bad(format!("head: {other:?}")),
    }
    let version = version.unwrap_or(1);
    let values = |n: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    let cl = values("content-length");
    let te = values("transfer-encoding");
    let body = &bytes[head.len()..];
    if !te.is_empty() && !cl.is_empty() {
        return Strict::Bad("Content-Length and Transfer-Encoding".into());
    }
    if cl.len() > 1 {
        return Strict::Bad("several Content-Length lines".into());
    }
    if response && (code == 204 || code == 304 || (100..200).contains(&code)) {
        return if body.is_empty() {
            Strict::One
        } else {
            Strict::Bad("body on a bodiless response".into())
        };
    }
    if let Some(v) = cl.first() {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Strict::Bad(format!("Content-Length {:?}", String::from_utf8_lossy(v)));
        }
        let n: usize = std::str::from_utf8(v).unwrap().parse().unwrap();
        return match body.len().cmp(&n) {
            std::cmp::Ordering::Equal => Strict::One,
            std::cmp::Ordering::Less => Strict::Incomplete,
            std::cmp::Ordering::Greater => Strict::Bad("bytes after the body".into()),
        };
    }
    if !te.is_empty() {
        if version == 0 {
            return Strict::Bad("Transfer-Encoding in HTTP/1.0".into());
        }
        let joined = te.join(&b","[..]);
        let codings: Vec<String> = String::from_utf8_lossy(&joined)
            .split(',')
            .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        let tok = Regex::new(&format!("^{TOKEN}$")).unwrap();
        if codings.is_empty() || codings.iter().any(|c| !tok.is_match(c.as_bytes())) {
            return Strict::Bad("bad transfer coding".into());
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        if codings.last().map(String::as_str) != Some("chunked") {
            // Close-delimited, allowed for responses only.
            return if response && chunked == 0 {
                Strict::One
            } else {
                Strict::Bad("chunked not last".into())
            };
        }
        if chunked > 1 {
            return Strict::Bad("chunked twice".into());
        }
        return strict_chunked(body);
    }
    if response || body.is_empty() {
        // A response without framing runs to the close; a request has no body.
        Strict::One
    } else {
        Strict::Bad("bytes after a bodiless request".into())
    }
}

fn strict_chunked(mut b: &[u8]) -> Strict {
    let (size_re, trailer_re) = (chunk_line(), trailer_line());
    loop {
        let Some(m) = size_re.find(b) else {
            return if b.contains(&b'\n') {
                Strict::Bad("chunk-size line".into())
            } else {
                Strict::Incomplete
            };
        };
        let line = &b[..m.end()];
        let hex: String = line
            .iter()
            .map(|&c| c as char)
            .take_while(char::is_ascii_hexdigit)
            .collect();
        let size = usize::from_str_radix(&hex, 16).unwrap();
        b = &b[m.end()..];
        if size == 0 {
            loop {
                if b.starts_with(b"\r\n") {
                    return if b.len() == 2 {
                        Strict::One
                    } else {
                        Strict::Bad("bytes after the body".into())
                    };
                }
                match trailer_re.find(b) {
                    Some(m) => b = &b[m.end()..],
                    None if b.contains(&b'\n') => return Strict::Bad("trailer line".into()),
                    None => return Strict::Incomplete,
                }
            }
        }
        if b.len() < size + 2 {
            return Strict::Incomplete;
        }
        if &b[size..size + 2] != b"\r\n" {
            return Strict::Bad("chunk data not followed by CRLF".into());
        }
        b = &b[size + 2..];
    }
}

#[test]
fn strict_parser_self_check() {
    let one = |s: &str| strict(s.as_bytes(), false);
    assert_eq!(
        one("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"),
        Strict::One
    );
    assert_eq!(
        one("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET"),
        Strict::Bad("bytes after the body".into())
    );
    assert_eq!(
        one(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"b\"\r\nab\r\n0\r\nX: y\r\n\r\n"
        ),
        Strict::One
    );
    assert_eq!(
        one("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"),
        Strict::Incomplete
    );
    assert!(matches!(
        one("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\rX\nab\r\n0\r\n\r\n"),
        Strict::Bad(_)
    ));
    assert!(matches!(
        one("POST / HTTP/1.1\nContent-Length: 0\n\n"),
        Strict::Bad(_)
    ));
}

// ---- running the corpus ----

async fn gateway() -> std::net::SocketAddr {
    let mut h = HttpHandler::new(HttpHandlerOptions::default(), Router::default());
    // Short limits: a case the gateway cannot make sense of ends quickly.
    h.set_relay_opts(RelayOpts {
        a_idle: Some(Duration::from_secs(2)),
        b_idle: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    serve(h).await.0
}

/// Send `bytes`, half-close, and read what comes back until the gateway closes.
async fn exchange(gw: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out))
        .await
        .expect("the gateway ends the exchange")
        .ok();
    out
}

#[tokio::test]
async fn request_corpus_forwards_one_message_or_refuses() {
    let gw = gateway().await;
    let mut failures = Vec::new();
    for case in corpus("requests") {
        let origin = Lenient::spawn().await;
        let msg = String::from_utf8_lossy(&case.message)
            .replace("{backend}", &origin.addr.to_string())
            .into_bytes();
        // Lossy would mangle bytes >= 0x80; the corpus is ASCII.
        assert!(
            case.message.is_ascii(),
            "{}: corpus must be ASCII",
            case.name
        );
        let reply = exchange(gw, &msg).await;
        let raw = origin.ended().await.concat();
        let seen = origin.targets();
        let status = String::from_utf8_lossy(reply.get(..12).unwrap_or(&reply)).to_string();
        let verdict = strict(&raw, false);
        let ok = match case.expect.as_str() {
            "forward" => status == "HTTP/1.1 200" && verdict == Strict::One && seen == ["/x"],
            "refuse" => {
                status.starts_with("HTTP/1.1 4")
                    && seen.is_empty()
                    && verdict != Strict::One
                    && !matches!(verdict, Strict::Bad(_))
            }
            other => panic!("{}: unknown expectation {other}", case.name),
        };
        if !ok {
            failures.push(format!(
                "{} (expect {}): client got {:?}, origin parsed {:?}, strict: {:?}, forwarded {:?}",
                case.name,
                case.expect,
                status,
                seen,
                verdict,
                String::from_utf8_lossy(&raw)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn response_corpus_passes_one_message_or_refuses() {
    let gw = gateway().await;
    let mut failures = Vec::new();
    for case in corpus("responses") {
        let origin = Lenient::spawn().await;
        origin.respond(&case.name, &case.message);
        let req = format!(
            "GET http://{}/resp/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.addr, case.name
        );
        let reply = exchange(gw, req.as_bytes()).await;
        let status = String::from_utf8_lossy(reply.get(..12).unwrap_or(&reply)).to_string();
        let verdict = strict(&reply, true);
        let ok = match case.expect.as_str() {
            "forward" => verdict == Strict::One && status == "HTTP/1.1 200",
            "refuse" => status == "HTTP/1.1 502",
            "truncate" => verdict == Strict::Incomplete && status == "HTTP/1.1 200",
            other => panic!("{}: unknown expectation {other}", case.name),
        };
        if !ok {
            failures.push(format!(
                "{} (expect {}): strict {:?}, client got {:?}",
                case.name,
                case.expect,
                verdict,
                String::from_utf8_lossy(&reply)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---- HTTP/1.0 clients (RFC 9112 §6.1: no transfer coding to a 1.0 recipient) ----

/// Like [`exchange`], and whether the gateway ended with a clean close (`false`:
/// a reset, or nothing within the limit).
async fn exchange_ending(gw: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let clean = matches!(
        tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await,
        Ok(Ok(_))
    );
    (out, clean)
}

/// The header fields of a response's head (names lower-cased) and its body as
/// sent (after the empty line).
fn split_reply(reply: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let end = (reply.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(reply)));
    let head = String::from_utf8_lossy(&reply[..end]);
    let fields = (head.split("\r\n").skip(1))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (fields, &reply[end + 4..])
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The payload of a response the strict parser accepted: chunks decoded, a
/// `Content-Length` body, or everything up to the close.
fn payload(reply: &[u8]) -> Vec<u8> {
    let (fields, mut body) = split_reply(reply);
    let chunked = field(&fields, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().trim_end().ends_with("chunked"));
    if !chunked {
        return match field(&fields, "content-length") {
            Some(n) => body[..n.parse::<usize>().unwrap()].to_vec(),
            None => body.to_vec(),
        };
    }
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let hex: String = (body[..eol].iter().map(|&c| c as char))
            .take_while(char::is_ascii_hexdigit)
            .collect();
        let size = usize::from_str_radix(&hex, 16).unwrap();
        body = &body[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Breaks if an HTTP/1.0 client is answered with chunk framing (it would take the
/// size lines for body bytes) or loses a byte of the body: a raw HTTP/1.0 request
/// through the handler to an origin that answers chunked (with an extension and
/// a trailer, as HTTP/1.1 origins may whatever the request's version) and to
/// one that answers with `Content-Length`.
#[tokio::test]
async fn http10_client_gets_the_exact_body_without_chunk_framing() {
    let gw = gateway().await;
    let origin = Lenient::spawn().await;
    origin.respond(
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-Kind: c\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
    );
    origin.respond(
        "length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Kind: l\r\n\r\nhello world",
    );
    for (name, ask_keep_alive) in [("chunked", false), ("chunked", true), ("length", false)] {
        let keep = if ask_keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            ""
        };
        let req = format!(
            "GET http://{}/resp/{name} HTTP/1.0\r\n{keep}\r\n",
            origin.addr
        );
        let (reply, clean) = exchange_ending(gw, req.as_bytes()).await;
        let text = String::from_utf8_lossy(&reply).to_string();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{name}: {text:?}");
        let (fields, body) = split_reply(&reply);
        assert_eq!(body, b"hello world", "{name}: {text:?}");
        assert!(
            clean,
            "{name}: the body did not end with a clean close: {text:?}"
        );
        assert_eq!(
            field(&fields, "transfer-encoding"),
            None,
            "{name}: {text:?}"
        );
        assert_eq!(field(&fields, "trailer"), None, "{name}: {text:?}");
        assert!(field(&fields, "x-kind").is_some(), "{name}: {text:?}");
        match name {
            // Decoded, so the end of the body is the close, and the client is told.
            "chunked" => {
                assert_eq!(field(&fields, "content-length"), None, "{text:?}");
                assert_eq!(field(&fields, "connection"), Some("close"), "{text:?}");
            }
            _ => assert_eq!(field(&fields, "content-length"), Some("11"), "{text:?}"),
        }
    }
}

/// Breaks if an HTTP/1.0 client gets any response of the corpus framed in a way
/// it cannot read, with other bytes than an HTTP/1.1 client would decode, or a
/// truncated body that ends like a whole one. For each case: a `forward` reaches
/// it decoded, with no transfer coding (a coding other than chunked cannot be
/// decoded here: `502`); a `refuse` is a `502` as for HTTP/1.1; a `truncate` ends
/// in a reset, since a close would end a close-delimited body cleanly.
#[tokio::test]
async fn response_corpus_reaches_an_http10_client_decoded_or_refused() {
    let gw = gateway().await;
    let mut failures = Vec::new();
    for case in corpus("responses") {
        let origin = Lenient::spawn().await;
        origin.respond(&case.name, &case.message);
        let req = |v: &str| {
            format!(
                "GET http://{}/resp/{} HTTP/{v}\r\n\r\n",
                origin.addr, case.name
            )
        };
        let reply11 = exchange(gw, req("1.1").as_bytes()).await;
        let (reply, clean) = exchange_ending(gw, req("1.0").as_bytes()).await;
        let status = String::from_utf8_lossy(reply.get(..12).unwrap_or(&reply)).to_string();
        let ok = match case.expect.as_str() {
            "forward" => {
                let (fields11, _) = split_reply(&reply11);
                let other_coding = field(&fields11, "transfer-encoding")
                    .is_some_and(|te| !te.to_ascii_lowercase().ends_with("chunked"));
                if other_coding {
                    status == "HTTP/1.1 502"
                } else {
                    let (fields, _) = split_reply(&reply);
                    status == "HTTP/1.1 200"
                        && clean
                        && field(&fields, "transfer-encoding").is_none()
                        && payload(&reply) == payload(&reply11)
                }
            }
            "refuse" => status == "HTTP/1.1 502",
            "truncate" => !clean && (reply.is_empty() || status == "HTTP/1.1 200"),
            other => panic!("{}: unknown expectation {other}", case.name),
        };
        if !ok {
            failures.push(format!(
                "{} (expect {}): HTTP/1.0 client got {:?} (clean close: {clean}), HTTP/1.1 client {:?}",
                case.name,
                case.expect,
                String::from_utf8_lossy(&reply),
                String::from_utf8_lossy(&reply11)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
