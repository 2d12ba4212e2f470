//! The macOS backend: `ifconfig` aliases.
//!
//! macOS has no netlink; the supported way to add a second address to an interface is
//! `ifconfig <if> alias <addr> netmask <mask>` and to remove it `ifconfig <if> -alias
//! <addr>`. `ifconfig` does not tell "added" from "was already there", so presence is
//! checked first with `getifaddrs(3)`, which is also how [`is_bound`] answers.
//!
//! The argument builders are plain functions compiled on every platform, so the exact
//! command lines are unit-tested on the Linux CI as well.
//!
//! [`is_bound`]: super::VipController::is_bound

use std::net::Ipv4Addr;

use super::netmask_of;

/// Where `ifconfig` lives on macOS. An absolute path: the daemon runs as root and must
/// not pick up whatever `ifconfig` comes first in an inherited `PATH`.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) const IFCONFIG: &str = "/sbin/ifconfig";

/// `ifconfig` arguments that add `addr/prefix` to `ifname` as an alias.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) fn alias_args(ifname: &str, addr: Ipv4Addr, prefix: u8) -> Vec<String> {
    vec![
        ifname.to_string(),
        "alias".to_string(),
        addr.to_string(),
        "netmask".to_string(),
        netmask_of(prefix).to_string(),
    ]
}

/// `ifconfig` arguments that remove the alias `addr` from `ifname`.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) fn unalias_args(ifname: &str, addr: Ipv4Addr) -> Vec<String> {
    vec![ifname.to_string(), "-alias".to_string(), addr.to_string()]
}

#[cfg(target_os = "macos")]
pub(crate) use imp::Ifconfig;

#[cfg(target_os = "macos")]
mod imp {
    use std::net::Ipv4Addr;

    use nix::ifaddrs::getifaddrs;

    use super::{IFCONFIG, alias_args, unalias_args};
    use crate::failover::vip::VipError;

    pub(crate) struct Ifconfig;

    async fn run(args: Vec<String>) -> Result<(), VipError> {
        let out = tokio::process::Command::new(IFCONFIG)
            .args(&args)
            .kill_on_drop(true)
            .output()
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(VipError::Command {
                command: format!("{IFCONFIG} {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn present(ifname: &str, addr: Ipv4Addr) -> Result<bool, VipError> {
        let mut exists = false;
        for ifa in getifaddrs().map_err(std::io::Error::from)? {
            if ifa.interface_name != ifname {
                continue;
            }
            exists = true;
            let found = ifa
                .address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|sin| sin.ip());
            if found == Some(addr) {
                return Ok(true);
            }
        }
        if exists || nix::net::if_::if_nametoindex(ifname).is_ok() {
            Ok(false)
        } else {
            Err(VipError::NoInterface(ifname.to_string()))
        }
    }

    impl Ifconfig {
        pub(crate) async fn open(ifname: &str) -> Result<Self, VipError> {
            nix::net::if_::if_nametoindex(ifname)
                .map_err(|_| VipError::NoInterface(ifname.to_string()))?;
            Ok(Ifconfig)
        }

        pub(crate) async fn bind(
            &self,
            ifname: &str,
            addr: Ipv4Addr,
            prefix: u8,
        ) -> Result<bool, VipError> {
            if present(ifname, addr)? {
                return Ok(false);
            }
            run(alias_args(ifname, addr, prefix)).await?;
            Ok(true)
        }

        pub(crate) async fn unbind(&self, ifname: &str, addr: Ipv4Addr) -> Result<bool, VipError> {
            if !present(ifname, addr)? {
                return Ok(false);
            }
            run(unalias_args(ifname, addr)).await?;
            Ok(true)
        }

        pub(crate) async fn is_bound(
            &self,
            ifname: &str,
            addr: Ipv4Addr,
        ) -> Result<bool, VipError> {
            present(ifname, addr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_command_line() {
        assert_eq!(
            alias_args("en0", Ipv4Addr::new(192, 168, 3, 234), 24),
            ["en0", "alias", "192.168.3.234", "netmask", "255.255.255.0"]
        );
        assert_eq!(
            alias_args("en1", Ipv4Addr::new(10, 0, 0, 5), 32),
            ["en1", "alias", "10.0.0.5", "netmask", "255.255.255.255"]
        );
        assert_eq!(
            alias_args("bridge0", Ipv4Addr::new(172, 16, 9, 1), 20),
            ["bridge0", "alias", "172.16.9.1", "netmask", "255.255.240.0"]
        );
    }

    #[test]
    fn unalias_command_line() {
        assert_eq!(
            unalias_args("en0", Ipv4Addr::new(192, 168, 3, 234)),
            ["en0", "-alias", "192.168.3.234"]
        );
    }
}
