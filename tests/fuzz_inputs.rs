//! Random input against the parsers that face the outside: heartbeat datagrams
//! (decode, authenticate, then the state machine) and config files (parse,
//! validate, resolve). No input may panic, grow memory without bound, or — for a
//! datagram without the key — authenticate.
//!
//! The inputs are structure-aware: valid heartbeats and configs, then mutated
//! (bytes flipped, cut, extended; keys and values swapped for others), because
//! purely random bytes rarely get past the first check. Coverage-guided fuzzing
//! (cargo-fuzz, cargo-afl) needs a nightly toolchain or an instrumenting compiler
//! wrapper that this project's stable CI does not have; these run everywhere.
//!
//! Default: a few hundred cases per property (part of `cargo test`). Long run:
//! `FUZZ_CASES=200000 cargo test --release --test fuzz_inputs`. Cases proptest
//! finds are kept by it in `proptest-regressions/` and replayed first.

mod fuzz_support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use fuzz_support::{apply, cases, edits};
use gateway::config::Config;
use gateway::failover::auth::Keyring;
use gateway::failover::inbound;
use gateway::failover::machine::{MAX_PEERS, Machine, Params};
use gateway::failover::wire::{Heartbeat, WireState};
use gateway::net::{IfAddr, Interfaces};
use proptest::prelude::*;

const KEY: &str = "fuzz-key-0123456789abcdef";

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        prop_oneof![
            Just(WireState::Backup),
            Just(WireState::Master),
            Just(WireState::Fault),
            Just(WireState::Resign)
        ],
        any::<u8>(),
        0u8..6,
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u16>(),
    )
        .prop_map(
            |(state, priority, node, epoch, seed, seq, interval_ms)| Heartbeat {
                state,
                priority,
                flags: (seed & 1) as u8,
                node: Ipv4Addr::new(10, 0, 0, node),
                vip: Ipv4Addr::new(10, 0, 0, if seed & 2 == 0 { 234 } else { 99 }),
                epoch,
                seq,
                interval_ms,
                auth_type: 0,
                auth: vec![],
            },
        )
}

fn params() -> Params {
    Params {
        node: Ipv4Addr::new(10, 0, 0, 1),
        vip: Ipv4Addr::new(10, 0, 0, 234),
        priority: 100,
        preempt: false,
        interval: Duration::from_millis(100),
        dead_count: 3,
        peer: Some(Ipv4Addr::new(10, 0, 0, 2)),
        has_targets: false,
        probe_timeout: Duration::from_millis(150),
        probe_interval: Duration::from_secs(1),
        garp_refresh: None,
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// Valid heartbeats, signed or not, edited at random: decoding and checking
    /// never panic; an edited signed datagram never verifies; whatever passes is
    /// fed to a machine, whose peer table stays bounded.
    #[test]
    fn heartbeat_datagrams(
        hbs in proptest::collection::vec((heartbeat(), any::<bool>(), edits(), 0u8..6), 1..40),
    ) {
        let keys = Keyring::from_secrets(&[KEY]);
        let none = Keyring::default();
        let t0 = Instant::now();
        let mut m = Machine::new(params(), 1, t0);
        for (i, (hb, signed, e, src)) in hbs.iter().enumerate() {
            let clean = if *signed { keys.encode_heartbeat(hb) } else { none.encode_heartbeat(hb) };
            let bytes = apply(clean.clone(), e);
            let with_key = inbound::accept(&bytes, &keys);
            if *signed && bytes != clean {
                prop_assert!(with_key.is_err(), "an edited signed datagram verified");
            }
            if !*signed {
                prop_assert!(with_key.is_err(), "an unsigned datagram passed a keyed node");
            }
            let now = t0 + Duration::from_millis(i as u64 * 7);
            if let Ok((hb, _)) = inbound::accept(&bytes, &none) {
                m.handle_heartbeat_from(now, &hb, Ipv4Addr::new(10, 0, 0, *src));
                m.handle_timeout(now);
                let _ = m.drain_actions();
            }
            prop_assert!(m.peer_count() <= MAX_PEERS);
        }
    }

    /// Arbitrary bytes: never a panic.
    #[test]
    fn raw_datagrams(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = inbound::accept(&data, &Keyring::from_secrets(&[KEY]));
        let _ = inbound::accept(&data, &Keyring::default());
    }
}

// ---- config files ----

/// Field names the loader knows (so edits reach the validation, not only the
/// unknown-field check), and a few it does not.
const KEYS: &[&str] = &[
    "enabled",
    "ip",
    "netmask",
    "interface",
    "local_ip",
    "peer_ip",
    "priority",
    "forced_by_priority",
    "echo",
    "port",
    "dial_timeout_in_ms",
    "timeout_in_ms",
    "broadcast",
    "binding",
    "preempt",
    "heartbeat",
    "interval_in_ms",
    "dead_count",
    "garp",
    "count",
    "refresh_in_ms",
    "probe",
    "targets",
    "notify",
    "master",
    "any",
    "secret",
    "secret_file",
    "accept_unauthenticated",
    "name",
    "addr",
    "handler",
    "listener",
    "forwarder",
    "type",
    "nodes",
    "auth",
    "username",
    "password",
    "metadata",
    "selector",
    "strategy",
    "tls",
    "bogus",
    "",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u16>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        any::<(u8, u16)>().prop_map(|(o, p)| format!("\"10.0.0.{o}:{p}\"")),
        Just("\":8080\"".to_string()),
        "[a-z0-9 ._:/-]{0,24}".prop_map(|s| format!("\"{s}\"")),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
    ]
}

/// A YAML value: a scalar, or a block map/list of them, nested.
fn value(depth: u32) -> BoxedStrategy<String> {
    let leaf = scalar().boxed();
    if depth == 0 {
        return leaf;
    }
    let indent = "  ".repeat(depth as usize);
    let map = proptest::collection::vec((prop::sample::select(KEYS), value(depth - 1)), 1..5)
        .prop_map({
            let indent = indent.clone();
            move |kv| {
                let mut s = String::new();
                for (k, v) in kv {
                    s.push('\n');
                    s.push_str(&indent);
                    s.push_str(k);
                    s.push_str(": ");
                    s.push_str(&v);
                }
                s
            }
        });
    let list = proptest::collection::vec(value(depth - 1), 0..3).prop_map(move |items| {
        let mut s = String::new();
        for v in items {
            s.push('\n');
            s.push_str(&indent);
            s.push_str("- ");
            s.push_str(v.trim_start());
        }
        s
    });
    prop_oneof![3 => leaf, 2 => map, 1 => list].boxed()
}

fn host() -> Interfaces {
    Interfaces {
        addrs: vec![
            IfAddr::new("lo", Ipv4Addr::LOCALHOST, 8),
            IfAddr::new("eth0", Ipv4Addr::new(10, 0, 0, 1), 24),
        ],
    }
}

/// Parse, validate and resolve; an error must name the file.
fn load(text: &str) {
    let path = Path::new("fuzz.yml");
    match Config::from_str_named(text, path) {
        Ok(c) => {
            if let Some(f) = &c.floating_ip {
                let _ = f.resolve(&host());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.yml"), "{e}"),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Structured configs: a `floating_ip` and a `services` section built from
    /// real field names and odd values.
    #[test]
    fn config_files(fip in value(3), svc in value(3), extra in prop::sample::select(KEYS)) {
        let text = format!("floating_ip:{fip}\nservices:{svc}\n{extra}: 1\n");
        load(&text);
        let text = format!("floating_ip:\n  enabled: true{fip}\n");
        load(&text);
    }

    /// A valid config, edited byte by byte.
    #[test]
    fn config_edits(e in edits()) {
        let valid = "floating_ip:\n  enabled: true\n  priority: 150\n  secret: \"0123456789abcdef-key\"\n  echo: {port: 61111}\n  probe:\n    targets: [10.0.0.9]\nservices:\n- name: fwd\n  addr: \":8080\"\n  handler: {type: tcp}\n  listener: {type: tcp}\n  forwarder:\n    nodes:\n    - {name: b1, addr: \"10.0.0.9:80\"}\n";
        let bytes = apply(valid.as_bytes().to_vec(), &e);
        load(&String::from_utf8_lossy(&bytes));
    }
}

/// The unedited baseline of `config_edits` loads: the edits start from a valid file.
#[test]
fn the_fuzzed_config_baseline_is_valid() {
    let valid = "floating_ip:\n  enabled: true\n  priority: 150\n  secret: \"0123456789abcdef-key\"\n  echo: {port: 61111}\n  probe:\n    targets: [10.0.0.9]\nservices:\n- name: fwd\n  addr: \":8080\"\n  handler: {type: tcp}\n  listener: {type: tcp}\n  forwarder:\n    nodes:\n    - {name: b1, addr: \"10.0.0.9:80\"}\n";
    let c = Config::from_str_named(valid, Path::new("fuzz.yml")).unwrap();
    let f = c.floating_ip.unwrap().resolve(&host()).unwrap();
    assert!(!f.keys.is_empty());
}
