//! Gratuitous ARP with pnet.
//!
//! When the VIP moves, every host on the LAN still has the *old* master's MAC address
//! cached for it and keeps sending there until the entry expires (minutes). A
//! gratuitous ARP is an unsolicited broadcast that says "VIP is at this MAC"; hosts
//! that already have an entry for the VIP update it at once.
//!
//! There are two customary forms and stacks differ in which one they honour, so each
//! round sends both (as keepalived and `arping -U`/`-A` do between them):
//!
//! | field            | request form          | reply form            |
//! |------------------|-----------------------|-----------------------|
//! | Ethernet dst     | `ff:ff:ff:ff:ff:ff`   | `ff:ff:ff:ff:ff:ff`   |
//! | Ethernet src     | our MAC               | our MAC               |
//! | operation        | 1 (request)           | 2 (reply)             |
//! | sender MAC / IP  | our MAC / VIP         | our MAC / VIP         |
//! | target MAC       | `00:00:00:00:00:00`   | `ff:ff:ff:ff:ff:ff`   |
//! | target IP        | VIP                   | VIP                   |
//!
//! Linux, for one, treats the request form (sender IP = target IP) as gratuitous and
//! lets it override a neighbour entry even inside the `locktime` window, while the
//! reply form only wins once that window (1 s by default) has passed.
//!
//! Frames are built by the pure [`garp_frames`] and written to an `AF_PACKET` socket
//! through pnet's datalink channel. 42 bytes each: the NIC pads to the Ethernet
//! minimum.

use std::net::Ipv4Addr;
use std::time::Duration;

use pnet::datalink::{self, Channel, DataLinkReceiver, DataLinkSender};
use pnet::packet::MutablePacket;
use pnet::packet::arp::{ArpHardwareTypes, ArpOperation, ArpOperations, MutableArpPacket};
use pnet::packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet::util::MacAddr;

#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    #[error("interface {0} not found or has no MAC address")]
    NoInterface(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const GARP_FRAME_LEN: usize = 14 + 28;

/// Bound on one blocking send, so that a wedged NIC queue cannot stall the failover
/// driver's blocking pool forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

fn frame(mac: MacAddr, vip: Ipv4Addr, op: ArpOperation, target_mac: MacAddr) -> Vec<u8> {
    request_frame(mac, vip, vip, op, target_mac)
}

/// One ARP frame, broadcast: `sender_ip` says who asks, `target_ip` what is asked.
fn request_frame(
    mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
    op: ArpOperation,
    target_mac: MacAddr,
) -> Vec<u8> {
    let mut buf = vec![0u8; GARP_FRAME_LEN];
    {
        // Both `new` calls only fail on a too-short buffer; ours is sized exactly.
        let mut eth =
            MutableEthernetPacket::new(&mut buf).expect("buffer holds an Ethernet header");
        eth.set_destination(MacAddr::broadcast());
        eth.set_source(mac);
        eth.set_ethertype(EtherTypes::Arp);
        let mut arp = MutableArpPacket::new(eth.payload_mut()).expect("buffer holds an ARP packet");
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(op);
        arp.set_sender_hw_addr(mac);
        arp.set_sender_proto_addr(sender_ip);
        arp.set_target_hw_addr(target_mac);
        arp.set_target_proto_addr(target_ip);
    }
    buf
}

/// The two frames of one announcement round: `[request form, reply form]` (see the
/// module docs for the field values).
pub fn garp_frames(mac: MacAddr, vip: Ipv4Addr) -> [Vec<u8>; 2] {
    [
        frame(mac, vip, ArpOperations::Request, MacAddr::zero()),
        frame(mac, vip, ArpOperations::Reply, MacAddr::broadcast()),
    ]
}

/// The RFC 5227 probe for `vip`: an ARP request with sender IP 0.0.0.0 (so that no
/// host learns anything from it) and target IP `vip`.
pub fn probe_frame(mac: MacAddr, vip: Ipv4Addr) -> Vec<u8> {
    request_frame(
        mac,
        Ipv4Addr::UNSPECIFIED,
        vip,
        ArpOperations::Request,
        MacAddr::zero(),
    )
}

/// What an ARP probe heard in its window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeFindings {
    /// Our own MAC on the interface.
    pub own: Option<MacAddr>,
    /// Every other MAC that claimed the VIP (as the sender of any ARP packet).
    pub vip_claimed_by: Vec<MacAddr>,
    /// The MAC the peer answered with for its own address, if asked and heard.
    pub peer_mac: Option<MacAddr>,
}

/// Sort one received frame into `found`.
pub fn observe(frame: &[u8], vip: Ipv4Addr, peer: Option<Ipv4Addr>, found: &mut ProbeFindings) {
    use pnet::packet::Packet;
    use pnet::packet::arp::ArpPacket;
    use pnet::packet::ethernet::EthernetPacket;
    let Some(eth) = EthernetPacket::new(frame) else {
        return;
    };
    if eth.get_ethertype() != EtherTypes::Arp {
        return;
    }
    let Some(arp) = ArpPacket::new(eth.payload()) else {
        return;
    };
    let sender = arp.get_sender_hw_addr();
    if Some(sender) == found.own {
        return;
    }
    let ip = arp.get_sender_proto_addr();
    if ip == vip && !found.vip_claimed_by.contains(&sender) {
        found.vip_claimed_by.push(sender);
    }
    if Some(ip) == peer && arp.get_operation() == ArpOperations::Reply {
        found.peer_mac = Some(sender);
    }
}

/// RFC 5227, compressed into a failover budget: send `rounds` ARP probes for `vip`
/// (and, with `peer` = (our address, the peer's address), as many ordinary ARP
/// requests for the peer, so that its MAC is known) spread over `window`, and
/// listen for the whole window. Any host that answers ARP answers within a
/// millisecond or so; the RFC's seconds-long waits are for hosts that probe on
/// boot, not for a takeover. Blocking: call it from `spawn_blocking`.
pub fn probe_vip(
    ifname: &str,
    vip: Ipv4Addr,
    peer: Option<(Ipv4Addr, Ipv4Addr)>,
    rounds: u32,
    window: Duration,
) -> Result<ProbeFindings, ArpError> {
    let Link {
        mac,
        mut tx,
        mut rx,
    } = open(ifname, Some(Duration::from_millis(5)))?;
    let mut found = ProbeFindings {
        own: Some(mac),
        ..Default::default()
    };
    let probe = probe_frame(mac, vip);
    let ask_peer =
        peer.map(|(me, p)| request_frame(mac, me, p, ArpOperations::Request, MacAddr::zero()));
    let start = std::time::Instant::now();
    let rounds = rounds.max(1);
    let mut sent = 0;
    while start.elapsed() < window {
        if sent < rounds && start.elapsed() >= window * sent / rounds {
            send(tx.as_mut(), ifname, &probe)?;
            if let Some(f) = &ask_peer {
                send(tx.as_mut(), ifname, f)?;
            }
            sent += 1;
        }
        match rx.next() {
            Ok(frame) => observe(frame, vip, peer.map(|(_, p)| p), &mut found),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!(ifname, %vip, ?found, "ARP probe done");
    Ok(found)
}

/// An `AF_PACKET` channel on an interface, with the interface's MAC.
struct Link {
    mac: MacAddr,
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
}

/// Open a [`Link`] on `ifname`; reads time out after `read_timeout` (none: a sender
/// only).
fn open(ifname: &str, read_timeout: Option<Duration>) -> Result<Link, ArpError> {
    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == ifname)
        .ok_or_else(|| ArpError::NoInterface(ifname.to_string()))?;
    let mac = match iface.mac {
        Some(mac) if mac != MacAddr::zero() => mac,
        _ => return Err(ArpError::NoInterface(ifname.to_string())),
    };
    let config = datalink::Config {
        write_timeout: Some(WRITE_TIMEOUT),
        read_timeout,
        // pnet's default turns promiscuous mode on; ARP to and from us needs none.
        promiscuous: false,
        ..Default::default()
    };
    match datalink::channel(&iface, config)? {
        Channel::Ethernet(tx, rx) => Ok(Link { mac, tx, rx }),
        _ => Err(ArpError::Io(std::io::Error::other(format!(
            "{ifname}: not an Ethernet channel"
        )))),
    }
}

fn send(tx: &mut dyn DataLinkSender, ifname: &str, frame: &[u8]) -> Result<(), ArpError> {
    match tx.send_to(frame, None) {
        Some(result) => Ok(result?),
        // pnet returns None only when the frame does not fit its write buffer.
        None => Err(ArpError::Io(std::io::Error::other(format!(
            "{ifname}: frame of {} bytes rejected by the datalink channel",
            frame.len()
        )))),
    }
}

/// Announce `vip` on `ifname`: `count` rounds, `interval` apart; each round sends an
/// ARP request and an ARP reply form. Blocking: call it from `spawn_blocking`.
pub fn send_garp(
    ifname: &str,
    vip: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> Result<(), ArpError> {
    if count == 0 {
        return Ok(());
    }
    let Link { mac, mut tx, .. } = open(ifname, None)?;
    let frames = garp_frames(mac, vip);
    for round in 0..count {
        if round > 0 {
            std::thread::sleep(interval);
        }
        for f in &frames {
            send(tx.as_mut(), ifname, f)?;
            let sent = &super::counters::global().garp_sent;
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    tracing::debug!(ifname, %vip, %mac, count, "gratuitous ARP sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr(0x02, 0x11, 0x22, 0x33, 0x44, 0x55);

    #[test]
    fn frames_byte_by_byte() {
        let [request, reply] = garp_frames(MAC, Ipv4Addr::new(192, 168, 3, 234));
        #[rustfmt::skip]
        let header = [
            // Ethernet: dst broadcast, src our MAC, type ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x08, 0x06,
            // ARP: htype Ethernet, ptype IPv4, hlen 6, plen 4
            0x00, 0x01, 0x08, 0x00, 6, 4,
        ];
        #[rustfmt::skip]
        let request_arp = [
            // op request, sender MAC, sender IP = VIP
            0x00, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 192, 168, 3, 234,
            // target MAC zero, target IP = VIP
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 168, 3, 234,
        ];
        #[rustfmt::skip]
        let reply_arp = [
            // op reply, sender as in the request
            0x00, 0x02, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 192, 168, 3, 234,
            // target MAC broadcast, target IP = VIP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 192, 168, 3, 234,
        ];
        assert_eq!(request.len(), GARP_FRAME_LEN);
        assert_eq!(request, [&header[..], &request_arp[..]].concat());
        assert_eq!(reply, [&header[..], &reply_arp[..]].concat());
    }

    #[test]
    fn probe_frame_is_rfc5227() {
        let f = probe_frame(MAC, Ipv4Addr::new(192, 168, 3, 234));
        assert_eq!(&f[..6], &[0xff; 6], "broadcast");
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "sender IP all zero");
        assert_eq!(&f[32..38], &[0; 6], "target MAC zero");
        assert_eq!(&f[38..42], &[192, 168, 3, 234], "target IP = VIP");
    }

    #[test]
    fn observe_sorts_claims_and_peer_replies() {
        let vip = Ipv4Addr::new(10, 0, 0, 234);
        let peer = Ipv4Addr::new(10, 0, 0, 2);
        let other = MacAddr(2, 0, 0, 0, 0, 9);
        let mut found = ProbeFindings {
            own: Some(MAC),
            ..Default::default()
        };
        // Our own probe coming back is ignored.
        observe(&probe_frame(MAC, vip), vip, Some(peer), &mut found);
        // A foreign host answering for the VIP.
        let [_, claim] = garp_frames(other, vip);
        observe(&claim, vip, Some(peer), &mut found);
        observe(&claim, vip, Some(peer), &mut found);
        assert_eq!(found.vip_claimed_by, vec![other]);
        // The peer answering for itself.
        let reply = request_frame(other, peer, peer, ArpOperations::Reply, MAC);
        observe(&reply, vip, Some(peer), &mut found);
        assert_eq!(found.peer_mac, Some(other));
        // Garbage is ignored.
        observe(&[1, 2, 3], vip, Some(peer), &mut found);
        observe(&[0u8; 60], vip, Some(peer), &mut found);
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(matches!(
            send_garp(
                "gw-no-such-if0",
                Ipv4Addr::new(10, 0, 0, 7),
                1,
                Duration::ZERO
            ),
            Err(ArpError::NoInterface(_))
        ));
    }

    #[test]
    fn zero_rounds_send_nothing() {
        send_garp(
            "gw-no-such-if0",
            Ipv4Addr::new(10, 0, 0, 7),
            0,
            Duration::ZERO,
        )
        .unwrap();
    }
}
