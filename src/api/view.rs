//! The JSON the API shows: services with their live status, the failover, the
//! status page's summary. Secrets never leave through here ([`mask`]).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::ServiceConfig;
use crate::daemon::Daemon;
use crate::daemon::state::Section;
use crate::failover::driver::FailoverStatus;

/// Keys whose values are secrets wherever they appear (GOST's `auth.password`,
/// INFINI's `floating_ip.secret`).
const SECRET_KEYS: &[&str] = &["password", "secret", "secrets"];

/// What a masked secret reads as.
pub const MASKED: &str = "MASKED";

/// Replace every secret in `v` with [`MASKED`].
pub fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && !v.is_null() {
                    *v = Value::String(MASKED.into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// Seconds since the Unix epoch (GOST's timestamps).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A service as written (masked), with GOST's `status` added.
pub fn service(d: &Daemon, name: &str, raw: &Value) -> Value {
    let mut v = raw.clone();
    mask(&mut v);
    if let Value::Object(m) = &mut v {
        m.insert("status".into(), status(d, name));
    }
    v
}

/// GOST's `status{createTime, state, events, stats}`, plus the nodes' health.
fn status(d: &Daemon, name: &str) -> Value {
    let set = d.services();
    let (created, events) = d
        .service_events(name)
        .unwrap_or((SystemTime::now(), vec![]));
    let stats = set.stats(name).map(|c| {
        json!({
            "totalConns": c.accepted,
            "currentConns": c.active,
            "totalErrs": c.errors + c.no_node + c.denied + c.over_limit,
            "inputBytes": c.bytes_in,
            "outputBytes": c.bytes_out,
            "completed": c.completed,
            "denied": c.denied,
            "overLimit": c.over_limit,
            "noNode": c.no_node,
            "connectFailures": c.connect_failures,
            "idleClosed": c.idle_closed,
            "killed": c.killed,
        })
    });
    let now = Instant::now();
    let nodes: Vec<Value> = (set.balancer(name))
        .map(|b| {
            (b.nodes().iter())
                .map(|n| {
                    json!({
                        "name": n.label(),
                        "addr": n.addr(),
                        "healthy": n.is_healthy(),
                        "available": n.available(now),
                        "currentConns": n.active(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "createTime": unix(created),
        "state": if set.local_addr(name).is_some() || stats.is_some() { "running" } else { "failed" },
        "addr": set.local_addr(name).map(|a| a.to_string()),
        "events": events.iter().map(|e| json!({"time": unix(e.at), "msg": e.msg})).collect::<Vec<_>>(),
        "stats": stats,
        "nodes": nodes,
    })
}

/// An object of `T`'s list as written, masked; a service with its `status`.
pub fn object<T: Section>(d: &Daemon, name: &str, raw: &Value) -> Value {
    if T::KEY == ServiceConfig::KEY {
        service(d, name, raw)
    } else {
        let mut v = raw.clone();
        mask(&mut v);
        v
    }
}

/// Every object of `T`'s list, in order.
pub fn objects<T: Section>(d: &Daemon) -> Vec<Value> {
    (d.objects::<T>().iter())
        .map(|(name, raw)| object::<T>(d, name, raw))
        .collect()
}

/// `GET /failover`'s data.
pub fn failover(st: &FailoverStatus) -> Value {
    let now = Instant::now();
    let since = unix(st.since);
    json!({
        "state": st.state.to_string(),
        "reason": st.reason,
        "since": since,
        "sinceSeconds": SystemTime::now().duration_since(st.since).map(|d| d.as_secs()).unwrap_or(0),
        "vip": st.vip.to_string(),
        "standby": st.standby,
        "holdsVip": st.state == crate::failover::machine::State::Master,
        "interface": st.interface,
        "node": st.node.to_string(),
        "priority": st.priority,
        "handover": st.handover,
        "peers": st.peers.get().iter().map(|p| json!({
            "node": p.node.to_string(),
            "state": peer_state(p),
            "standby": p.standby,
            "priority": p.priority,
            "lastHeartbeatMs": now.saturating_duration_since(p.last_heard).as_millis() as u64,
        })).collect::<Vec<_>>(),
        "transitions": st.history.iter().rev().map(|t| json!({
            "time": unix(t.at),
            "from": t.from.to_string(),
            "to": t.to.to_string(),
            "reason": t.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A peer's state as shown: what it announces, except that a peer in operator
/// standby announces FAULT (so that every version leaves the VIP to others) with
/// the standby flag, and is shown as STANDBY: it is not failing.
fn peer_state(p: &crate::failover::status::PeerView) -> String {
    use crate::failover::wire::WireState;
    match p.state {
        WireState::Fault if p.standby => "STANDBY".to_string(),
        s => format!("{s:?}").to_uppercase(),
    }
}

/// `GET /status`: what the status page shows. Read-only and without any
/// configuration detail beyond names and addresses (see docs/api.md).
pub fn summary(d: &Daemon, st: Option<&FailoverStatus>, authed: bool, auth_on: bool) -> Value {
    let list: Vec<Value> = (d.objects::<ServiceConfig>().iter())
        .map(|(name, _)| {
            let mut s = status(d, name);
            if let Value::Object(m) = &mut s {
                m.remove("events");
                m.insert("name".into(), json!(name));
            }
            s
        })
        .collect();
    json!({
        "failover": st.map(failover),
        "services": list,
        "authenticated": authed,
        "auth": auth_on,
        "time": unix(SystemTime::now()),
    })
}
