//! Random SOCKS4/4a/5 handshakes against the real handlers: no panic, no hang,
//! every connection ends in exactly one outcome counter, nothing stays active.
//!
//! Inputs are valid handshakes (greeting, username/password sub-negotiation,
//! CONNECT / BIND / UDP ASSOCIATE requests with IPv4, IPv6 and domain addresses;
//! SOCKS4 and 4a) with random edits, sent to a `socks5` handler without auth and an
//! `auto` handler with auth, then the client half-closes and reads until the
//! handler closes.
//!
//! A fuzzed request names arbitrary destinations, and the handler connects to
//! what it parsed. So the whole test runs in a network namespace of its own with
//! only loopback up (created with `unshare(CLONE_NEWNET)` by the test thread,
//! needs root like the lab tests): every destination but 127.0.0.1 is unreachable
//! and no packet leaves the machine.
//!
//! `FUZZ_CASES=20000 cargo test --release --test fuzz_socks` for a long run.

#![cfg(target_os = "linux")]

mod fuzz_support;
mod handlers_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuzz_support::{apply, cases, edits};
use gateway::config::auth::{AuthConfig, Secret};
use gateway::proxy::handler::socks::{Socks5Handler, Socks5HandlerOptions};
use gateway::proxy::handler::{HandlerStats, ProxyHandler};
use gateway::proxy::router::Router;
use handlers_support::{counts_add_up, serve, settled};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// SOCKS address forms: IPv4 (loopback or not), IPv6, a domain name.
fn address() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|ip| [&[1u8][..], &ip].concat()),
        Just(vec![1, 127, 0, 0, 1]),
        any::<[u8; 16]>().prop_map(|ip| [&[4u8][..], &ip].concat()),
        "[a-z0-9.-]{0,40}".prop_map(|d| {
            let mut v = vec![3, d.len() as u8];
            v.extend_from_slice(d.as_bytes());
            v
        }),
    ]
}

/// A valid-looking SOCKS5 handshake: greeting, maybe user/password, request.
fn socks5() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(prop_oneof![Just(0u8), Just(2u8), any::<u8>()], 0..4),
        proptest::option::of(("[a-z]{0,12}", "[a-z0-9]{0,12}")),
        1u8..=3,
        address(),
        any::<u16>(),
    )
        .prop_map(|(methods, userpass, cmd, addr, port)| {
            let mut v = vec![5, methods.len() as u8];
            v.extend_from_slice(&methods);
            if let Some((u, p)) = userpass {
                v.extend_from_slice(&[1, u.len() as u8]);
                v.extend_from_slice(u.as_bytes());
                v.push(p.len() as u8);
                v.extend_from_slice(p.as_bytes());
            }
            v.extend_from_slice(&[5, cmd, 0]);
            v.extend_from_slice(&addr);
            v.extend_from_slice(&port.to_be_bytes());
            v
        })
}

/// SOCKS4 and 4a requests.
fn socks4() -> impl Strategy<Value = Vec<u8>> {
    (
        1u8..=2,
        any::<u16>(),
        prop_oneof![any::<[u8; 4]>(), Just([127, 0, 0, 1]), Just([0, 0, 0, 7])],
        "[a-z]{0,10}",
        proptest::option::of("[a-z0-9.-]{0,30}"),
    )
        .prop_map(|(cmd, port, ip, user, domain)| {
            let mut v = vec![4, cmd];
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&ip);
            v.extend_from_slice(user.as_bytes());
            v.push(0);
            if let Some(d) = domain {
                v.extend_from_slice(d.as_bytes());
                v.push(0);
            }
            v
        })
}

/// Move the calling thread into a new network namespace with only loopback up.
fn isolate() {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed ({}): this test needs root, like the lab tests",
        std::io::Error::last_os_error()
    );
    // A child forked from this thread runs in its namespace.
    let ok = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot bring loopback up in the test's namespace");
}

/// Send `bytes`, half-close, read until the handler closes (bounded).
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "the handler neither answered nor closed: {bytes:?}"
        )),
    }
}

#[test]
fn random_socks_handshakes() {
    static PANICKED: AtomicBool = AtomicBool::new(false);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        default_hook(info);
    }));
    let t = std::thread::spawn(|| {
        isolate();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Runtime workers are spawned from this thread, so they share its namespace.
        let (plain, plain_stats, auto, auto_stats): (
            SocketAddr,
            Arc<HandlerStats>,
            SocketAddr,
            Arc<HandlerStats>,
        ) = rt.block_on(async {
            let opts: Socks5HandlerOptions =
                serde_yaml_ng::from_str("metadata: {readTimeout: 300ms, udp: true}").unwrap();
            let (plain, ps) = serve(Socks5Handler::new(opts, Router::default())).await;
            let alice = AuthConfig {
                username: "alice".into(),
                password: Secret("s3cret".into()),
            };
            let auto_h =
                ProxyHandler::from_parts("auto", Some(alice), None, Router::default(), "auto")
                    .expect("auto handler");
            let (auto, asx) = serve(auto_h).await;
            (plain, ps, auto, asx)
        });
        let mut runner = TestRunner::new(cases(200));
        let input = (prop_oneof![socks5(), socks4()], edits(), any::<bool>());
        let result = runner.run(&input, |(valid, e, to_auto)| {
            let bytes = apply(valid, &e);
            let proxy = if to_auto { auto } else { plain };
            rt.block_on(exchange(proxy, &bytes))
                .map_err(TestCaseError::fail)?;
            Ok(())
        });
        let settled_plain = rt.block_on(settled(&plain_stats));
        let settled_auto = rt.block_on(settled(&auto_stats));
        (result, settled_plain, settled_auto)
    });
    let (result, p, a) = t.join().expect("the fuzz thread panicked");
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "a handler task panicked (see above)"
    );
    for (name, s) in [("socks5", &p), ("auto", &a)] {
        assert_eq!(s.active, 0, "{name}: connections still active: {s:?}");
        assert!(counts_add_up(s), "{name}: outcomes do not add up: {s:?}");
    }
    eprintln!("socks5: {p:?}\nauto: {a:?}");
}
