//! The kernel state of a handover, created and removed by the daemon only.
//!
//! * **Steering** (new master): nftables table `netdev gateway_handover` on the LAN
//!   interface's ingress hook. A frame whose IPv4/TCP 4-tuple is in set `flows`
//!   gets this node's MAC as source and the old master's as destination, and is
//!   sent straight back out of the same interface (`fwd`). No routing, so no
//!   `ip_forward`, no ICMP redirect, no TTL change, no conntrack; the source MAC is
//!   rewritten so that the switch never learns the client's MAC on our port.
//! * **Gate** (old master): table `inet gateway_handover_gate`, input hook: a SYN
//!   to the VIP is answered with a reset, so no connection is born on a node that
//!   is leaving (the client retries and reaches the new master).
//! * **The VIP on `lo`** (old master, `/32`, through the same rtnetlink
//!   [`VipController`](crate::failover::vip::VipController) as the VIP itself)
//!   with `arp_ignore=1` and `arp_announce=2` on the LAN interface: the kernel
//!   still owns the address for its sockets but never answers or sends ARP for it.
//!
//! Why the `nft` program and not a netlink crate: the nftables netlink protocol
//! is a batch of expressions (payload loads, bitwise, lookups, `fwd`) that the
//! Rust crates (`rustables`, `nftnl`) cover partly or through libnftnl's C
//! library; `nft -f -` is the stable, documented interface, already a test
//! dependency (scripts/ci-deps.sh), and a handover runs it a handful of times.
//! The flow list is read from `/proc/net/tcp` of the daemon's namespace.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::Flow;

pub const STEER_TABLE: &str = "gateway_handover";
pub const GATE_TABLE: &str = "gateway_handover_gate";

/// TCP states (include/net/tcp_states.h) of a connection that still carries data
/// or its close: everything but LISTEN, TIME_WAIT and CLOSE.
const LIVE_STATES: [&str; 7] = ["01", "03", "04", "05", "08", "09", "0B"];

/// The connections with local address `vip` in a `/proc/net/tcp` text.
pub fn parse_proc_tcp(text: &str, vip: Ipv4Addr) -> BTreeSet<Flow> {
    let addr = |s: &str| -> Option<(Ipv4Addr, u16)> {
        let (ip, port) = s.split_once(':')?;
        // The kernel prints the address's bytes, in memory (network) order, as a
        // native-endian integer.
        let ip = u32::from_str_radix(ip, 16).ok()?;
        Some((
            Ipv4Addr::from(ip.to_ne_bytes()),
            u16::from_str_radix(port, 16).ok()?,
        ))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, local, remote, state) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if !LIVE_STATES.contains(&state) {
                return None;
            }
            let (lip, lport) = addr(local)?;
            let (rip, rport) = addr(remote)?;
            (lip == vip).then_some(Flow {
                client: rip,
                client_port: rport,
                port: lport,
            })
        })
        .collect()
}

/// This namespace's connections on `vip`.
pub fn flows_on(vip: Ipv4Addr) -> std::io::Result<BTreeSet<Flow>> {
    Ok(parse_proc_tcp(
        &std::fs::read_to_string("/proc/self/net/tcp")?,
        vip,
    ))
}

/// The MAC address of `iface`.
pub fn own_mac(iface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn element(f: &Flow, vip: Ipv4Addr) -> String {
    format!("{} . {} . {vip} . {}", f.client, f.client_port, f.port)
}

fn elements(flows: &[Flow], vip: Ipv4Addr) -> String {
    flows
        .iter()
        .map(|f| element(f, vip))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The steering table (replacing any earlier one), with `flows`.
pub fn steer_script(
    iface: &str,
    own: [u8; 6],
    old_master: [u8; 6],
    vip: Ipv4Addr,
    flows: &BTreeSet<Flow>,
) -> String {
    let list: Vec<Flow> = flows.iter().copied().collect();
    let mut s = format!(
        "table netdev {STEER_TABLE} {{}}\ndelete table netdev {STEER_TABLE}\n\
         table netdev {STEER_TABLE} {{\n\
         \tset flows {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; }}\n\
         \tchain ingress {{\n\
         \t\ttype filter hook ingress device \"{iface}\" priority -500; policy accept;\n\
         \t\tip daddr {vip} ip saddr . tcp sport . ip daddr . tcp dport @flows ether saddr set {} ether daddr set {} fwd to \"{iface}\"\n\
         \t}}\n}}\n",
        mac_str(own),
        mac_str(old_master)
    );
    if !list.is_empty() {
        s.push_str(&format!(
            "add element netdev {STEER_TABLE} flows {{ {} }}\n",
            elements(&list, vip)
        ));
    }
    s
}

/// Add and remove set elements.
pub fn update_script(add: &[Flow], remove: &[Flow], vip: Ipv4Addr) -> String {
    let mut s = String::new();
    if !remove.is_empty() {
        s.push_str(&format!(
            "delete element netdev {STEER_TABLE} flows {{ {} }}\n",
            elements(remove, vip)
        ));
    }
    if !add.is_empty() {
        s.push_str(&format!(
            "add element netdev {STEER_TABLE} flows {{ {} }}\n",
            elements(add, vip)
        ));
    }
    s
}

pub fn gate_script(vip: Ipv4Addr) -> String {
    format!(
        "table inet {GATE_TABLE} {{}}\ndelete table inet {GATE_TABLE}\n\
         table inet {GATE_TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority -10; policy accept;\n\
         \t\tip daddr {vip} tcp flags & (syn | ack) == syn reject with tcp reset\n\
         \t}}\n}}\n"
    )
}

/// Removing a table that may not exist: declare it, then delete it.
pub fn remove_script(family: &str, table: &str) -> String {
    format!("table {family} {table} {{}}\ndelete table {family} {table}\n")
}

/// Run `nft -f -` with `script`.
pub async fn nft(script: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    if script.is_empty() {
        return Ok(());
    }
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(3), child.wait_with_output())
        .await
        .map_err(|_| "nft did not finish within 3 s".to_string())?
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `arp_ignore` / `arp_announce` of an interface, set for the handover and put
/// back afterwards.
pub struct ArpQuiet {
    iface: String,
    old: Vec<(String, String)>,
}

impl ArpQuiet {
    pub fn set(iface: &str) -> std::io::Result<ArpQuiet> {
        let mut old = Vec::new();
        for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            let path = format!("/proc/sys/net/ipv4/conf/{iface}/{name}");
            let was = std::fs::read_to_string(&path)?.trim().to_string();
            std::fs::write(&path, value)?;
            old.push((path, was));
        }
        Ok(ArpQuiet {
            iface: iface.to_string(),
            old,
        })
    }

    pub fn restore(self) {
        for (path, was) in &self.old {
            if let Err(e) = std::fs::write(path, was) {
                tracing::warn!(iface = %self.iface, error = %e, "cannot restore {path}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lists_live_connections_on_the_vip_only() {
        // 10.0.0.234:8080 listening, one established from 10.0.0.100:40000, one
        // in TIME_WAIT, one on another local address.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: EA00000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: EA00000A:1F90 6400000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: EA00000A:1F90 6400000A:9C41 06 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   3: 0100000A:1F90 6400000A:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n\
   4: EA00000A:1F90 6400000A:9C43 08 00000000:00000000 00:00000000 00000000     0        0 5 1\n";
        if cfg!(target_endian = "big") {
            return;
        }
        let got = parse_proc_tcp(text, Ipv4Addr::new(10, 0, 0, 234));
        let want: BTreeSet<Flow> = [0x9C40u16, 0x9C43]
            .into_iter()
            .map(|p| Flow {
                client: Ipv4Addr::new(10, 0, 0, 100),
                client_port: p,
                port: 8080,
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn scripts_name_the_flows() {
        let vip = Ipv4Addr::new(10, 0, 0, 234);
        let f = Flow {
            client: Ipv4Addr::new(10, 0, 0, 100),
            client_port: 40000,
            port: 8080,
        };
        let s = steer_script(
            "eth0",
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 1],
            vip,
            &[f].into(),
        );
        assert!(s.contains("10.0.0.100 . 40000 . 10.0.0.234 . 8080"), "{s}");
        assert!(s.contains("ether daddr set 02:00:00:00:00:01"), "{s}");
        assert!(s.contains("fwd to \"eth0\""), "{s}");
        assert_eq!(update_script(&[], &[], vip), "");
        assert!(update_script(&[], &[f], vip).starts_with("delete element"));
    }
}
