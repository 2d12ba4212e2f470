use crate::config::Config;
use std::path::Path;

fn load(yaml: &str) -> Result<Config, String> {
    Config::from_str_named(yaml, Path::new("g.yml")).map_err(|e| e.to_string())
}

/// Seed 000/001's chain example, verbatim apart from the interface names.
const SEED_CHAIN: &str = r#"
services:
- name: service-0
  addr: ":8080"
  handler:
    type: auto
    chain: chain-0
  listener:
    type: tcp
chains:
- name: chain-0
  hops:
  - name: hop-0
    # hop level interface
    interface: 192.168.0.1
    nodes:
    - name: node-0
      addr: :8000
      # node level interface
      interface: eth0
      connector:
        type: http
      dialer:
        type: tcp
"#;

/// Seed 001's virtual-node example, tabs fixed.
const SEED_VIRTUAL: &str = r#"
services:
- name: service-0
  addr: ":8080"
  handler:
    type: auto
    chain: chain-0
  listener:
    type: tcp
chains:
- name: chain-0
  hops:
  - name: hop-0
    nodes:
    - name: node-0
      addr: :0
      interface: eth0
      connector:
        type: virtual
      dialer:
        type: virtual
    - name: node-1
      addr: :0
      interface: eth1
      connector:
        type: virtual
      dialer:
        type: virtual
"#;

#[test]
fn seed_examples_parse_and_link() {
    let c = load(SEED_CHAIN).unwrap();
    let chain = c.services[0].chain.as_ref().expect("linked");
    assert_eq!(chain.name, "chain-0");
    let hop = &chain.hops[0];
    assert_eq!(hop.interface.as_ref().unwrap().text, "192.168.0.1");
    assert_eq!(hop.nodes[0].interface.as_ref().unwrap().text, "eth0");
    assert_eq!(hop.nodes[0].connector.kind, super::ConnectorType::Http);
    let c = load(SEED_VIRTUAL).unwrap();
    let nodes = &c.services[0].chain.as_ref().unwrap().hops[0].nodes;
    assert!(nodes.iter().all(|n| n.is_virtual()));
}

#[test]
fn defaults_are_goste() {
    let c = load(
            "services: [{name: s, addr: \":1\", handler: {type: http, chain: c}, listener: {type: tcp}}]\nchains: [{name: c, hops: [{nodes: [{addr: \"10.0.0.1:8080\"}]}]}]\n",
        )
        .unwrap();
    let hop = &c.chains[0].hops[0];
    let n = &hop.nodes[0];
    assert_eq!(n.connector.kind, super::ConnectorType::Http);
    assert_eq!(n.dialer.kind, super::DialerType::Tcp);
    assert_eq!(hop.selector.max_fails, 1);
    assert_eq!(
        hop.selector.fail_timeout.0,
        std::time::Duration::from_secs(10)
    );
    let t: super::DialerTlsConfig = crate::config::from_yaml("serverName: x").unwrap();
    assert!(t.secure, "the tls dialer verifies by default");
}

#[test]
fn hash_strategy_and_secrets() {
    let c = load(
            "services: [{name: s, addr: \":1\", handler: {type: http, chain: c}, listener: {type: tcp}}]\nchains: [{name: c, hops: [{selector: {strategy: hash}, nodes: [{addr: \"10.0.0.1:1080\", connector: {type: socks5, auth: {username: u, password: hunter2}}}]}]}]\n",
        )
        .unwrap();
    let dump = format!("{c:?}");
    assert!(
        !dump.contains("hunter2") && dump.contains("MASKED"),
        "{dump}"
    );
}

#[test]
fn errors_name_the_field() {
    let svc = "services: [{name: s, addr: \":1\", handler: {type: http, chain: c}, listener: {type: tcp}}]\n";
    let udp = "services: [{name: u, addr: \":1\", handler: {type: udp, chain: c}, listener: {type: udp}, udp: {max_requests: 1}, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]\n";
    let cases = [
            (
                "services: [{name: s, addr: \":1\", handler: {type: http, chain: nope}, listener: {type: tcp}}]\nchains: [{name: c, hops: [{nodes: [{addr: \"a:1\"}]}]}]\n".to_string(),
                "services[0].handler.chain",
                "unknown chain \"nope\": expected one of the chains defined under chains: c",
            ),
            (
                "services: [{name: s, addr: \":1\", handler: {type: http, chain: nope}, listener: {type: tcp}}]\n".to_string(),
                "services[0].handler.chain",
                "there is none",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: []}}]\n"),
                "chains[0].hops",
                "no hops",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a\"}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].addr",
                "host:port",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \":0\", connector: {{type: virtual}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].dialer.type",
                "virtual",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"10.0.0.1:80\", connector: {{type: virtual}}, dialer: {{type: virtual}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].addr",
                "expected \":0\"",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\"}}]}}, {{interface: eth0, nodes: [{{addr: \"b:1\"}}]}}]}}]\n"),
                "chains[0].hops[1].interface",
                "first hop",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\", dialer: {{type: tcp, tls: {{serverName: x}}}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].dialer.tls",
                "type: tls",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\", connector: {{type: socks5, metadata: {{header: {{X: y}}}}}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].connector.metadata.header",
                "not an option of the socks5 connector",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\", connector: {{type: socks4, auth: {{username: u, password: p}}}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].connector.auth.password",
                "user id only",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{name: a, addr: \"a:1\"}}, {{name: a, addr: \"b:1\"}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[1].name",
                "duplicate",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\"}}]}}]}}, {{name: c, hops: [{{nodes: [{{addr: \"a:1\"}}]}}]}}]\n"),
                "chains[1].name",
                "duplicate chain name",
            ),
            (
                format!("{udp}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\", connector: {{type: http}}}}]}}]}}]\n"),
                "services[0].handler.chain",
                "carries no datagrams",
            ),
            (
                "services: [{name: u, addr: \":1\", handler: {type: udp, chain: c}, listener: {type: udp}, udp: {max_requests: 1, transparent: true}, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]\nchains: [{name: c, hops: [{nodes: [{addr: \"a:1\", connector: {type: socks5}}]}]}]\n".to_string(),
                "services[0].udp.transparent",
                "expected one of the two",
            ),
            (
                "services: [{name: s, addr: \":1\", handler: {type: socks5, chain: c, metadata: {udp: true}}, listener: {type: tcp}}]\nchains: [{name: c, hops: [{nodes: [{addr: \"a:1\"}]}]}]\n".to_string(),
                "services[0].handler.metadata.udp",
                "bypass the chain",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\", conector: {{type: http}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0]",
                "conector",
            ),
            (
                format!("{svc}chains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\", connector: {{type: ss}}}}]}}]}}]\n"),
                "chains[0].hops[0].nodes[0].connector.type",
                "ss",
            ),
        ];
    for (yaml, field, msg) in cases {
        let e = load(&yaml).unwrap_err();
        assert!(e.contains(field) && e.contains(msg), "{yaml}\n=> {e}");
    }
}

#[test]
fn udp_service_through_one_socks5_hop_is_accepted() {
    let c = load(
            "services: [{name: u, addr: \":1\", handler: {type: udp, chain: c}, listener: {type: udp}, udp: {max_requests: 1}, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]\nchains: [{name: c, hops: [{nodes: [{addr: \"10.0.0.1:1080\", connector: {type: socks5}}]}]}]\n",
        )
        .unwrap();
    assert!(c.services[0].chain.is_some());
}

const ONE_SERVICE: &str =
    "services: [{name: s, addr: \":1\", handler: {type: http, chain: c}, listener: {type: tcp}}]\n";

/// GOST v3's top-level `hops:`: a chain's hop without nodes is the named hop,
/// written out into the service's chain; the chain as written keeps the name.
#[test]
fn top_level_hops_are_used_by_name() {
    let c = load(&format!(
        "{ONE_SERVICE}hops:\n- name: uplinks\n  selector: {{strategy: fifo}}\n  nodes: [{{name: a, addr: \"10.0.0.1:3128\"}}, {{name: b, addr: \"10.0.0.2:3128\"}}]\n\
         chains:\n- name: c\n  hops:\n  - name: uplinks\n  - name: exit\n    nodes: [{{addr: \"10.9.0.1:1080\", connector: {{type: socks5}}}}]\n"
    ))
    .unwrap();
    assert!(
        c.chains[0].hops[0].nodes.is_empty(),
        "as written: a reference"
    );
    let linked = c.services[0].chain.as_ref().unwrap();
    assert_eq!(linked.hops[0], c.hops[0]);
    assert_eq!(linked.hops[0].nodes.len(), 2);
    assert_eq!(linked.hops[1].name, "exit");
}

#[test]
fn hop_reference_errors_name_the_field() {
    let hops = "hops: [{name: h, nodes: [{addr: \"10.0.0.1:3128\"}]}]\n";
    let cases = [
        (
            format!("{ONE_SERVICE}{hops}chains: [{{name: c, hops: [{{name: nope}}]}}]\n"),
            "chains[0].hops[0].nodes",
            "no hop named \"nope\" under hops: (known: h)",
        ),
        (
            format!("{ONE_SERVICE}chains: [{{name: c, hops: [{{name: h}}]}}]\n"),
            "chains[0].hops[0].nodes",
            "there is no hops: section",
        ),
        (
            format!("{ONE_SERVICE}chains: [{{name: c, hops: [{{nodes: []}}]}}]\n"),
            "chains[0].hops[0].nodes",
            "no nodes",
        ),
        (
            format!(
                "{ONE_SERVICE}{hops}chains: [{{name: c, hops: [{{name: h, selector: {{strategy: rand}}}}]}}]\n"
            ),
            "chains[0].hops[0].selector",
            "expected name only",
        ),
        (
            // A hop with an interface is fine as a first hop, not as a second.
            format!(
                "{ONE_SERVICE}hops: [{{name: h, interface: lo, nodes: [{{addr: \"10.0.0.1:3128\"}}]}}]\n\
                 chains: [{{name: c, hops: [{{nodes: [{{addr: \"10.0.0.2:3128\"}}]}}, {{name: h}}]}}]\n"
            ),
            "hops[0].interface",
            "is hop 1 of chain \"c\"",
        ),
        (
            format!(
                "{ONE_SERVICE}hops: [{{name: h, nodes: [{{addr: \"a:1\"}}]}}, {{name: h, nodes: [{{addr: \"b:1\"}}]}}]\nchains: [{{name: c, hops: [{{name: h}}]}}]\n"
            ),
            "hops[1].name",
            "duplicate hop name",
        ),
        (
            format!(
                "{ONE_SERVICE}hops: [{{nodes: [{{addr: \"a:1\"}}]}}]\nchains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\"}}]}}]}}]\n"
            ),
            "hops[0].name",
            "non-empty name",
        ),
        (
            format!(
                "{ONE_SERVICE}hops: [{{name: h, nodes: []}}]\nchains: [{{name: c, hops: [{{nodes: [{{addr: \"a:1\"}}]}}]}}]\n"
            ),
            "hops[0].nodes",
            "no nodes",
        ),
        (
            format!(
                "{ONE_SERVICE}chains: [{{name: c, hops: [{{resolver: r9, nodes: [{{addr: \"a:1\"}}]}}]}}]\n"
            ),
            "chains[0].hops[0].resolver",
            "no resolver named \"r9\"",
        ),
        (
            format!(
                "{ONE_SERVICE}hops: [{{name: h, nodes: [{{addr: \"a:1\", hosts: h9}}]}}]\nchains: [{{name: c, hops: [{{name: h}}]}}]\n"
            ),
            "hops[0].nodes[0].hosts",
            "no hosts named \"h9\"",
        ),
    ];
    for (yaml, field, msg) in cases {
        let e = load(&yaml).unwrap_err();
        assert!(e.contains(field) && e.contains(msg), "{yaml}\n=> {e}");
    }
}

/// `resolver`/`hosts` on a hop and a node name their entries and are linked.
#[test]
fn hop_and_node_resolvers_are_linked() {
    let c = load(&format!(
        "{ONE_SERVICE}resolvers: [{{name: r0, nameservers: [{{addr: 10.0.0.53}}]}}]\n\
         hosts: [{{name: h0, mappings: [{{ip: 10.0.0.7, hostname: proxy.lan}}]}}]\n\
         chains: [{{name: c, hops: [{{resolver: r0, nodes: [{{addr: \"proxy.lan:3128\", hosts: h0}}]}}]}}]\n"
    ))
    .unwrap();
    let hop = &c.services[0].chain.as_ref().unwrap().hops[0];
    assert_eq!(
        hop.resolver.as_ref().unwrap().target.as_ref().unwrap().name,
        "r0"
    );
    assert_eq!(
        hop.nodes[0]
            .hosts
            .as_ref()
            .unwrap()
            .target
            .as_ref()
            .unwrap()
            .mappings[0]
            .hostname,
        "proxy.lan"
    );
}

/// GOST's service `metadata: {ignoreChain: true}`: the chain name is still
/// checked, but the service gets no chain (and none of the chain-only checks).
#[test]
fn ignore_chain_in_service_metadata() {
    let chain = "chains: [{name: c, hops: [{nodes: [{addr: \"10.0.0.1:3128\"}]}]}]\n";
    let c = load(&format!(
        "services: [{{name: s, addr: \":1\", metadata: {{ignoreChain: true}}, handler: {{type: socks5, chain: c, metadata: {{udp: true}}}}, listener: {{type: tcp}}}}]\n{chain}"
    ))
    .unwrap();
    assert!(c.services[0].ignores_chain());
    assert!(c.services[0].chain.is_none(), "the chain is not used");
    let c = load(&format!(
        "services: [{{name: s, addr: \":1\", metadata: {{ignoreChain: false}}, handler: {{type: http, chain: c}}, listener: {{type: tcp}}}}]\n{chain}"
    ))
    .unwrap();
    assert!(c.services[0].chain.is_some());
    let e = load(
        "services: [{name: s, addr: \":1\", metadata: {ignoreChain: true}, handler: {type: http, chain: nope}, listener: {type: tcp}}]\n",
    )
    .unwrap_err();
    assert!(e.contains("services[0].handler.chain"), "{e}");
    // GOST reads it from the service's metadata, not the handler's.
    let e = load(&format!(
        "services: [{{name: s, addr: \":1\", handler: {{type: http, chain: c, metadata: {{ignoreChain: true}}}}, listener: {{type: tcp}}}}]\n{chain}"
    ))
    .unwrap_err();
    assert!(
        e.contains("services[0].handler.metadata.ignoreChain") && e.contains("service's metadata"),
        "{e}"
    );
}
