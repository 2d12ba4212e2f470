//! GOST's `interface`: the network exit of outgoing connections.
//!
//! A list tried in order: an interface name binds the socket to that device
//! (`SO_BINDTODEVICE`), an address binds it to that source address. An entry
//! marked strict with a trailing `!` ends the list when it fails, as in GOST:
//! `interface: "192.168.0.100,192.168.0.101!,192.168.0.102"` never reaches
//! `.102` if `.101` fails. Parsed when the file is read; the router only walks
//! the list.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer};

use crate::config::FieldError;
use crate::net::Interfaces;

/// A parsed `interface` value: the exits, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// The text as written, for messages.
    pub text: String,
    pub exits: Vec<Exit>,
}

/// One entry of the `interface` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub via: Via,
    /// If this entry fails, do not try the next.
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A network interface by name (`eth0`).
    Device(String),
    /// A local source address.
    Source(IpAddr),
}

impl Interface {
    /// Parse `eth0`, `192.168.0.1`, `fd::1,192.168.0.2!`.
    pub fn parse(value: &str) -> Result<Interface, String> {
        let mut exits = Vec::new();
        for e in value.split(',').map(str::trim) {
            let (name, strict) = match e.strip_suffix('!') {
                Some(n) => (n.trim(), true),
                None => (e, false),
            };
            if name.is_empty() {
                return Err(format!(
                    "{value:?}: expected an interface name, an address, or a comma-separated list of them"
                ));
            }
            let via = match name.parse::<IpAddr>() {
                Ok(ip) => Via::Source(ip),
                Err(_) => Via::Device(name.to_string()),
            };
            exits.push(Exit { via, strict });
        }
        Ok(Interface {
            text: value.to_string(),
            exits,
        })
    }
}

impl Interface {
    /// Every entry exists on this host: each name is a network interface, each
    /// address is one of this host's. `field` is where the value is written
    /// (`services[0].interface`), for the error. A fallback list is checked
    /// whole: an entry that cannot exist is a typo, not a fallback.
    pub fn check_host(&self, ifs: &Interfaces, field: &str) -> Result<(), FieldError> {
        for e in &self.exits {
            let problem = match &e.via {
                Via::Device(name) if !ifs.exists(name) => format!(
                    "no interface named {name:?} on this host: expected one of {}",
                    known_names(ifs)
                ),
                Via::Source(ip) if !is_local(*ip, ifs) => format!(
                    "{ip} is not an address of this host: expected an address one of its interfaces holds"
                ),
                _ => continue,
            };
            let list = if self.exits.len() > 1 {
                format!(" (in {:?})", self.text)
            } else {
                String::new()
            };
            return Err(FieldError::new(field, format!("{problem}{list}")));
        }
        Ok(())
    }
}

/// Whether `ip` is an address of this host: in the snapshot (IPv4), or the
/// kernel lets a socket bind it (IPv6, which the snapshot does not list, and
/// the rest of 127.0.0.0/8).
fn is_local(ip: IpAddr, ifs: &Interfaces) -> bool {
    if let IpAddr::V4(v4) = ip
        && ifs.find(v4).is_some()
    {
        return true;
    }
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The interface names of the snapshot, for an error message.
fn known_names(ifs: &Interfaces) -> String {
    let mut names: Vec<&str> = ifs.addrs.iter().map(|a| a.ifname.as_str()).collect();
    names.dedup();
    if names.is_empty() {
        "the host's interfaces (`ip link`)".into()
    } else {
        names.join(", ")
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Interface {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Interface::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interface_lists() {
        let e = Interface::parse("eth0, 192.168.0.1!,fd::1").unwrap().exits;
        assert_eq!(
            e[0],
            Exit {
                via: Via::Device("eth0".into()),
                strict: false
            }
        );
        assert_eq!(
            e[1],
            Exit {
                via: Via::Source("192.168.0.1".parse().unwrap()),
                strict: true
            }
        );
        assert_eq!(e[2].via, Via::Source("fd::1".parse().unwrap()));
        assert!(Interface::parse("eth0,,eth1").is_err());
        assert!(Interface::parse("!").is_err());
    }

    #[test]
    fn host_check_names_the_missing_entry() {
        let ifs = Interfaces {
            addrs: vec![crate::net::IfAddr::new(
                "lo",
                std::net::Ipv4Addr::LOCALHOST,
                8,
            )],
        };
        let ok = |s: &str| {
            Interface::parse(s)
                .unwrap()
                .check_host(&ifs, "services[0].interface")
        };
        ok("lo, 127.0.0.1, 127.0.0.9").unwrap();
        let e = ok("lo,nonexistent0!").unwrap_err();
        assert_eq!(e.field, "services[0].interface");
        assert!(
            e.message.contains("\"nonexistent0\"") && e.message.contains("lo"),
            "{e:?}"
        );
        // 192.0.2.9 is TEST-NET-1: never an address of this host.
        let e = ok("192.0.2.9").unwrap_err();
        assert!(e.message.contains("192.0.2.9 is not an address"), "{e:?}");
    }
}
