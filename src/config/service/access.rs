//! gobetween's `access` section: who may use a service.
//!
//! ```yaml
//! access: {default: deny, rules: ["allow 10.0.0.0/8", "deny 10.1.0.0/16"]}
//! ```
//!
//! Rules are parsed when the file is read (a bad rule is an error naming
//! `services[i].access.rules[j]`), so the accept loop only compares numbers.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// gobetween's `access`: ordered rules, first match wins, else `default`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The policy for a client no rule matches: `allow` (default) or `deny`.
    #[serde(default)]
    pub default: AccessPolicy,
    /// `"allow 10.0.0.0/8"`, `"deny 192.168.1.7"`, `"deny ::/0"`, in order.
    #[serde(default)]
    pub rules: Vec<AccessRule>,
}

impl AccessConfig {
    /// Whether a client at `ip` may connect: the first matching rule decides.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let policy = self
            .rules
            .iter()
            .find(|r| r.net.contains(ip))
            .map(|r| r.policy)
            .unwrap_or(self.default);
        policy == AccessPolicy::Allow
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessPolicy {
    #[default]
    Allow,
    Deny,
}

/// One rule: `allow CIDR` or `deny CIDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRule {
    pub policy: AccessPolicy,
    pub net: Cidr,
}

impl AccessRule {
    pub fn parse(r: &str) -> Result<AccessRule, String> {
        let bad = || format!("{r:?}: expected \"allow CIDR\" or \"deny CIDR\"");
        let mut parts = r.split_whitespace();
        let policy = match parts.next() {
            Some("allow") => AccessPolicy::Allow,
            Some("deny") => AccessPolicy::Deny,
            _ => return Err(bad()),
        };
        let net = match (parts.next(), parts.next()) {
            (Some(n), None) => Cidr::parse(n)?,
            _ => return Err(bad()),
        };
        Ok(AccessRule { policy, net })
    }
}

impl<'de> Deserialize<'de> for AccessRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AccessRule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An address prefix: `10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: expected an IP address or CIDR like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: expected a prefix length 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside. An IPv4-mapped IPv6 client matches IPv4 rules.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn access_first_match_wins() {
        let a = AccessConfig {
            default: AccessPolicy::Deny,
            rules: vec![
                AccessRule::parse("deny 10.0.0.7").unwrap(),
                AccessRule::parse("allow 10.0.0.0/8").unwrap(),
            ],
        };
        assert!(a.allows("10.1.2.3".parse().unwrap()));
        assert!(!a.allows("10.0.0.7".parse().unwrap()));
        assert!(!a.allows("192.168.0.1".parse().unwrap()));
        assert!(AccessRule::parse("permit 1.2.3.4").is_err());
        assert!(AccessRule::parse("allow 1.2.3.4 extra").is_err());
    }
}
