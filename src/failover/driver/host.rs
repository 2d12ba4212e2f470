//! What the driver sets on the host before its loop starts: the failover
//! thread's scheduling priority, `promote_secondaries` on the interface, and the
//! heartbeat socket (bound to the interface, broadcast allowed).

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;

/// nice −10 for the calling thread (Linux has per-thread nice values; the threads
/// it starts inherit it). Failing (no CAP_SYS_NICE) only costs the head start.
pub(super) fn raise_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = nix::unistd::gettid().as_raw();
        // SAFETY: plain syscall on our own thread id.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -10) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the failover thread's priority");
        }
    }
}

/// Removing a primary address makes Linux drop the secondaries of its subnet too,
/// unless `promote_secondaries` is set. Should the VIP ever be the primary (it was
/// added before the node's own address), releasing it must not take the node's own
/// address with it; keepalived sets the same switch.
pub(super) fn promote_secondaries(iface: &str) {
    #[cfg(target_os = "linux")]
    {
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/promote_secondaries");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => {}
            _ => match std::fs::write(&path, "1") {
                Ok(()) => tracing::info!("set net.ipv4.conf.{iface}.promote_secondaries=1"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set net.ipv4.conf.{iface}.promote_secondaries")
                }
            },
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = iface;
}

/// Open a UDP socket for heartbeats: bound to the interface, broadcast allowed.
pub(super) fn heartbeat_socket(iface: &str, port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    #[cfg(target_os = "linux")]
    s.bind_device(Some(iface.as_bytes()))?;
    // macOS has no SO_BINDTODEVICE; IP_BOUND_IF pins the socket to the interface.
    #[cfg(target_os = "macos")]
    {
        let index = crate::net::interface_index(iface)
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no interface {iface}"),
                )
            })?;
        s.bind_device_by_index_v4(Some(index))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let _ = iface;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(s.into())
}
