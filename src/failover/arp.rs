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

use pnet::datalink::{self, Channel, DataLinkSender};
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
        arp.set_sender_proto_addr(vip);
        arp.set_target_hw_addr(target_mac);
        arp.set_target_proto_addr(vip);
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
        // pnet's default turns promiscuous mode on; a sender has no use for it.
        promiscuous: false,
        ..Default::default()
    };
    let mut tx = match datalink::channel(&iface, config)? {
        Channel::Ethernet(tx, _rx) => tx,
        _ => {
            return Err(ArpError::Io(std::io::Error::other(format!(
                "{ifname}: not an Ethernet channel"
            ))));
        }
    };
    let frames = garp_frames(mac, vip);
    for round in 0..count {
        if round > 0 {
            std::thread::sleep(interval);
        }
        for f in &frames {
            send(tx.as_mut(), ifname, f)?;
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
