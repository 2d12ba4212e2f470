//! The URL grammar against the typed model: every scheme, auth, target lists,
//! each query key, bad URLs, and `-O` round trips.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::service::interface::Via;
use crate::config::service::{HandlerType, ListenerType, ServiceConfig, Strategy};

fn flags(l: &[&str]) -> Flags {
    Flags {
        listen: l.iter().map(|s| s.to_string()).collect(),
        forward: Vec::new(),
    }
}

fn services(f: &Flags) -> Result<Vec<ServiceConfig>, CliError> {
    from_flags(f).map(|f| f.services)
}

fn one(url: &str) -> ServiceConfig {
    match services(&flags(&[url])) {
        Ok(mut v) => v.remove(0),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn err(url: &str) -> String {
    match services(&flags(&[url])) {
        Ok(v) => panic!("{url} was accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_scheme_names_handler_and_listener() {
    let cases = [
        (":8080", HandlerType::Auto, ListenerType::Tcp),
        ("auto://:8080", HandlerType::Auto, ListenerType::Tcp),
        ("http://:8080", HandlerType::Http, ListenerType::Tcp),
        ("socks5://:1080", HandlerType::Socks5, ListenerType::Tcp),
        ("socks://:1080", HandlerType::Socks5, ListenerType::Tcp),
        ("socks4://:1080", HandlerType::Socks4, ListenerType::Tcp),
        ("socks4a://:1080", HandlerType::Socks4, ListenerType::Tcp),
        ("tcp://:80/10.0.0.5:80", HandlerType::Tcp, ListenerType::Tcp),
        ("udp://:53/10.0.0.5:53", HandlerType::Udp, ListenerType::Udp),
        ("HTTP+TCP://:8080", HandlerType::Http, ListenerType::Tcp),
        (
            "http+tls://:443?certFile=c.pem&keyFile=k.pem",
            HandlerType::Http,
            ListenerType::Tls,
        ),
        (
            "tls://:443?certFile=c.pem&keyFile=k.pem",
            HandlerType::Auto,
            ListenerType::Tls,
        ),
        (
            "tcp+tls://:443/10.0.0.5:80?certFile=c.pem&keyFile=k.pem",
            HandlerType::Tcp,
            ListenerType::Tls,
        ),
    ];
    for (url, h, l) in cases {
        let s = one(url);
        assert_eq!((s.handler.kind, s.listener.kind), (h, l), "{url}");
        assert_eq!(s.name, "service-0");
        assert!(s.handler.chain.is_none());
    }
}

#[test]
fn address_forms() {
    assert_eq!(
        one("http://:8080").addr.addr,
        "0.0.0.0:8080".parse().unwrap()
    );
    assert_eq!(
        one("http://127.0.0.1:8080").addr.addr,
        "127.0.0.1:8080".parse().unwrap()
    );
    assert_eq!(
        one("http://[::1]:8080").addr.addr,
        "[::1]:8080".parse().unwrap()
    );
    assert_eq!(one("http://[::1]:8080").addr.text, "[::1]:8080");
}

#[test]
fn services_are_numbered_in_order() {
    let v = services(&flags(&["http://:1", "socks5://:2", ":3?name=web"])).unwrap();
    let names: Vec<&str> = v.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["service-0", "service-1", "web"]);
}

#[test]
fn auth_goes_to_the_handler() {
    let s = one("http://alice:s3cr%40t@:8080");
    let a = s.handler.auth.unwrap();
    assert_eq!(a.username, "alice");
    assert_eq!(a.password.expose(), "s3cr@t");
    let s = one("socks5://bob@:1080");
    assert_eq!(s.handler.auth.unwrap().password.expose(), "");
    // The password never reaches an error message.
    let e = err("http://alice:hunter2@:8080?bogus=1");
    assert!(e.contains("alice:MASKED@") && !e.contains("hunter2"), "{e}");
}

#[test]
fn targets_become_forwarder_nodes() {
    let s = one("tcp://:8080/10.0.0.5:80,10.0.0.6:80, backend.lan:8080");
    let nodes = &s.forwarder.as_ref().unwrap().nodes;
    let addrs: Vec<(&str, &str)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.addr.as_str()))
        .collect();
    assert_eq!(
        addrs,
        [
            ("target-0", "10.0.0.5:80"),
            ("target-1", "10.0.0.6:80"),
            ("target-2", "backend.lan:8080")
        ]
    );
    assert!(nodes.iter().all(|n| n.weight == 1 && n.priority == 0));
    // UDP gets GOST's session idle limit unless one is given.
    let u = one("udp://:53/10.0.0.1:53");
    assert_eq!(u.client_idle_timeout.0, Duration::from_secs(5));
    let u = one("udp://:53/10.0.0.1:53?max_requests=1");
    assert_eq!(u.client_idle_timeout.get(), None);
    assert_eq!(u.udp.unwrap().max_requests, 1);
}

#[test]
fn each_query_key() {
    let s = one("tcp://:1/a:1,b:2?strategy=leastconn&maxFails=3&failTimeout=1m30s");
    let sel = &s.forwarder.as_ref().unwrap().selector;
    assert_eq!(sel.strategy, Strategy::Leastconn);
    assert_eq!(sel.max_fails, 3);
    assert_eq!(sel.fail_timeout.0, Duration::from_secs(90));
    // GOST's and gobetween's strategy names both.
    for (name, st) in [
        ("round", Strategy::RoundRobin),
        ("rand", Strategy::Random),
        ("fifo", Strategy::Fifo),
        ("iphash1", Strategy::Iphash1),
    ] {
        let s = one(&format!("tcp://:1/a:1?strategy={name}"));
        assert_eq!(s.forwarder.unwrap().selector.strategy, st, "{name}");
    }

    let s = one(":1?interface=eth0");
    assert_eq!(
        s.interface.unwrap().exits[0].via,
        Via::Device("eth0".into())
    );
    let s = one(":1?interface=192.168.0.100,192.168.0.101!,eth1");
    let i = s.interface.unwrap();
    assert_eq!(i.exits.len(), 3);
    assert!(i.exits[1].strict);
    assert_eq!(
        i.exits[0].via,
        Via::Source("192.168.0.100".parse().unwrap())
    );

    let mut f = flags(&[
        "http://:1?ignoreChain=true",
        "http://:2?ignoreChain=false",
        "http://:3",
    ]);
    f.forward = vec!["http://10.0.0.1:3128".into()];
    let v = services(&f).unwrap();
    assert_eq!(v[0].handler.chain, None);
    assert_eq!(v[1].handler.chain.as_deref(), Some("chain-0"));
    assert_eq!(v[2].handler.chain.as_deref(), Some("chain-0"));

    let s = one("http://:1?readTimeout=5s&responseTimeout=1m");
    let m = s.handler.metadata.unwrap();
    assert_eq!(m.read_timeout.unwrap().0, Duration::from_secs(5));
    assert_eq!(m.response_timeout.unwrap().0, Duration::from_secs(60));
    let s = one("socks5://:1?udp=true&udpBufferSize=8192");
    let m = s.handler.metadata.unwrap();
    assert_eq!((m.udp, m.udp_buffer_size), (Some(true), Some(8192)));

    let s = one("http+tls://:443?certFile=/etc/c.pem&keyFile=/etc/k.pem&caFile=ca.pem");
    let t = s.listener.tls.unwrap();
    assert_eq!(t.cert_file, Some(PathBuf::from("/etc/c.pem")));
    assert_eq!(t.key_file, Some(PathBuf::from("/etc/k.pem")));
    assert_eq!(t.ca_file, Some(PathBuf::from("ca.pem")));

    let s = one(
        "tcp://:1/a:1?max_connections=100&client_idle_timeout=30s&backend_idle_timeout=1m&backend_connection_timeout=2s",
    );
    assert_eq!(s.max_connections, 100);
    assert_eq!(s.client_idle_timeout.0, Duration::from_secs(30));
    assert_eq!(s.backend_idle_timeout.0, Duration::from_secs(60));
    assert_eq!(s.backend_connection_timeout.0, Duration::from_secs(2));
    let s = one("udp://:1/a:1?max_requests=1&max_responses=2");
    let u = s.udp.unwrap();
    assert_eq!((u.max_requests, u.max_responses), (1, 2));
}

#[test]
fn bad_urls_are_clear_errors() {
    for (url, msg) in [
        (
            "http://:1?bogus=1",
            "unknown option \"bogus\": expected one of name, interface",
        ),
        ("ftp://:21", "handler \"ftp\" in the scheme"),
        ("http+quic://:1", "listener \"quic\" in the scheme"),
        ("http://8080", "expected \"host:port\""),
        ("http://:99999", "expected \"host:port\""),
        ("tcp://:80", "a tcp service forwards to targets"),
        (
            "http://:80/10.0.0.5:80",
            "targets are for tcp and udp port forwarding",
        ),
        ("tcp://:80/10.0.0.5", "host:port"),
        (
            "http://:1?strategy=round",
            "strategy chooses among the targets",
        ),
        ("tcp://:1/a:1?strategy=fastest", "strategy=fastest"),
        ("tcp://:1/a:1?maxFails=-1", "maxFails=-1"),
        ("tcp://:1/a:1?failTimeout=soon", "failTimeout=soon"),
        ("http://:1?certFile=c.pem", "certFile is for a tls listener"),
        ("http+tls://:1", "a tls listener needs its certificate"),
        ("http://:1?ignoreChain=maybe", "ignoreChain=maybe"),
        ("http://:1?interface=", "interface="),
        ("http://:1?udp=true", "not an option of the http handler"),
        ("socks5://:1?udpBufferSize=10", "udpBufferSize"),
        ("tcp://:1/a:1?readTimeout=5s", "tcp handler has no metadata"),
        ("http://:1?name=", "non-empty name"),
        (
            "tcp://:1/a:1?max_requests=1",
            "udp options on a non-UDP service",
        ),
    ] {
        let e = err(url);
        assert!(e.starts_with("-L \""), "{url}: {e}");
        assert!(e.contains(msg), "{url}: {e}");
    }
    // Two services on one address: the second -L is named.
    let e = load(None, &flags(&["http://:1", "socks5://:1"]), &no_ifs()).unwrap_err();
    assert!(
        e.to_string().contains("socks5://:1") && e.to_string().contains("already used"),
        "{e}"
    );
}

fn no_ifs() -> crate::net::Interfaces {
    crate::net::Interfaces::default()
}

/// The config the flags mean, validated and linked as a file's would be (without
/// the host checks: the files and interfaces named need not exist).
fn linked(from: FromFlags) -> Config {
    let mut config = Config {
        services: from.services,
        chains: from.chain.into_iter().collect(),
        ..Config::default()
    };
    config.validate().unwrap();
    config.link_chains();
    config
}

/// `-O yaml` and `-O json` print files that the config parser reads back as the
/// very same services: nothing the URL set is lost or changed.
#[test]
fn every_url_round_trips() {
    let urls = [
        ":8080?interface=eth0",
        "http://alice:p%40ss@127.0.0.1:8081?readTimeout=5s&responseTimeout=90s&ignoreChain=true",
        "socks5://:1080?udp=true&udpBufferSize=8192&ignoreChain=true",
        "socks4://:1081",
        "tcp://:80/10.0.0.5:80,10.0.0.6:80?strategy=leastconn&maxFails=3&failTimeout=1500ms&max_connections=10&client_idle_timeout=30s&backend_idle_timeout=1m&backend_connection_timeout=2s",
        "udp://:53/10.0.0.1:53?ignoreChain=true",
        "udp://:54/10.0.0.1:53?max_requests=1&max_responses=2&ignoreChain=true",
        "http+tls://:443?certFile=/etc/c.pem&keyFile=/etc/k.pem&caFile=/etc/ca.pem&name=secure",
    ];
    let mut f = flags(&urls);
    f.forward = vec![
        "http://u:p@10.0.0.1:3128?interface=eth0&strategy=fifo&maxFails=2&failTimeout=5s&connectTimeout=3s".into(),
        "socks5+tls://10.0.0.2:1080?serverName=proxy.lan&caFile=/etc/ca.pem&secure=false&handshakeTimeout=4s&certFile=/c&keyFile=/k".into(),
    ];
    // Without the host checks (the files named here need not exist).
    let config = linked(from_flags(&f).unwrap());
    let loaded = Loaded {
        config,
        floating_ip: None,
    };
    assert!(loaded.config.services[0].chain.is_some());
    for format in [output::Format::Yaml, output::Format::Json] {
        let text = output::render(&loaded.config, format).unwrap();
        let back = Config::from_str_named(&text, Path::new("printed.yml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.services, loaded.config.services, "{text}");
    }
    let yaml = output::render(&loaded.config, output::Format::Yaml).unwrap();
    // Defaults are not written out.
    assert!(
        !yaml.contains("weight") && !yaml.contains("max_connections: 0"),
        "{yaml}"
    );
}

#[test]
fn durations_print_exactly() {
    use output::duration;
    assert_eq!(duration(Duration::from_secs(90)), "90s");
    assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(duration(Duration::from_nanos(10)), "10ns");
}

#[test]
fn forward_flags_make_the_default_chain() {
    let f = Flags {
        listen: vec!["socks5://:1080".into()],
        forward: vec![
            ":8000?interface=192.168.0.1".into(),
            "socks5+tls://bob:pw@proxy.lan:1443?serverName=proxy.lan".into(),
            "socks4://10.0.0.3:1080".into(),
            "tls://10.0.0.4:443".into(),
        ],
    };
    let from = from_flags(&f).unwrap();
    let c = from.chain.unwrap();
    assert_eq!(c.name, "chain-0");
    let kinds: Vec<(&str, &str, &str)> = c
        .hops
        .iter()
        .map(|h| {
            let n = &h.nodes[0];
            (
                n.addr.as_str(),
                n.connector.kind.name(),
                n.dialer.kind.name(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (":8000", "http", "tcp"),
            ("proxy.lan:1443", "socks5", "tls"),
            ("10.0.0.3:1080", "socks4", "tcp"),
            ("10.0.0.4:443", "http", "tls"),
        ]
    );
    assert_eq!(c.hops[0].interface.as_ref().unwrap().text, "192.168.0.1");
    let n1 = &c.hops[1].nodes[0];
    assert_eq!(n1.connector.auth.as_ref().unwrap().username, "bob");
    assert_eq!(
        n1.dialer.tls.as_ref().unwrap().server_name.as_deref(),
        Some("proxy.lan")
    );
    assert_eq!(from.services[0].handler.chain.as_deref(), Some("chain-0"));
    // Linked by load, as a file's chain would be.
    // The first hop's `interface` must be an address of this host (the host
    // checks cover `-F` hops as they cover a file's chains).
    assert!(load(None, &f, &no_ifs()).is_err());
    let host = crate::net::Interfaces {
        addrs: vec![crate::net::IfAddr::new(
            "eth0",
            std::net::Ipv4Addr::new(192, 168, 0, 1),
            24,
        )],
    };
    let l = load(None, &f, &host).unwrap();
    assert_eq!(l.config.services[0].chain.as_ref().unwrap().hops.len(), 4);
}

#[test]
fn bad_forward_urls_name_the_flag() {
    for (fwd, msg) in [
        ("ftp://:21", "connector \"ftp\" in the scheme"),
        ("http+quic://:1", "dialer \"quic\" in the scheme"),
        ("http://:1/a:1", "a -F node is a proxy address"),
        (
            "http://:1?bogus=1",
            "unknown option \"bogus\": expected one of interface",
        ),
        ("http://:1?serverName=x", "serverName is for a tls dialer"),
        ("http://10.0.0.1:0", "addr"),
    ] {
        let f = Flags {
            listen: vec!["http://:1".into()],
            forward: vec![fwd.into()],
        };
        let e = from_flags(&f).unwrap_err().to_string();
        assert!(e.starts_with("-F \""), "{fwd}: {e}");
        assert!(e.contains(msg), "{fwd}: {e}");
    }
    // Only the first hop leaves this host.
    let f = Flags {
        listen: vec!["http://:1".into()],
        forward: vec![":8000".into(), ":8001?interface=eth0".into()],
    };
    let e = from_flags(&f).unwrap_err().to_string();
    assert!(
        e.contains(":8001?interface=eth0") && e.contains("first hop"),
        "{e}"
    );
    // A chain nobody uses.
    let f = Flags {
        listen: vec![],
        forward: vec![":8000".into()],
    };
    assert!(
        from_flags(&f)
            .unwrap_err()
            .to_string()
            .contains("expected -L")
    );
    // A UDP service through an http hop: named on the -L.
    let f = Flags {
        listen: vec!["udp://:53/10.0.0.1:53".into()],
        forward: vec![":8000".into()],
    };
    let e = load(None, &f, &no_ifs()).unwrap_err().to_string();
    assert!(e.starts_with("-L \"udp://:53/10.0.0.1:53\""), "{e}");
}

/// GOST's relay on both flags: `-L relay://` (its options, `+tls`, targets for
/// forward mode), `-F relay://` and `relay+tls://`, and `-O yaml` printing them
/// back as the same services and chain.
#[test]
fn relay_schemes() {
    let s = one("relay://u:p@:8420?readTimeout=5s&udpBufferSize=2048&nodelay=true");
    assert_eq!(
        (s.handler.kind, s.listener.kind),
        (HandlerType::Relay, ListenerType::Tcp)
    );
    assert_eq!(s.handler.auth.as_ref().unwrap().password.expose(), "p");
    let m = s.handler.metadata.as_ref().unwrap();
    assert_eq!((m.udp_buffer_size, m.nodelay), (Some(2048), Some(true)));
    let s = one("relay+tls://:8421?certFile=c.pem&keyFile=k.pem");
    assert_eq!(
        (s.handler.kind, s.listener.kind),
        (HandlerType::Relay, ListenerType::Tls)
    );
    // GOST's forward mode: the targets are the forwarder's nodes.
    let s = one("relay://:8420/127.0.0.1:53,10.0.0.1:53");
    assert_eq!(s.forwarder.unwrap().nodes.len(), 2);
    assert!(err("relay://:1?bind=true").contains("BIND"));
    assert!(err("relay://:1?udp=true").contains("not an option of the relay handler"));

    let f = Flags {
        listen: vec!["relay://u:p@:8420".into(), "http://:8080".into()],
        forward: vec![
            "relay://u:p@10.0.0.1:8420?nodelay=true&connectTimeout=3s".into(),
            "relay+tls://10.0.0.2:8421?serverName=proxy.lan".into(),
        ],
    };
    let from = from_flags(&f).unwrap();
    let c = from.chain.clone().unwrap();
    let n0 = &c.hops[0].nodes[0];
    assert_eq!(
        (n0.connector.kind.name(), n0.dialer.kind.name()),
        ("relay", "tcp")
    );
    assert_eq!(n0.connector.metadata.nodelay, Some(true));
    assert_eq!(n0.connector.auth.as_ref().unwrap().username, "u");
    let n1 = &c.hops[1].nodes[0];
    assert_eq!(
        (n1.connector.kind.name(), n1.dialer.kind.name()),
        ("relay", "tls")
    );
    let bad = Flags {
        listen: vec!["http://:1".into()],
        forward: vec!["http://:1?nodelay=true".into()],
    };
    assert!(
        from_flags(&bad)
            .unwrap_err()
            .to_string()
            .contains("not an option of the http connector"),
    );
    let config = linked(from);
    let text = output::render(&config, output::Format::Yaml).unwrap();
    assert!(
        text.contains("type: relay") && text.contains("nodelay: true"),
        "{text}"
    );
    let back = Config::from_str_named(&text, Path::new("printed.yml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.services, config.services, "{text}");
}
