//! Unit tests of the HTTP handler's parsing and rewriting.
use super::*;
use crate::config::auth::AuthConfig;

fn req(text: &str) -> RequestHead {
    match parse_request(text.as_bytes()) {
        Ok(Some((h, _))) => h,
        other => panic!("{other:?}"),
    }
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = parse_request(&data);
        let _ = parse_response(&data);
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = parse_absolute_uri(text);
            let _ = parse_authority(text, Some(80));
        }
    }
}

#[test]
fn absolute_uris() {
    let u = parse_absolute_uri("http://example.com/a?b=1#frag").unwrap();
    assert_eq!(u.authority, "example.com:80");
    assert_eq!(u.host_header, "example.com");
    assert_eq!(u.path, "/a?b=1");
    let u = parse_absolute_uri("HTTP://user:pw@[::1]:8080?x").unwrap();
    assert_eq!(u.authority, "[::1]:8080");
    assert_eq!(u.host_header, "[::1]:8080");
    assert_eq!(u.path, "/?x");
    assert_eq!(parse_absolute_uri("https://x/"), Err(UriError::Scheme));
    assert_eq!(parse_absolute_uri("/local"), Err(UriError::Invalid));
    assert_eq!(parse_absolute_uri("http://:80/"), Err(UriError::Invalid));
    assert_eq!(parse_absolute_uri("http://a b/"), Err(UriError::Invalid));
    assert_eq!(parse_absolute_uri("http://h:0/"), Err(UriError::Invalid));
}

#[test]
fn connect_authorities() {
    assert_eq!(parse_authority("h:443", None).as_deref(), Some("h:443"));
    assert_eq!(
        parse_authority("[::1]:443", None).as_deref(),
        Some("[::1]:443")
    );
    assert_eq!(parse_authority("h", None), None);
    assert_eq!(parse_authority("[zz]:1", None), None);
    assert_eq!(parse_authority("h:99999", None), None);
}

#[test]
fn request_rewrite_drops_hop_by_hop() {
    let h = req(
        "GET http://h:81/p HTTP/1.1\r\nHost: wrong\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n",
    );
    let uri = parse_absolute_uri(&h.target).unwrap();
    let out = String::from_utf8(render_request(&h, &uri, true, false)).unwrap();
    assert_eq!(out, "GET /p HTTP/1.1\r\nHost: h:81\r\nAccept: */*\r\n\r\n");
}

#[test]
fn connection_never_removes_framing_headers() {
    // The smuggling payload of issue 13: `Connection: content-length` used to
    // drop the length and leave the body to be read as the next request.
    let h = req(
        "POST http://h/a HTTP/1.1\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
    );
    let uri = parse_absolute_uri(&h.target).unwrap();
    let out = String::from_utf8(render_request(&h, &uri, true, false)).unwrap();
    assert_eq!(
        out,
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
    );
    let r = ResponseHead {
        code: 200,
        reason: "OK".into(),
        version: 1,
        headers: vec![
            ("Connection".into(), b"Transfer-Encoding".to_vec()),
            ("Transfer-Encoding".into(), b"chunked".to_vec()),
        ],
    };
    let out = String::from_utf8(render_response(&r, true, 1)).unwrap();
    assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
}

#[test]
fn http10_keep_alive_is_announced() {
    let r = ResponseHead {
        code: 200,
        reason: "OK".into(),
        version: 1,
        headers: vec![("Content-Length".into(), b"2".to_vec())],
    };
    let out = String::from_utf8(render_response(&r, true, 0)).unwrap();
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
    );
    let out = String::from_utf8(render_response(&r, true, 1)).unwrap();
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
}

#[test]
fn basic_auth() {
    let auth = AuthConfig {
        username: "user".into(),
        password: crate::config::auth::Secret("p:ss".into()),
    };
    // "user:p:ss"
    let ok = req("GET http://h/ HTTP/1.1\r\nProxy-Authorization: basic dXNlcjpwOnNz\r\n\r\n");
    assert!(authorized(&auth, &ok));
    let bad = req("GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n");
    assert!(!authorized(&auth, &bad));
    let garbage = req("GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n");
    assert!(!authorized(&auth, &garbage));
    let none = req("GET http://h/ HTTP/1.1\r\n\r\n");
    assert!(!authorized(&auth, &none));
}

#[test]
fn response_rewrite() {
    let r = ResponseHead {
        code: 200,
        reason: "OK".into(),
        version: 0,
        headers: vec![
            ("Keep-Alive".into(), b"timeout=5".to_vec()),
            ("Connection".into(), b"keep-alive".to_vec()),
            ("Transfer-Encoding".into(), b"chunked".to_vec()),
        ],
    };
    let out = String::from_utf8(render_response(&r, false, 1)).unwrap();
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn keep_alive_rules() {
    let h = |s: &str| req(s).headers;
    assert!(wants_keep_alive(1, &h("GET / HTTP/1.1\r\n\r\n")));
    assert!(!wants_keep_alive(
        1,
        &h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    ));
    assert!(!wants_keep_alive(0, &h("GET / HTTP/1.0\r\n\r\n")));
    assert!(wants_keep_alive(
        0,
        &h("GET / HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n")
    ));
}
