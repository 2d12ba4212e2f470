//! Node discovery (gobetween's `discovery` section), one loop per forwarder.
//!
//! * `static` — the forwarder's `nodes`; nothing runs.
//! * `file` — a node list on disk, re-read when its modification time or size
//!   changes (checked every `interval`). JSON (`["h:p", {"addr": "h:p", "weight":
//!   2, "priority": 1, "name": "x"}]`) or plain text, one node a line:
//!   `host:port [weight=N] [priority=N]`, blank lines and `#` comments ignored.
//! * `exec` — run a command every `interval` (bounded by `timeout`); its stdout is
//!   a node list in the same formats.
//! * `srv` — a DNS SRV query every `interval`; each answer is a node
//!   `target:port` with the record's weight and priority.
//!
//! A failed discovery (unreadable file, bad line, command failing, DNS error)
//! never half-applies: the list is parsed completely first. On failure
//! `failpolicy: keeplast` (default) keeps the last good list, `setempty` empties
//! it. Nodes that stay in the list keep their health and counters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::balance::Balancer;
use crate::config::service::{
    DiscoveryConfig, DiscoveryKind, FailPolicy, NodeConfig, ProbeProtocol, valid_node_addr,
};

/// Run discovery until `stop`.
pub async fn run(
    service: Arc<str>,
    balancer: Arc<Balancer>,
    cfg: DiscoveryConfig,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(cfg.interval.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (mtime, len) of the file last read successfully.
    let mut seen: Option<(SystemTime, u64)> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = match cfg.kind {
            DiscoveryKind::Static => return,
            DiscoveryKind::File => {
                let Some(path) = &cfg.file_path else { return };
                match file_stamp(path) {
                    Ok(stamp) if Some(stamp) == seen && !failing => continue,
                    Ok(stamp) => match tokio::fs::read_to_string(path).await {
                        Ok(text) => parse_nodes(&text).map(|n| (n, Some(stamp))),
                        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                    },
                    Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
                }
            }
            DiscoveryKind::Exec => run_exec(&cfg).await.map(|n| (n, None)),
            DiscoveryKind::Srv => srv::lookup(&cfg).await.map(|n| (n, None)),
        };
        match result {
            Ok((nodes, stamp)) => {
                failing = false;
                if stamp.is_some() {
                    seen = stamp;
                }
                if balancer.set_nodes(&nodes) {
                    info!(%service, nodes = nodes.len(), "discovery: node list updated");
                }
            }
            Err(e) => {
                failing = true;
                match cfg.failpolicy {
                    FailPolicy::Keeplast => {
                        warn!(%service, error = %e, "discovery failed; keeping the last good node list");
                    }
                    FailPolicy::Setempty => {
                        warn!(%service, error = %e, "discovery failed; node list emptied (failpolicy: setempty)");
                        balancer.set_nodes(&[]);
                    }
                }
            }
        }
    }
}

fn file_stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

async fn run_exec(cfg: &DiscoveryConfig) -> Result<Vec<NodeConfig>, String> {
    let (prog, args) = cfg.exec_command.split_first().ok_or("empty exec_command")?;
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(cfg.timeout.0, child).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("cannot run {prog}: {e}")),
        Err(_) => return Err(format!("{prog} did not finish within {:?}", cfg.timeout.0)),
    };
    if !out.status.success() {
        return Err(format!("{prog} exited with {}", out.status));
    }
    parse_nodes(&String::from_utf8_lossy(&out.stdout))
}

/// Parse a node list: JSON if it starts with `[`, else plain text.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeConfig>, String> {
    if text.trim_start().starts_with('[') {
        return parse_json(text);
    }
    let mut nodes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let addr = words.next().unwrap_or_default();
        if !valid_node_addr(addr) {
            return Err(format!("line {}: {addr:?}: expected host:port", i + 1));
        }
        let mut node = NodeConfig {
            name: String::new(),
            addr: addr.to_string(),
            weight: 1,
            priority: 0,
        };
        for w in words {
            let bad = || format!("line {}: {w:?}: expected weight=N or priority=N", i + 1);
            let (k, v) = w.split_once('=').ok_or_else(bad)?;
            let v: u32 = v.parse().map_err(|_| bad())?;
            match k {
                "weight" if v > 0 => node.weight = v,
                "priority" => node.priority = v,
                _ => return Err(bad()),
            }
        }
        nodes.push(node);
    }
    Ok(nodes)
}

fn parse_json(text: &str) -> Result<Vec<NodeConfig>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Addr(String),
        Full(NodeConfig),
    }
    let entries: Vec<Entry> =
        serde_json::from_str(text).map_err(|e| format!("bad JSON node list: {e}"))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let n = match e {
                Entry::Addr(addr) => NodeConfig {
                    name: String::new(),
                    addr,
                    weight: 1,
                    priority: 0,
                },
                Entry::Full(n) => n,
            };
            if !valid_node_addr(&n.addr) || n.weight == 0 {
                return Err(format!(
                    "entry {i}: {:?}: expected host:port and weight ≥ 1",
                    n.addr
                ));
            }
            Ok(n)
        })
        .collect()
}

/// The first `nameserver` of /etc/resolv.conf, port 53.
fn system_nameserver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver"))
            .then(|| w.next())
            .flatten()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// A minimal DNS client for SRV records: one question, answers parsed with name
/// compression. Enough for Consul, CoreDNS or any resolver; no caching (the
/// interval is the cache).
mod srv {
    use super::*;

    const TYPE_SRV: u16 = 33;

    pub async fn lookup(cfg: &DiscoveryConfig) -> Result<Vec<NodeConfig>, String> {
        let name = cfg
            .srv_lookup_pattern
            .as_deref()
            .ok_or("no srv_lookup_pattern")?;
        let server = match &cfg.srv_lookup_server {
            Some(s) => s
                .parse::<SocketAddr>()
                .map_err(|_| format!("bad srv_lookup_server {s:?}"))?,
            None => system_nameserver().ok_or("no nameserver in /etc/resolv.conf")?,
        };
        let id: u16 = rand::random();
        let query = build_query(id, name)?;
        let answer = match tokio::time::timeout(
            cfg.timeout.0,
            exchange(server, &query, cfg.srv_dns_protocol),
        )
        .await
        {
            Ok(r) => r.map_err(|e| format!("DNS query to {server}: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "DNS server {server} did not answer within {:?}",
                    cfg.timeout.0
                ));
            }
        };
        parse_response(id, &answer)
    }

    async fn exchange(
        server: SocketAddr,
        query: &[u8],
        proto: ProbeProtocol,
    ) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        match proto {
            ProbeProtocol::Udp => {
                let local: SocketAddr = if server.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = tokio::net::UdpSocket::bind(local).await?;
                s.connect(server).await?;
                s.send(query).await?;
                let mut buf = vec![0u8; 4096];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
            ProbeProtocol::Tcp => {
                let mut s = tokio::net::TcpStream::connect(server).await?;
                let mut msg = (query.len() as u16).to_be_bytes().to_vec();
                msg.extend_from_slice(query);
                s.write_all(&msg).await?;
                let len = s.read_u16().await? as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    }

    pub fn build_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
        let mut q = Vec::with_capacity(32 + name.len());
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&0x0100u16.to_be_bytes()); // recursion desired
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
        for label in name.trim_end_matches('.').split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("{name:?}: expected a DNS name"));
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&TYPE_SRV.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes()); // class IN
        Ok(q)
    }

    fn u16_at(m: &[u8], i: usize) -> Result<u16, String> {
        m.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated DNS message".to_string())
    }

    /// Read a (possibly compressed) name at `i`; returns it and the offset after it.
    fn read_name(m: &[u8], mut i: usize) -> Result<(String, usize), String> {
        let mut labels: Vec<String> = Vec::new();
        let mut end = None;
        for _ in 0..128 {
            let len = *m.get(i).ok_or("truncated DNS name")? as usize;
            if len & 0xc0 == 0xc0 {
                let ptr = (u16_at(m, i)? & 0x3fff) as usize;
                end.get_or_insert(i + 2);
                i = ptr;
                continue;
            }
            if len == 0 {
                return Ok((labels.join("."), end.unwrap_or(i + 1)));
            }
            let label = m.get(i + 1..i + 1 + len).ok_or("truncated DNS label")?;
            labels.push(String::from_utf8_lossy(label).into_owned());
            i += 1 + len;
        }
        Err("DNS name compression loop".into())
    }

    pub fn parse_response(id: u16, m: &[u8]) -> Result<Vec<NodeConfig>, String> {
        if u16_at(m, 0)? != id {
            return Err("DNS answer with a foreign id".into());
        }
        let flags = u16_at(m, 2)?;
        let rcode = flags & 0x000f;
        if rcode != 0 {
            return Err(format!("DNS error rcode {rcode}"));
        }
        let qd = u16_at(m, 4)?;
        let an = u16_at(m, 6)?;
        let mut i = 12;
        for _ in 0..qd {
            i = read_name(m, i)?.1 + 4;
        }
        let mut nodes = Vec::new();
        for _ in 0..an {
            let (_, j) = read_name(m, i)?;
            let ty = u16_at(m, j)?;
            let rdlen = u16_at(m, j + 8)? as usize;
            let rdata = j + 10;
            if m.len() < rdata + rdlen {
                return Err("truncated DNS record".into());
            }
            if ty == TYPE_SRV {
                let priority = u16_at(m, rdata)?;
                let weight = u16_at(m, rdata + 2)?;
                let port = u16_at(m, rdata + 4)?;
                let (target, _) = read_name(m, rdata + 6)?;
                nodes.push(NodeConfig {
                    name: String::new(),
                    addr: format!("{target}:{port}"),
                    weight: (weight as u32).max(1),
                    priority: priority as u32,
                });
            }
            i = rdata + rdlen;
        }
        Ok(nodes)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_srv_answer_with_compression() {
            let mut m = build_query(7, "_web._tcp.lan").unwrap();
            m[2] = 0x81;
            m[3] = 0x80;
            m[7] = 1; // one answer
            m.extend_from_slice(&[0xc0, 12]); // name: pointer to the question
            m.extend_from_slice(&[0, 33, 0, 1, 0, 0, 0, 60]);
            let target = b"\x02b1\x03lan\x00";
            m.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 5, 0x1f, 0x90]);
            m.extend_from_slice(target);
            let nodes = parse_response(7, &m).unwrap();
            assert_eq!(nodes.len(), 1);
            assert_eq!(nodes[0].addr, "b1.lan:8080");
            assert_eq!((nodes[0].weight, nodes[0].priority), (5, 1));
            assert!(parse_response(8, &m).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_lists() {
        let n = parse_nodes("# backends\n10.0.0.1:80 weight=3\n\nb.lan:81 priority=2  # backup\n")
            .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!((n[0].addr.as_str(), n[0].weight), ("10.0.0.1:80", 3));
        assert_eq!((n[1].addr.as_str(), n[1].priority), ("b.lan:81", 2));
        assert!(parse_nodes("10.0.0.1\n").unwrap_err().contains("line 1"));
        assert!(parse_nodes("10.0.0.1:80 weight=0\n").is_err());
    }

    #[test]
    fn json_lists() {
        let n =
            parse_nodes(r#"["10.0.0.1:80", {"addr": "10.0.0.2:80", "weight": 2, "name": "b"}]"#)
                .unwrap();
        assert_eq!(n[1].name, "b");
        assert_eq!(n[1].weight, 2);
        assert!(parse_nodes(r#"[{"addr": "x:1", "bogus": 1}]"#).is_err());
    }
}
