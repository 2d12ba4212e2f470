//! GOST's `interface`: the network exit of outgoing connections.
//!
//! A list tried in order: an interface name binds the socket to that device
//! (`SO_BINDTODEVICE`), an address binds it to that source address. An entry
//! marked strict with a trailing `!` ends the list when it fails, as in GOST:
//! `interface: "192.168.0.100,192.168.0.101!,192.168.0.102"` never reaches
//! `.102` if `.101` fails. Parsed when the file is read; the router only walks
//! the list.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

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
}
