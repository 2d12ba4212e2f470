//! Planned switchover without dropping connections: connection daisy-chaining.
//!
//! On SIGTERM, or on the operator's standby (`POST /failover/standby`), a MASTER
//! with a secret does not simply release the VIP. It
//!
//! 1. closes the door: new connections to the VIP on this node are refused with a
//!    reset (an nftables `inet` table, the *gate*), so the list below is complete
//!    and a client retries at once — by then at the new master;
//! 2. lists its established connections on the VIP (`/proc/net/tcp`) and sends
//!    the list, with its MAC, to the peer over the authenticated channel
//!    ([`wire`]: FLOWS messages, HMAC-signed like heartbeats), and waits for the
//!    peer's ACK: the peer has installed *steering* — an nftables `netdev` ingress
//!    table whose set holds the flows' 4-tuples, rewriting their frames to this
//!    node's MAC and sending them straight back out (`fwd`);
//! 3. keeps the VIP as a local address on `lo` (not announced: `arp_ignore=1`,
//!    `arp_announce=2` on the LAN interface), so its sockets keep working, then
//!    removes it from the LAN interface and resigns as usual: the peer takes over
//!    and sends gratuitous ARP;
//! 4. from then on, every [`RESEND`], sends its current list again (a new
//!    generation when connections ended), which is also its keep-alive; when the
//!    last connection has ended, the grace time is over or the peer is gone it
//!    sends DONE, removes the VIP from `lo` and the gate, and exits — or, after a
//!    standby, stays a BACKUP in standby.
//!
//! The new master removes the steering on DONE, or when the old master has been
//! silent for [`LIVENESS`] (it was killed): its remaining connections are lost
//! either way, and new connections never depended on it. Replies never pass
//! through the new master: the old master answers the client directly.
//!
//! No ACK within [`ACK_WAIT`] (an older peer drops `GWHO` datagrams, the channel
//! is down, no secret) → the ordinary switchover, with a log line saying why.
//!
//! This module is the pure part: [`Departure`] (the old master's list and its
//! generations), [`leave::Leave`] (the departure's phases: waiting for the ACK,
//! serving, over, and what ends each) and [`Steering`] (what the new master
//! installs and when it expires), all driven with `now`. The kernel work is in
//! [`kernel`], the I/O around them in [`shell`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub mod kernel;
pub mod leave;
pub mod shell;
pub mod wire;

pub use wire::{Flow, Kind, Message};

/// How often the old master repeats its list (keep-alive and retransmission).
pub const RESEND: Duration = Duration::from_millis(100);
/// Silence after which the new master removes the steering of an old master.
pub const LIVENESS: Duration = Duration::from_millis(500);
/// How long the old master waits for the peer's ACK before it falls back.
pub const ACK_WAIT: Duration = Duration::from_millis(300);

/// The old master's side: its flow list, numbered by generation.
#[derive(Debug)]
pub struct Departure {
    pub id: u32,
    pub generation: u32,
    flows: BTreeSet<Flow>,
    acked: Option<u32>,
}

impl Departure {
    pub fn new(id: u32, flows: BTreeSet<Flow>) -> Departure {
        Departure {
            id,
            generation: 1,
            flows,
            acked: None,
        }
    }

    /// The connections still open now: a new generation when the list changed.
    /// Connections only end during a handover (the gate refuses new ones).
    pub fn update(&mut self, flows: BTreeSet<Flow>) -> bool {
        if flows == self.flows {
            return false;
        }
        self.flows = flows;
        self.generation += 1;
        true
    }

    pub fn flows(&self) -> &BTreeSet<Flow> {
        &self.flows
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The FLOWS messages of the current generation (at least one, even empty).
    pub fn messages(&self, node: Ipv4Addr, vip: Ipv4Addr, mac: [u8; 6]) -> Vec<Message> {
        let list: Vec<Flow> = self.flows.iter().copied().collect();
        let chunks: Vec<&[Flow]> = if list.is_empty() {
            vec![&[]]
        } else {
            list.chunks(wire::MAX_FLOWS).collect()
        };
        let parts = chunks.len().min(u16::MAX as usize) as u16;
        chunks
            .into_iter()
            .take(parts as usize)
            .enumerate()
            .map(|(i, c)| Message {
                kind: Kind::Flows,
                node,
                vip,
                id: self.id,
                generation: self.generation,
                part: i as u16,
                parts,
                mac,
                flows: c.to_vec(),
            })
            .collect()
    }

    /// A DONE message: the peer removes everything.
    pub fn done(&self, node: Ipv4Addr, vip: Ipv4Addr) -> Message {
        Message::control(Kind::Done, node, vip, self.id, self.generation)
    }

    pub fn on_ack(&mut self, m: &Message) {
        if m.kind == Kind::Ack && m.id == self.id {
            self.acked = Some(self.acked.map_or(m.generation, |a| a.max(m.generation)));
        }
    }

    /// Whether the peer has installed some generation of this handover.
    pub fn acked(&self) -> bool {
        self.acked.is_some()
    }
}

/// What the new master must do in the kernel (and say to the old master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteerAction {
    /// Create the steering towards `mac` with these flows (replacing any).
    Install { mac: [u8; 6], flows: BTreeSet<Flow> },
    /// Change the set.
    Update { add: Vec<Flow>, remove: Vec<Flow> },
    /// Remove the steering (`why` for the log line).
    Remove { why: String },
    /// Answer `to`: generation `generation` of handover `id` is installed.
    Ack {
        to: Ipv4Addr,
        id: u32,
        generation: u32,
    },
}

#[derive(Debug)]
struct Inbound {
    from: Ipv4Addr,
    id: u32,
    mac: [u8; 6],
    installed: BTreeSet<Flow>,
    installed_gen: u32,
    /// Parts of a generation being assembled.
    pending: Option<(u32, u16, BTreeMap<u16, Vec<Flow>>)>,
    last_heard: Instant,
}

/// The new master's side: steering for at most one old master at a time.
#[derive(Debug)]
pub struct Steering {
    node: Ipv4Addr,
    vip: Ipv4Addr,
    current: Option<Inbound>,
}

impl Steering {
    pub fn new(node: Ipv4Addr, vip: Ipv4Addr) -> Steering {
        Steering {
            node,
            vip,
            current: None,
        }
    }

    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    /// When the steering expires unless the old master speaks.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.last_heard + LIVENESS)
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<SteerAction> {
        match &self.current {
            Some(c) if now >= c.last_heard + LIVENESS => {
                let why = format!(
                    "old master {} silent for {LIVENESS:?} (killed?): its {} connection(s) are lost",
                    c.from,
                    c.installed.len()
                );
                self.current = None;
                vec![SteerAction::Remove { why }]
            }
            _ => Vec::new(),
        }
    }

    /// An authenticated message from UDP source `from`.
    pub fn on_message(&mut self, now: Instant, from: Ipv4Addr, m: &Message) -> Vec<SteerAction> {
        // A node speaks for itself only, about this group only.
        if m.node != from || m.vip != self.vip || m.node == self.node {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.from != from || c.id != m.id)
        {
            if m.kind != Kind::Flows {
                return out;
            }
            // A new handover replaces the one before (a restarted old master).
            self.current = None;
        }
        match m.kind {
            Kind::Ack => {}
            Kind::Done => {
                if let Some(c) = self.current.take() {
                    out.push(SteerAction::Remove {
                        why: format!(
                            "old master {} is done ({} connection(s) left)",
                            c.from,
                            c.installed.len()
                        ),
                    });
                }
            }
            Kind::Flows => {
                let c = self.current.get_or_insert_with(|| Inbound {
                    from,
                    id: m.id,
                    mac: m.mac,
                    installed: BTreeSet::new(),
                    installed_gen: 0,
                    pending: None,
                    last_heard: now,
                });
                c.last_heard = now;
                if m.generation < c.installed_gen || m.parts == 0 || m.part >= m.parts {
                    return out;
                }
                if m.generation == c.installed_gen {
                    // A repeat: the keep-alive. Ack again (the last ack may be lost).
                    out.push(SteerAction::Ack {
                        to: from,
                        id: m.id,
                        generation: m.generation,
                    });
                    return out;
                }
                if c.pending
                    .as_ref()
                    .is_none_or(|(g, p, _)| *g != m.generation || *p != m.parts)
                {
                    c.pending = Some((m.generation, m.parts, BTreeMap::new()));
                }
                let Some((generation, parts, got)) = c.pending.as_mut() else {
                    return out;
                };
                got.insert(m.part, m.flows.clone());
                if got.len() < usize::from(*parts) {
                    return out;
                }
                let generation = *generation;
                let flows: BTreeSet<Flow> = got.values().flatten().copied().collect();
                c.pending = None;
                if c.installed_gen == 0 {
                    out.push(SteerAction::Install {
                        mac: c.mac,
                        flows: flows.clone(),
                    });
                } else {
                    let add = flows.difference(&c.installed).copied().collect();
                    let remove = c.installed.difference(&flows).copied().collect();
                    out.push(SteerAction::Update { add, remove });
                }
                c.installed = flows;
                c.installed_gen = generation;
                out.push(SteerAction::Ack {
                    to: from,
                    id: m.id,
                    generation,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
