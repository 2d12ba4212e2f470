//! GOST's URL grammar for `-L` (a service) and `-F` (a hop of the default chain):
//!
//! ```text
//! [handler][+listener]://[user:pass@][host]:port[/target[,target2...]][?key=value&...]
//! ```
//!
//! [`split`] cuts a URL into its parts without interpreting them; `service.rs`
//! (and `chain.rs` for `-F`) turn the parts into the typed config values a file
//! would give (`ServiceConfig`, ...), so a service from the command line and one
//! from `gateway.yml` are the same value and go through the same validation.
//!
//! Values are percent-decoded (`user%40corp:p%3Ass@` is user `user@corp`,
//! password `p:ss`). Query values are read with the config's own parsers
//! ([`value`]): `failTimeout=1m30s` is parsed by the same code as
//! `failTimeout: 1m30s` in a file, so the two spellings cannot drift apart.

use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

use crate::config::auth::{AuthConfig, Secret};

/// A URL cut into its parts, nothing interpreted yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts {
    /// `http+tls` → `("http", Some("tls"))`; `None` when the URL has no `scheme://`.
    pub scheme: Option<(String, Option<String>)>,
    /// `user:pass@`, decoded.
    pub auth: Option<AuthConfig>,
    /// `host:port`, `:port` or `[v6]:port` as written.
    pub addr: String,
    /// The comma-separated list after the first `/`.
    pub targets: Vec<String>,
    /// `key=value` pairs, decoded, in order; a key appears at most once.
    pub query: Vec<(String, String)>,
}

/// Cut `url` into its parts. The error says what is wrong, without the URL (the
/// caller adds it, masking the password).
pub fn split(url: &str) -> Result<Parts, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("empty URL: expected [handler][+listener]://[user:pass@][host]:port".into());
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) => (Some(scheme(s)?), rest),
        None => (None, url),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, query(q)?),
        None => (rest, Vec::new()),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let (auth, addr) = match authority.rsplit_once('@') {
        Some((userinfo, addr)) => (Some(userinfo_auth(userinfo)?), addr),
        None => (None, authority),
    };
    if addr.is_empty() {
        return Err("no address: expected [host]:port, e.g. :8080".into());
    }
    let targets = match path {
        None => Vec::new(),
        // `tcp://:8080/` names no target: the same as none.
        Some("") => Vec::new(),
        Some(p) => p
            .split(',')
            .map(|t| {
                let t = decode(t.trim())?;
                if t.is_empty() {
                    Err("empty target in the list: expected host:port[,host:port...]".to_string())
                } else {
                    Ok(t)
                }
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Parts {
        scheme,
        auth,
        addr: addr.to_string(),
        targets,
        query,
    })
}

fn scheme(s: &str) -> Result<(String, Option<String>), String> {
    let bad =
        || format!("scheme {s:?}: expected handler or handler+listener, e.g. http or http+tls");
    let mut it = s.split('+');
    let first = it.next().unwrap_or_default();
    let second = it.next();
    if it.next().is_some()
        || first.is_empty()
        || second.is_some_and(str::is_empty)
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
    {
        return Err(bad());
    }
    Ok((
        first.to_ascii_lowercase(),
        second.map(str::to_ascii_lowercase),
    ))
}

fn userinfo_auth(userinfo: &str) -> Result<AuthConfig, String> {
    let (user, pass) = match userinfo.split_once(':') {
        Some((u, p)) => (u, p),
        None => (userinfo, ""),
    };
    let username = decode(user)?;
    if username.is_empty() {
        return Err("empty user name before '@': expected user:pass@".into());
    }
    Ok(AuthConfig {
        username,
        password: Secret(decode(pass)?),
    })
}

fn query(q: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("query {pair:?}: expected key=value"));
        };
        let (k, v) = (decode(k)?, decode(v)?);
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("option {k:?} given twice: expected it once"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{s:?}: percent-encoded bytes are not UTF-8"))
}

/// Read a query value as the config file would read the same option: `T`'s own
/// deserializer (durations, strategies with their aliases, booleans, numbers).
/// The value is quoted as a YAML string first when `T` is textual, so nothing in
/// it is read as YAML syntax.
pub fn value<T: DeserializeOwned>(key: &str, v: &str) -> Result<T, String> {
    // A plain scalar: numbers and booleans keep their type; anything that YAML
    // would read as structure (flow collections, anchors, comments) is refused.
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if !plain {
        return Err(format!("{key}={v:?}: expected a plain value"));
    }
    crate::config::from_yaml::<T>(v).map_err(|e| format!("{key}={v}: {}", e.message))
}

/// A file name option (`certFile=...`).
pub fn path(k: &str, v: &str) -> Result<std::path::PathBuf, String> {
    if v.is_empty() {
        Err(format!("{k}: expected a file name"))
    } else {
        Ok(std::path::PathBuf::from(v))
    }
}

/// The error for a query key not in `options` (a flag's table of keys).
pub fn unknown(k: &str, options: &[(&str, &str)]) -> String {
    let known: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    format!("unknown option {k:?}: expected one of {}", known.join(", "))
}

/// A part of the scheme read as the config type it names (`HandlerType`,
/// `DialerType`, ...), with that type's own list of known names on error.
pub fn kind<T: DeserializeOwned>(what: &str, name: &str) -> Result<T, String> {
    crate::config::from_yaml::<T>(name)
        .map_err(|e| format!("{what} {name:?} in the scheme: {}", e.message))
}

/// `http://user:pass@:8080` → `http://user:MASKED@:8080`, for error messages.
pub fn masked(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return mask_authority(url);
    };
    format!("{scheme}://{}", mask_authority(rest))
}

fn mask_authority(rest: &str) -> String {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, addr)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:MASKED@{addr}{tail}"),
            None => rest.to_string(),
        },
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_part() {
        let p = split("http+tls://u%40corp:p%3Ass@127.0.0.1:8443/a:1,b:2?x=1&y=a%20b").unwrap();
        assert_eq!(p.scheme, Some(("http".into(), Some("tls".into()))));
        let a = p.auth.unwrap();
        assert_eq!(a.username, "u@corp");
        assert_eq!(a.password.expose(), "p:ss");
        assert_eq!(p.addr, "127.0.0.1:8443");
        assert_eq!(p.targets, ["a:1", "b:2"]);
        assert_eq!(
            p.query,
            [("x".into(), "1".into()), ("y".into(), "a b".into())]
        );
    }

    #[test]
    fn scheme_and_path_are_optional() {
        let p = split(":8080?interface=eth0").unwrap();
        assert_eq!(p.scheme, None);
        assert_eq!(p.addr, ":8080");
        assert_eq!(p.query, [("interface".into(), "eth0".into())]);
        let p = split("tcp://[::1]:80/").unwrap();
        assert_eq!(p.addr, "[::1]:80");
        assert!(p.targets.is_empty());
        // A user without a password: an empty password.
        let p = split("socks5://alice@:1080").unwrap();
        assert_eq!(p.auth.unwrap().password.expose(), "");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, msg) in [
            ("", "empty URL"),
            ("http://", "no address"),
            ("http://u:p@", "no address"),
            ("a+b+c://:1", "scheme"),
            ("+tls://:1", "scheme"),
            ("http+://:1", "scheme"),
            ("ht tp://:1", "scheme"),
            ("tcp://:1/a:1,,b:2", "empty target"),
            ("http://:1?x", "expected key=value"),
            ("http://:1?x=1&x=2", "given twice"),
            ("http://:pw@:1", "empty user name"),
            ("http://:1?x=%ff", "not UTF-8"),
        ] {
            let e = split(url).unwrap_err();
            assert!(e.contains(msg), "{url}: {e}");
        }
    }

    #[test]
    fn values_use_the_config_parsers() {
        let d: crate::config::duration::DurationStr = value("failTimeout", "1m30s").unwrap();
        assert_eq!(d.0, std::time::Duration::from_secs(90));
        assert!(value::<bool>("ignoreChain", "true").unwrap());
        assert!(
            value::<u32>("maxFails", "x")
                .unwrap_err()
                .contains("maxFails=x")
        );
        // Nothing is read as YAML structure.
        assert!(value::<String>("k", "{a: 1}").is_err());
        assert!(value::<String>("k", "*x").is_err());
    }

    #[test]
    fn passwords_are_masked_in_messages() {
        assert_eq!(
            masked("http://u:secret@:8080/x?y=1"),
            "http://u:MASKED@:8080/x?y=1"
        );
        assert_eq!(masked("u:secret@:8080"), "u:MASKED@:8080");
        assert_eq!(masked("http://:8080"), "http://:8080");
    }
}
