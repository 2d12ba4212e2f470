//! Watching the kernel (netlink) for link state and for our VIP being removed.
//!
//! A master must react to two things it did not cause: its uplink losing carrier (the
//! VIP is useless there, let the peer take it) and an operator or another daemon
//! removing the VIP (put it back). Polling for either costs latency or CPU; the kernel
//! instead *pushes* both as rtnetlink notifications to any socket that joined the
//! right multicast groups:
//!
//! * `RTMGRP_LINK` — an `RTM_NEWLINK` whenever anything about a link changes (flags,
//!   carrier, operstate, statistics…), `RTM_DELLINK` when it disappears;
//! * `RTMGRP_IPV4_IFADDR` — `RTM_NEWADDR` / `RTM_DELADDR` for every IPv4 address.
//!
//! [`watch`] joins both, keeps a small `Tracker` of "is the link up, which entries of
//! the VIP are on the interface", and turns the stream of notifications into the few
//! [`NetEvent`]s the failover driver cares about, each sent only when the tracked
//! state actually changes (a link emits many `RTM_NEWLINK`s that change nothing we
//! look at).
//!
//! Multicast netlink is lossy by design: if we fall behind, the kernel drops
//! notifications and tells us once (`ENOBUFS`, surfaced as an overrun message). We
//! then let the notifications still queued drain, re-read the state with a dump and
//! report whatever differs — the standard way to resynchronise with the kernel (the
//! order matters; see `Resync`).
//!
//! "Up" means what a failover daemon needs: administratively up *and* operationally
//! up *and* carrier present (`IFF_UP`, `IFF_RUNNING`, `IFF_LOWER_UP`). A veth whose
//! peer is down has `IFF_UP` but no carrier, so it is down here; an interface that
//! does not exist is down too.

use std::net::Ipv4Addr;

use nix::net::if_::InterfaceFlags;
use tokio::sync::mpsc;

use super::vip::VipError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetEvent {
    /// Carrier / operational state of the interface. [`watch`] sends it once at start
    /// with the state it found (so that a change between the caller's own check and
    /// the start of the watch is never lost), then on every change.
    Link { up: bool },
    /// Someone removed the VIP from the interface.
    VipRemoved,
    /// The VIP appeared on the interface.
    VipAdded,
}

/// Whether interface flags mean "can carry traffic now" (see the module docs).
pub(crate) fn oper_up(flags: InterfaceFlags) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let needed =
        InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING | InterfaceFlags::IFF_LOWER_UP;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let needed = InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING;
    flags.contains(needed)
}

/// One `getifaddrs(3)` pass: whether `ifname` is up (false if it does not exist) and
/// whether it carries `vip`.
///
/// `getifaddrs` lists every interface, with or without addresses (Linux: one
/// `AF_PACKET` entry each; BSD/macOS: `AF_LINK`), and glibc answers it over a fresh
/// netlink socket — so it sees the network namespace of the calling thread.
fn scan(ifname: &str, vip: Option<Ipv4Addr>) -> std::io::Result<(bool, bool)> {
    let mut up = false;
    let mut has_vip = false;
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        if ifa.interface_name != ifname {
            continue;
        }
        up = oper_up(ifa.flags);
        if let (Some(vip), Some(sin)) = (vip, ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()))
        {
            has_vip |= sin.ip() == vip;
        }
    }
    Ok((up, has_vip))
}

/// Whether the interface is operationally up right now (see the module docs for what
/// "up" means). An interface that does not exist is reported as down.
pub fn link_is_up(ifname: &str) -> std::io::Result<bool> {
    scan(ifname, None).map(|(up, _)| up)
}

/// Send [`NetEvent`]s for `ifname` / `vip` until `tx` is closed.
///
/// Linux: rtnetlink notifications (see the module docs). Elsewhere: a `getifaddrs`
/// poll every 250 ms.
pub async fn watch(
    ifname: String,
    vip: Ipv4Addr,
    tx: mpsc::Sender<NetEvent>,
) -> Result<(), VipError> {
    #[cfg(target_os = "linux")]
    return linux::watch(ifname, vip, tx).await;
    #[cfg(not(target_os = "linux"))]
    return fallback::watch(ifname, vip, tx).await;
}

/// What [`watch`] believes about the interface, and the one place that decides which
/// change is worth an event. Pure: fed with observations, returns events.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    link_up: Option<bool>,
    /// Prefix lengths with which the VIP is on the interface (normally zero or one;
    /// an operator may add the same address twice with different masks). `None`
    /// until the first observation.
    vip_prefixes: Option<std::collections::BTreeSet<u8>>,
}

impl Tracker {
    /// Record the link state; an event on the first observation and on each change.
    pub(crate) fn link(&mut self, up: bool) -> Option<NetEvent> {
        let changed = self.link_up != Some(up);
        self.link_up = Some(up);
        changed.then_some(NetEvent::Link { up })
    }

    /// Record the complete set of VIP entries (after a dump). The first observation is
    /// silent: it is the starting point, not something that happened.
    pub(crate) fn vip_set(&mut self, prefixes: std::collections::BTreeSet<u8>) -> Option<NetEvent> {
        let before = self.vip_prefixes.replace(prefixes);
        let now = self.vip_prefixes.as_ref().is_some_and(|s| !s.is_empty());
        match before {
            None => None,
            Some(b) => Self::presence_event(!b.is_empty(), now),
        }
    }

    /// Record one VIP entry appearing (`present`) or disappearing. (Only netlink
    /// reports single entries; the polling fallback elsewhere compares whole sets.)
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn vip_entry(&mut self, prefix: u8, present: bool) -> Option<NetEvent> {
        let set = self.vip_prefixes.get_or_insert_with(Default::default);
        let was = !set.is_empty();
        if present {
            set.insert(prefix);
        } else {
            set.remove(&prefix);
        }
        Self::presence_event(was, !set.is_empty())
    }

    fn presence_event(was: bool, now: bool) -> Option<NetEvent> {
        match (was, now) {
            (false, true) => Some(NetEvent::VipAdded),
            (true, false) => Some(NetEvent::VipRemoved),
            _ => None,
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use futures::{StreamExt, TryStreamExt};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use nix::net::if_::InterfaceFlags;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::{Handle, MulticastGroup};
    use tokio::sync::mpsc;

    use super::{NetEvent, Tracker, oper_up};
    use crate::failover::vip::VipError;
    use crate::failover::vip::linux::{errno, local_v4, timed};

    fn link_up(msg: &LinkMessage) -> bool {
        // Netlink carries the full 32-bit `ifi_flags`, `IFF_LOWER_UP` included.
        oper_up(InterfaceFlags::from_bits_truncate(
            msg.header.flags.bits() as _
        ))
    }

    fn link_name(msg: &LinkMessage) -> Option<&str> {
        msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The tracker plus the interface identity the notifications are filtered on.
    struct Watched {
        ifname: String,
        vip: Ipv4Addr,
        /// Current index of `ifname`; `None` while it does not exist. Followed through
        /// deletion and re-creation, which changes the index.
        index: Option<u32>,
        /// Set when `ifname` came to denote another interface (or none): the VIP set
        /// we track no longer describes it, and a resync is due.
        identity_changed: bool,
        tracker: Tracker,
    }

    impl Watched {
        fn on_message(&mut self, msg: &RouteNetlinkMessage) -> Option<NetEvent> {
            match msg {
                RouteNetlinkMessage::NewLink(link) => {
                    let same_index = Some(link.header.index) == self.index;
                    match link_name(link) {
                        Some(name) if name == self.ifname => {
                            if !same_index {
                                // A new interface of that name (re-created, or another
                                // one renamed to it): what it carries needs a dump.
                                self.identity_changed = true;
                            }
                            self.index = Some(link.header.index);
                            self.tracker.link(link_up(link))
                        }
                        // Renamed away: for us (and for `VipController`, which looks
                        // the name up) the interface is gone, with its addresses.
                        Some(_) if same_index => {
                            self.index = None;
                            self.identity_changed = true;
                            self.tracker.link(false)
                        }
                        None if same_index => self.tracker.link(link_up(link)),
                        _ => None,
                    }
                }
                RouteNetlinkMessage::DelLink(link) if Some(link.header.index) == self.index => {
                    self.index = None;
                    self.tracker.link(false)
                }
                RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
                    if Some(a.header.index) != self.index
                        || a.header.family != AddressFamily::Inet
                        || local_v4(a) != Some(self.vip)
                    {
                        return None;
                    }
                    let present = matches!(msg, RouteNetlinkMessage::NewAddress(_));
                    self.tracker.vip_entry(a.header.prefix_len, present)
                }
                _ => None,
            }
        }

        /// Re-read link and VIP state with requests on `handle`; events for what
        /// changed.
        async fn resync(&mut self, handle: &Handle) -> Result<Vec<NetEvent>, VipError> {
            let ifname = &self.ifname;
            let mut links = handle.link().get().match_name(ifname.clone()).execute();
            let (index, up) = match timed(|| format!("get link {ifname}"), links.try_next()).await?
            {
                Ok(Some(link)) => (Some(link.header.index), link_up(&link)),
                Ok(None) => (None, false),
                Err(e) if errno(&e) == Some(libc::ENODEV) => (None, false),
                Err(e) => return Err(VipError::Netlink(format!("get link {ifname}: {e}"))),
            };
            let mut prefixes = BTreeSet::new();
            if let Some(index) = index {
                let mut req = handle.address().get().set_link_index_filter(index);
                req.message_mut().header.family = AddressFamily::Inet;
                let dump = req.execute().try_collect::<Vec<_>>();
                let all = timed(|| format!("dump addresses of {ifname}"), dump)
                    .await?
                    .map_err(|e| VipError::Netlink(format!("dump addresses of {ifname}: {e}")))?;
                prefixes.extend(
                    all.iter()
                        .filter(|a| local_v4(a) == Some(self.vip))
                        .map(|a| a.header.prefix_len),
                );
            }
            self.index = index;
            let events = [self.tracker.link(up), self.tracker.vip_set(prefixes)];
            Ok(events.into_iter().flatten().collect())
        }
    }

    /// Aborts the spawned connection task when the watch ends, however it ends.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    pub(super) async fn watch(
        ifname: String,
        vip: Ipv4Addr,
        tx: mpsc::Sender<NetEvent>,
    ) -> Result<(), VipError> {
        // Join the groups *before* the first dump: a change that lands between the
        // two is then either in the dump or queued as a notification, never lost.
        let (conn, handle, mut notifications) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
        ])?;
        let _conn = AbortOnDrop(tokio::spawn(conn));
        let mut watched = Watched {
            ifname,
            vip,
            index: None,
            identity_changed: false,
            tracker: Tracker::default(),
        };
        for ev in watched.resync(&handle).await? {
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
        tracing::debug!(ifname = %watched.ifname, %vip, index = ?watched.index, "netwatch started");
        // Set after an overrun: when to re-read the state (see `Resync`).
        let mut resync = Resync::default();
        loop {
            let msg = tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = resync.wait(), if resync.pending() => None,
                next = notifications.next() => match next {
                    Some((m, _)) => Some(m),
                    None => return Err(VipError::Netlink("notification socket closed".into())),
                },
            };
            let events = match msg.map(|m| m.payload) {
                None => {
                    resync = Resync::default();
                    watched.resync(&handle).await?
                }
                Some(NetlinkPayload::InnerMessage(m)) => {
                    resync.activity();
                    let event = watched.on_message(&m);
                    if std::mem::take(&mut watched.identity_changed) {
                        resync.request();
                    }
                    event.into_iter().collect()
                }
                Some(NetlinkPayload::Overrun(_)) => {
                    tracing::warn!(ifname = %watched.ifname, "netlink notifications lost (ENOBUFS); resynchronising");
                    resync.request();
                    Vec::new()
                }
                Some(_) => Vec::new(),
            };
            for ev in events {
                tracing::debug!(ifname = %watched.ifname, ?ev, "netwatch event");
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// When to re-read the state after an overrun (or after `ifname` changed hands).
    ///
    /// The kernel reports the overrun *before* the notifications still queued on the
    /// socket, and those are older than anything a dump would return now. Dumping at
    /// once and then applying them would roll our view back (a queued "VIP deleted"
    /// from before the loss would win over a dump that shows it present). So the
    /// dump waits until the queue has drained — no notification for [`QUIET`] — or at
    /// most [`MAX_DELAY`] if the kernel keeps talking; anything after the dump is
    /// newer than or equal to it, and applying it again changes nothing.
    #[derive(Default)]
    struct Resync {
        /// (first overrun, last activity since) while a resync is pending.
        since: Option<(tokio::time::Instant, tokio::time::Instant)>,
    }

    const QUIET: std::time::Duration = std::time::Duration::from_millis(20);
    const MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

    impl Resync {
        fn pending(&self) -> bool {
            self.since.is_some()
        }
        fn request(&mut self) {
            let now = tokio::time::Instant::now();
            let first = self.since.map_or(now, |(first, _)| first);
            self.since = Some((first, now));
        }
        fn activity(&mut self) {
            if let Some((_, last)) = &mut self.since {
                *last = tokio::time::Instant::now();
            }
        }
        async fn wait(&self) {
            if let Some((first, last)) = self.since {
                tokio::time::sleep_until((last + QUIET).min(first + MAX_DELAY)).await;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use netlink_packet_route::address::AddressMessage;
        use netlink_packet_route::link::LinkFlags;

        use super::*;
        use crate::failover::vip::linux::vip_message;

        fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
            let mut m = LinkMessage::default();
            m.header.index = index;
            m.header.flags = flags;
            m.attributes.push(LinkAttribute::IfName(name.into()));
            m
        }

        fn up_flags() -> LinkFlags {
            LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp
        }

        fn watched() -> Watched {
            let mut w = Watched {
                ifname: "eth0".into(),
                vip: Ipv4Addr::new(10, 0, 0, 100),
                index: Some(2),
                identity_changed: false,
                tracker: Tracker::default(),
            };
            assert_eq!(w.tracker.link(true), Some(NetEvent::Link { up: true }));
            assert_eq!(w.tracker.vip_set(BTreeSet::new()), None);
            w
        }

        #[test]
        fn link_events_only_on_change() {
            let mut w = watched();
            let same = RouteNetlinkMessage::NewLink(link(2, "eth0", up_flags()));
            assert_eq!(w.on_message(&same), None);
            // Peer down: still IFF_UP, but no carrier and not running.
            let no_carrier = RouteNetlinkMessage::NewLink(link(2, "eth0", LinkFlags::Up));
            assert_eq!(
                w.on_message(&no_carrier),
                Some(NetEvent::Link { up: false })
            );
            assert_eq!(w.on_message(&no_carrier), None);
            assert_eq!(w.on_message(&same), Some(NetEvent::Link { up: true }));
            // Another interface changes nothing.
            let other = RouteNetlinkMessage::NewLink(link(3, "eth1", LinkFlags::Up));
            assert_eq!(w.on_message(&other), None);
        }

        #[test]
        fn deleted_and_recreated_interface_is_followed() {
            let mut w = watched();
            let del = RouteNetlinkMessage::DelLink(link(2, "eth0", LinkFlags::Up));
            assert_eq!(w.on_message(&del), Some(NetEvent::Link { up: false }));
            assert_eq!(w.index, None);
            let again = RouteNetlinkMessage::NewLink(link(9, "eth0", up_flags()));
            assert_eq!(w.on_message(&again), Some(NetEvent::Link { up: true }));
            assert_eq!(w.index, Some(9));
            assert!(w.identity_changed, "a new index calls for a dump");
        }

        #[test]
        fn renamed_interface_is_gone() {
            let mut w = watched();
            let renamed = RouteNetlinkMessage::NewLink(link(2, "eth9", up_flags()));
            assert_eq!(w.on_message(&renamed), Some(NetEvent::Link { up: false }));
            assert_eq!(w.index, None);
            assert!(w.identity_changed);
            // Its addresses are no longer "on ifname".
            let vip = vip_message(2, Ipv4Addr::new(10, 0, 0, 100), 24);
            assert_eq!(w.on_message(&RouteNetlinkMessage::NewAddress(vip)), None);
        }

        #[test]
        fn vip_events_for_our_address_on_our_interface_only() {
            let mut w = watched();
            let vip = Ipv4Addr::new(10, 0, 0, 100);
            let ours = vip_message(2, vip, 24);
            let elsewhere = vip_message(3, vip, 24);
            let other_addr = vip_message(2, Ipv4Addr::new(10, 0, 0, 1), 24);
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::NewAddress(elsewhere.clone())),
                None
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::NewAddress(other_addr.clone())),
                None
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::NewAddress(ours.clone())),
                Some(NetEvent::VipAdded)
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::NewAddress(ours.clone())),
                None
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::DelAddress(other_addr)),
                None
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::DelAddress(elsewhere)),
                None
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::DelAddress(ours)),
                Some(NetEvent::VipRemoved)
            );
        }

        #[test]
        fn vip_present_twice_is_removed_when_the_last_entry_goes() {
            let mut w = watched();
            let vip = Ipv4Addr::new(10, 0, 0, 100);
            let a: AddressMessage = vip_message(2, vip, 24);
            let b = vip_message(2, vip, 32);
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::NewAddress(a.clone())),
                Some(NetEvent::VipAdded)
            );
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::NewAddress(b.clone())),
                None
            );
            assert_eq!(w.on_message(&RouteNetlinkMessage::DelAddress(a)), None);
            assert_eq!(
                w.on_message(&RouteNetlinkMessage::DelAddress(b)),
                Some(NetEvent::VipRemoved)
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod fallback {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::{NetEvent, Tracker, scan};
    use crate::failover::vip::VipError;

    /// How often the interface is re-read where the kernel does not push changes.
    pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

    pub(super) async fn watch(
        ifname: String,
        vip: Ipv4Addr,
        tx: mpsc::Sender<NetEvent>,
    ) -> Result<(), VipError> {
        let mut tracker = Tracker::default();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = tick.tick() => {}
            }
            let (up, has_vip) = scan(&ifname, Some(vip))?;
            // Prefix lengths are not visible here; presence is all that matters.
            let set: BTreeSet<u8> = if has_vip {
                [32].into()
            } else {
                BTreeSet::new()
            };
            for ev in [tracker.link(up), tracker.vip_set(set)]
                .into_iter()
                .flatten()
            {
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn up_needs_admin_up_running_and_carrier() {
        let all =
            InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING | InterfaceFlags::IFF_LOWER_UP;
        assert!(oper_up(all | InterfaceFlags::IFF_BROADCAST));
        assert!(!oper_up(InterfaceFlags::IFF_UP));
        assert!(!oper_up(
            InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING
        ));
        assert!(!oper_up(
            InterfaceFlags::IFF_RUNNING | InterfaceFlags::IFF_LOWER_UP
        ));
    }

    #[test]
    fn tracker_reports_first_link_state_then_changes() {
        let mut t = Tracker::default();
        assert_eq!(t.link(false), Some(NetEvent::Link { up: false }));
        assert_eq!(t.link(false), None);
        assert_eq!(t.link(true), Some(NetEvent::Link { up: true }));
    }

    #[test]
    fn tracker_vip_first_observation_is_silent_then_resync_diffs() {
        let mut t = Tracker::default();
        assert_eq!(t.vip_set(BTreeSet::from([24])), None);
        assert_eq!(t.vip_set(BTreeSet::from([24])), None);
        assert_eq!(t.vip_set(BTreeSet::new()), Some(NetEvent::VipRemoved));
        assert_eq!(t.vip_entry(24, true), Some(NetEvent::VipAdded));
        assert_eq!(t.vip_entry(24, true), None);
        assert_eq!(t.vip_entry(24, false), Some(NetEvent::VipRemoved));
        assert_eq!(t.vip_entry(24, false), None);
    }

    #[test]
    fn missing_interface_is_down() {
        assert!(!link_is_up("gw-no-such-if0").unwrap());
    }
}
