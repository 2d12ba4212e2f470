use super::*;
use proptest::prelude::*;

fn auth(u: &str, p: &str) -> AuthConfig {
    AuthConfig {
        username: u.into(),
        password: Secret(p.into()),
    }
}

/// The frame of the module docs, byte for byte as the spec lays it out: what
/// GOST's connector sends for `example.com:80` with `user:pass`.
const CONNECT_EXAMPLE: &[u8] = &[
    0x01, 0x01, 0x00, 0x1f, // VER, CONNECT, FEALEN = 31
    0x01, 0x00, 0x0a, 4, b'u', b's', b'e', b'r', 4, b'p', b'a', b's', b's', // user auth
    0x02, 0x00, 0x0f, 0x03, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm',
    0x00, 0x50, // address: name, port 80
];

#[test]
fn connect_frame_matches_the_spec() {
    let req = Request::connect(
        Addr::from_target("example.com:80").unwrap(),
        false,
        Some(auth("user", "pass")),
    );
    assert_eq!(req.encode().unwrap(), CONNECT_EXAMPLE);
    let back = Request::decode(CONNECT_EXAMPLE).unwrap();
    assert_eq!(back, req);
    assert_eq!(back.command(), cmd::CONNECT);
    assert!(!back.is_udp());
    assert_eq!(
        frame_len(CONNECT_EXAMPLE[..4].try_into().unwrap()).unwrap(),
        CONNECT_EXAMPLE.len()
    );
    // The password never shows in Debug.
    assert!(!format!("{back:?}").contains("pass\""));
}

#[test]
fn addresses_and_udp_flag() {
    // IPv4 target, UDP: cmd 0x81, ATYP 1.
    let req = Request::connect(Addr::from_target("10.0.0.5:53").unwrap(), true, None);
    assert_eq!(
        req.encode().unwrap(),
        [1, 0x81, 0, 10, 2, 0, 7, 1, 10, 0, 0, 5, 0, 53]
    );
    // IPv6 target: ATYP 4 and 16 bytes.
    let req = Request::connect(Addr::from_target("[::1]:443").unwrap(), false, None);
    let b = req.encode().unwrap();
    assert_eq!(&b[..8], &[1, 1, 0, 22, 2, 0, 19, 4]);
    assert_eq!(&b[b.len() - 2..], &[1, 187]);
    assert_eq!(Request::decode(&b).unwrap(), req);
    // The network feature says UDP too; command 0 reads as CONNECT.
    let b = [1, 0x00, 0, 5, 4, 0, 2, 0, 1];
    let r = Request::decode(&b).unwrap();
    assert!(r.is_udp());
    assert_eq!(r.command(), cmd::CONNECT);
    assert_eq!(Addr::from_target("h:1").unwrap().to_string(), "h:1");
    assert!(Addr::from_target("nohost").is_err());
    assert!(Addr::from_target(":80").is_err());
    assert!(Addr::from_target(&format!("{}:1", "a".repeat(256))).is_err());
}

#[test]
fn responses() {
    assert_eq!(status_frame(status::OK), [1, 0, 0, 0]);
    assert_eq!(
        Response::decode(&[1, status::UNAUTHORIZED, 0, 0]).unwrap(),
        Response::status(status::UNAUTHORIZED)
    );
    // A response with a feature (GOST's BIND answers with the bound address).
    let r = Response {
        status: status::OK,
        features: Features {
            addr: Some(Addr::Ip("127.0.0.1:9".parse().unwrap())),
            ..Features::default()
        },
    };
    assert_eq!(Response::decode(&r.encode().unwrap()).unwrap(), r);
    assert_eq!(status::name(status::HOST_UNREACHABLE), "host unreachable");
}

#[test]
fn malformed_frames() {
    // Version 2.
    assert_eq!(frame_len([2, 1, 0, 0]), Err(WireError::BadVersion(2)));
    // Feature says 10 bytes, 3 follow (GOST's own malformed example).
    let b = [1, 1, 0, 6, 1, 0, 10, 1, b'a', b'b'];
    assert!(matches!(
        Request::decode(&b),
        Err(WireError::Truncated { .. })
    ));
    // Head says 6 bytes of features, 2 present.
    assert!(matches!(
        Request::decode(&[1, 1, 0, 6, 4, 0]),
        Err(WireError::Truncated { .. })
    ));
    // Unknown feature type.
    assert_eq!(
        Request::decode(&[1, 1, 0, 3, 9, 0, 0]),
        Err(WireError::UnknownFeature(9))
    );
    // Address type 2.
    assert_eq!(
        Request::decode(&[1, 1, 0, 7, 2, 0, 4, 2, 0, 0, 0]),
        Err(WireError::BadAddrType(2))
    );
    // A name of 5 bytes announced, 2 present.
    assert_eq!(
        Request::decode(&[1, 1, 0, 7, 2, 0, 4, 3, 5, b'a', b'b']),
        Err(WireError::ShortFeature("address"))
    );
    // Credentials that are not UTF-8.
    assert_eq!(
        Request::decode(&[1, 1, 0, 6, 1, 0, 3, 1, 0xff, 0]),
        Err(WireError::NotUtf8("user name"))
    );
    // A user name over 255 bytes cannot be sent.
    let req = Request::connect(
        Addr::from_target("a:1").unwrap(),
        false,
        Some(auth(&"u".repeat(256), "")),
    );
    assert_eq!(req.encode(), Err(WireError::TooLong("user name")));
}

#[test]
fn datagram_framing() {
    assert_eq!(encode_datagram(b"ab").unwrap(), [0, 2, b'a', b'b']);
    assert!(encode_datagram(&vec![0; 65536]).is_none());
}

fn arb_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, p)| Addr::Ip(SocketAddr::new(ip, p))),
        ("[a-z0-9.-]{0,40}", any::<u16>()).prop_map(|(h, p)| Addr::Domain(h, p)),
    ]
}

fn arb_features() -> impl Strategy<Value = Features> {
    (
        proptest::option::of(("[ -~]{0,40}", "\\PC{0,20}")),
        proptest::option::of(arb_addr()),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(|(a, addr, tunnel, network)| Features {
            auth: a.map(|(u, p)| auth(&u, &p)),
            addr,
            tunnel,
            network,
        })
}

proptest! {
    /// Whatever arrives, decoding returns a value or an error: no panic.
    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Request::decode(&b);
        let _ = Response::decode(&b);
        if let Some(h) = b.get(..4) {
            let _ = frame_len(h.try_into().unwrap());
        }
    }

    /// A frame with a valid head and random features never panics either (the
    /// random-bytes case almost never gets past the version byte).
    #[test]
    fn random_features_never_panic(cmd in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = vec![VERSION, cmd];
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(&body);
        let _ = Request::decode(&b);
    }

    /// What is encoded decodes to the same request, and its head gives its length.
    #[test]
    fn request_round_trip(cmd in any::<u8>(), f in arb_features()) {
        let req = Request { cmd, features: f };
        let b = req.encode().unwrap();
        prop_assert_eq!(frame_len(b[..4].try_into().unwrap()).unwrap(), b.len());
        prop_assert_eq!(Request::decode(&b).unwrap(), req);
    }

    #[test]
    fn response_round_trip(status in any::<u8>(), f in arb_features()) {
        let resp = Response { status, features: f };
        let b = resp.encode().unwrap();
        prop_assert_eq!(Response::decode(&b).unwrap(), resp);
    }
}
