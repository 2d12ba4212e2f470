//! Node discovery (gobetween's `discovery` section), one loop per forwarder.
//!
//! * `static` — the forwarder's `nodes`; nothing runs.
//! * `file` — a node list on disk, re-read when its modification time or size
//!   changes (checked every `interval`). JSON (`["h:p", {"addr": "h:p", "weight":
//!   2, "priority": 1, "name": "x"}]`) or plain text, one node a line:
//!   `host:port [weight=N] [priority=N]`, blank lines and `#` comments ignored.
//! * `exec` — run a command every `interval` (bounded by `timeout`); its stdout is
//!   a node list in the same formats.
//! * `srv` — a DNS SRV query every `interval` (hickory-resolver: UDP, TCP when
//!   the answer is truncated); each answer is a node `target:port` with the
//!   record's weight and priority.
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
            DiscoveryKind::Srv => srv_nodes(&cfg).await.map(|n| (n, None)),
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

/// gobetween's `srv` discovery: one SRV query, each record a node `target:port`
/// with the record's weight and priority. The query goes through
/// `hickory-resolver` ([`super::resolve::srv_lookup`]): over UDP and, when the
/// answer is truncated (more records than fit a datagram), again over TCP, so a
/// large service gets all its nodes; `srv_dns_protocol: tcp` asks over TCP only.
async fn srv_nodes(cfg: &DiscoveryConfig) -> Result<Vec<NodeConfig>, String> {
    let name = cfg
        .srv_lookup_pattern
        .as_deref()
        .ok_or("no srv_lookup_pattern")?;
    let server = match &cfg.srv_lookup_server {
        Some(s) => Some(
            s.parse::<SocketAddr>()
                .map_err(|_| format!("bad srv_lookup_server {s:?}"))?,
        ),
        None => None,
    };
    let tcp = cfg.srv_dns_protocol == ProbeProtocol::Tcp;
    let records = super::resolve::srv_lookup(name, server, tcp, cfg.timeout.0).await?;
    Ok(records
        .into_iter()
        .map(|r| NodeConfig {
            name: String::new(),
            addr: format!("{}:{}", r.target, r.port),
            weight: (r.weight as u32).max(1),
            priority: r.priority as u32,
        })
        .collect())
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
