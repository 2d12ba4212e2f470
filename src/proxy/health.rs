//! Active health checks (gobetween's `healthcheck` section), one loop per forwarder.
//!
//! Every `interval` each node is checked, all nodes concurrently, each check
//! bounded by `timeout`:
//!
//! * `ping` — a TCP connection can be opened (through the service's router, so
//!   the `interface` exit applies to checks as it does to traffic);
//! * `probe` — over TCP or UDP (both through the `interface` exit too), send
//!   `probe_send` and read the reply (at most
//!   `probe_recv_len` bytes); healthy if it starts with `probe_recv`, or with
//!   `probe_strategy: regexp` if the regexp matches it;
//! * `exec` — run `exec_command <host> <port>` (no shell) and compare its trimmed
//!   output with `exec_expected_positive_output` / `..._negative_output`; a
//!   timeout, a failure to start, or any other output counts as a failure.
//!
//! Results are debounced: a healthy node leaves rotation after `fails` failures in
//! a row, an unhealthy one returns after `passes` successes in a row. Every
//! transition is logged. Nodes start healthy, so a service works from its first
//! second; a dead node is found within `fails × interval`.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use regex::bytes::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::balance::{Balancer, Node};
use super::router::Router;
use crate::config::service::{HealthcheckConfig, HealthcheckKind, ProbeProtocol, ProbeStrategy};

/// What a check needs, prepared once.
struct Check {
    cfg: HealthcheckConfig,
    send: Vec<u8>,
    regex: Option<Regex>,
    router: Router,
}

/// Consecutive results of one node.
#[derive(Default)]
struct Streak {
    fails: u32,
    passes: u32,
}

/// Run the checks until `stop`.
pub async fn run(
    service: Arc<str>,
    balancer: Arc<Balancer>,
    cfg: HealthcheckConfig,
    router: Router,
    stop: CancellationToken,
) {
    let regex = match cfg.probe_strategy {
        ProbeStrategy::Regexp if cfg.kind == HealthcheckKind::Probe => {
            match Regex::new(&cfg.probe_recv) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(%service, error = %e, "invalid probe regexp; health checks disabled");
                    return;
                }
            }
        }
        _ => None,
    };
    let send = cfg.probe_send.0.clone();
    let mut router = router;
    router.connect_timeout = cfg.timeout.0;
    let check = Arc::new(Check {
        cfg,
        send,
        regex,
        router,
    });
    let mut streaks: HashMap<(String, String), Streak> = HashMap::new();
    let mut ticker = tokio::time::interval(check.cfg.interval.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let nodes = balancer.nodes();
        let results = tokio::select! {
            _ = stop.cancelled() => return,
            r = futures::future::join_all(nodes.iter().map(|n| {
                let c = check.clone();
                let n = n.clone();
                async move { check_node(&c, &n).await }
            })) => r,
        };
        // Forget nodes that discovery removed.
        streaks.retain(|k, _| {
            nodes
                .iter()
                .any(|n| n.config.name == k.0 && n.config.addr == k.1)
        });
        for (node, result) in nodes.iter().zip(results) {
            let s = streaks
                .entry((node.config.name.clone(), node.config.addr.clone()))
                .or_default();
            apply(&service, node, s, result, &check.cfg);
        }
    }
}

fn apply(
    service: &str,
    node: &Node,
    s: &mut Streak,
    result: Result<(), String>,
    cfg: &HealthcheckConfig,
) {
    match result {
        Ok(()) => {
            s.passes = s.passes.saturating_add(1);
            s.fails = 0;
            if !node.is_healthy() && s.passes >= cfg.passes {
                node.set_healthy(true);
                info!(%service, node = node.label(), addr = node.addr(), "node healthy again; back in rotation");
            }
        }
        Err(why) => {
            s.fails = s.fails.saturating_add(1);
            s.passes = 0;
            debug!(%service, node = node.label(), %why, fails = s.fails, "health check failed");
            if node.is_healthy() && s.fails >= cfg.fails {
                node.set_healthy(false);
                warn!(%service, node = node.label(), addr = node.addr(), %why, "node unhealthy; out of rotation");
            }
        }
    }
}

async fn check_node(c: &Check, node: &Node) -> Result<(), String> {
    let timeout = c.cfg.timeout.0;
    let fut = async {
        match c.cfg.kind {
            HealthcheckKind::Ping => c
                .router
                .connect(node.addr())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            HealthcheckKind::Probe => match c.cfg.probe_protocol {
                ProbeProtocol::Tcp => probe_tcp(c, node.addr()).await,
                ProbeProtocol::Udp => probe_udp(c, node.addr()).await,
            },
            HealthcheckKind::Exec => exec(c, node.addr()).await,
            HealthcheckKind::None => Ok(()),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn judge(c: &Check, reply: &[u8]) -> Result<(), String> {
    let ok = match &c.regex {
        Some(r) => r.is_match(reply),
        None => reply.starts_with(c.cfg.probe_recv.as_bytes()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(reply)
        ))
    }
}

async fn probe_tcp(c: &Check, addr: &str) -> Result<(), String> {
    let mut s = c.router.connect(addr).await.map_err(|e| e.to_string())?;
    if !c.send.is_empty() {
        s.write_all(&c.send).await.map_err(|e| e.to_string())?;
    }
    let want = c.cfg.probe_recv.len();
    let mut buf = vec![0u8; c.cfg.probe_recv_len.max(1)];
    let mut got = 0;
    // Read until the verdict is possible: enough bytes for the prefix (or a
    // regexp match), the buffer is full, or the backend closed.
    loop {
        let n = s.read(&mut buf[got..]).await.map_err(|e| e.to_string())?;
        got += n;
        let decided = n == 0
            || got == buf.len()
            || match &c.regex {
                Some(r) => r.is_match(&buf[..got]),
                None => got >= want,
            };
        if decided {
            return judge(c, &buf[..got]);
        }
    }
}

async fn probe_udp(c: &Check, addr: &str) -> Result<(), String> {
    // The service's hosts/resolver, as the traffic it vouches for.
    let target = c.router.resolve(addr).await.map_err(|e| e.to_string())?[0];
    // Through the service's `interface`, as the traffic it vouches for.
    let sock = super::egress::udp_connected(&c.router.exits, target)
        .await
        .map_err(|e| e.to_string())?;
    sock.send(&c.send).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; c.cfg.probe_recv_len.max(1)];
    // A refused port shows up here as ECONNREFUSED (ICMP unreachable).
    let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
    judge(c, &buf[..n])
}

async fn exec(c: &Check, addr: &str) -> Result<(), String> {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut words = c.cfg.exec_command.split_whitespace();
    let prog = words.next().ok_or("empty exec_command")?;
    let out = tokio::process::Command::new(prog)
        .args(words)
        .arg(host)
        .arg(port)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A check that overruns its timeout is dropped: the child is killed with it.
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e: io::Error| format!("cannot run {prog}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    if text == c.cfg.exec_expected_positive_output {
        Ok(())
    } else if text == c.cfg.exec_expected_negative_output {
        Err(format!("{prog} said {text:?} (negative)"))
    } else {
        Err(format!(
            "{prog} printed {text:?}, neither positive nor negative"
        ))
    }
}
