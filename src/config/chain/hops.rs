//! GOST v3's top-level `hops:`: a hop defined once, by name, and used by any
//! number of chains.
//!
//! ```yaml
//! hops:
//! - name: uplinks                 # a hop as in a chain: selector, interface, nodes...
//!   selector: {strategy: fifo}
//!   nodes:
//!   - {name: proxy-a, addr: 10.0.0.1:3128}
//!   - {name: proxy-b, addr: 10.0.0.2:3128}
//! chains:
//! - name: chain-0
//!   hops:
//!   - name: uplinks               # no nodes: the top-level hop of this name
//!   - name: exit                  # nodes: a hop of this chain only
//!     nodes: [{addr: 192.168.9.1:1080, connector: {type: socks5}}]
//! ```
//!
//! This is GOST's rule (x/config/parsing/chain: a chain's hop with `nodes` is
//! its own, one without is looked up by `name` in the hop registry). What GOST
//! leaves implicit and this model says:
//!
//! * a reference carries the `name` only: another field beside it (a
//!   `selector`, an `interface`, ...) would be silently ignored by GOST, so it is
//!   refused here;
//! * a reference to a hop that does not exist is an error at load (GOST skips
//!   the hop, which makes a shorter chain than written);
//! * a top-level hop is checked where it is used: `interface` or virtual nodes
//!   only as the first hop of a chain, socks5/virtual nodes for a udp service;
//! * a service's chain carries the hops written out ([`write_out`]), so editing
//!   a hop (`PUT /config/hops/{name}`) restarts the services whose chains use
//!   it; at run time the chains that use one hop share it, node health
//!   included, as GOST's do (see `proxy::chain`).

use super::{ChainConfig, HopConfig};
use crate::config::FieldError;
use crate::config::resolver::{self, HostsConfig, NameRef, Named, ResolverConfig};

/// Checks of the top-level `hops:`: unique non-empty names, and each hop on
/// its own (as if it were a first hop; where it is used is checked by
/// [`validate_chain`]).
pub fn validate_hops(hops: &[HopConfig]) -> Result<(), FieldError> {
    resolver::unique(hops)?;
    for (j, hop) in hops.iter().enumerate() {
        hop.validate(&format!("hops[{j}]"), true)?;
    }
    Ok(())
}

impl Named for HopConfig {
    const KIND: &'static str = "hop";
    const SECTION: &'static str = "hops";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for ChainConfig {
    const KIND: &'static str = "chain";
    const SECTION: &'static str = "chains";
    fn name(&self) -> &str {
        &self.name
    }
}

/// Whether a chain's hop is a reference to a top-level hop: it has no nodes.
fn is_reference(hop: &HopConfig) -> bool {
    hop.nodes.is_empty()
}

/// Checks of one chain (`at`: `chains[i]`) whose hops may refer to `hops`;
/// returns the chain with those hops written out.
pub fn validate_chain(
    c: &ChainConfig,
    hops: &[HopConfig],
    at: &str,
) -> Result<ChainConfig, FieldError> {
    if c.hops.is_empty() {
        return Err(FieldError::new(
            format!("{at}.hops"),
            "no hops: expected at least one {name, nodes: [...]}",
        ));
    }
    let mut out = c.clone();
    for (h, hop) in c.hops.iter().enumerate() {
        let hat = format!("{at}.hops[{h}]");
        if !is_reference(hop) {
            hop.validate(&hat, h == 0)?;
            continue;
        }
        let j = reference(hop, hops, &hat)?;
        // The hop is fine on its own (validate_hops); here: fine where it is used.
        hops[j]
            .validate(&format!("hops[{j}]"), h == 0)
            .map_err(|e| {
                FieldError::new(
                    e.field,
                    format!(
                        "{} (hop {:?} is hop {h} of chain {:?}, {hat})",
                        e.message, hop.name, c.name
                    ),
                )
            })?;
        out.hops[h] = hops[j].clone();
    }
    Ok(out)
}

/// The index in `hops` of the hop `hop` (a reference, at `at`) names.
fn reference(hop: &HopConfig, hops: &[HopConfig], at: &str) -> Result<usize, FieldError> {
    if hop.name.trim().is_empty() {
        return Err(FieldError::new(
            format!("{at}.nodes"),
            "no nodes: expected at least one {name, addr, connector, dialer}, \
             or the name of a hop defined under hops:",
        ));
    }
    let extra = [
        ("interface", hop.interface.is_some()),
        ("selector", hop.selector != Default::default()),
        ("resolver", hop.resolver.is_some()),
        ("hosts", hop.hosts.is_some()),
    ];
    if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
        return Err(FieldError::new(
            format!("{at}.{field}"),
            format!(
                "a hop without nodes is the hop {:?} of hops:, which has its own {field}: \
                 expected name only (or nodes, to define the hop here)",
                hop.name
            ),
        ));
    }
    hops.iter().position(|h| h.name == hop.name).ok_or_else(|| {
        let known: Vec<&str> = hops.iter().map(|h| h.name.as_str()).collect();
        let known = if known.is_empty() {
            "there is no hops: section".to_string()
        } else {
            format!("known: {}", known.join(", "))
        };
        FieldError::new(
            format!("{at}.nodes"),
            format!(
                "no nodes, and no hop named {:?} under hops: ({known}): expected nodes, \
                 or the name of a hop defined under hops:",
                hop.name
            ),
        )
    })
}

/// The chain with every reference replaced by the top-level hop it names (for a
/// validated config; a reference that names nothing stays as it is).
pub fn write_out(c: &ChainConfig, hops: &[HopConfig]) -> ChainConfig {
    let mut out = c.clone();
    for hop in out.hops.iter_mut().filter(|h| is_reference(h)) {
        if let Some(h) = hops.iter().find(|h| h.name == hop.name) {
            *hop = h.clone();
        }
    }
    out
}

/// Point the `resolver:`/`hosts:` of every hop and node of `chains` and `hops`
/// at the entries they name; a name no entry has is an error naming the field.
pub fn link_names(
    chains: &mut [ChainConfig],
    hops: &mut [HopConfig],
    resolvers: &[ResolverConfig],
    hosts: &[HostsConfig],
) -> Result<(), FieldError> {
    let link = |r: &mut Option<NameRef<ResolverConfig>>,
                h: &mut Option<NameRef<HostsConfig>>,
                at: &str|
     -> Result<(), FieldError> {
        if let Some(r) = r {
            resolver::link_ref(r, resolvers, &format!("{at}.resolver"))?;
        }
        if let Some(h) = h {
            resolver::link_ref(h, hosts, &format!("{at}.hosts"))?;
        }
        Ok(())
    };
    let in_chains = chains.iter_mut().enumerate().flat_map(|(i, c)| {
        c.hops
            .iter_mut()
            .enumerate()
            .map(move |(h, hop)| (format!("chains[{i}].hops[{h}]"), hop))
    });
    let top = hops
        .iter_mut()
        .enumerate()
        .map(|(j, hop)| (format!("hops[{j}]"), hop));
    for (at, hop) in in_chains.chain(top) {
        link(&mut hop.resolver, &mut hop.hosts, &at)?;
        for (k, n) in hop.nodes.iter_mut().enumerate() {
            link(&mut n.resolver, &mut n.hosts, &format!("{at}.nodes[{k}]"))?;
        }
    }
    Ok(())
}
