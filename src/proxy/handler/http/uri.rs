//! Absolute `http://` URIs and `CONNECT` authorities, into the router's
//! `host:port` form.

/// An absolute `http://` URI split for forwarding.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Uri {
    /// `host:port` for the router (port defaulted to 80).
    pub(super) authority: String,
    /// The `Host` header value: the authority as written, without userinfo.
    pub(super) host_header: String,
    /// Origin form: `/path?query`.
    pub(super) path: String,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum UriError {
    Scheme,
    Invalid,
}

pub(super) fn parse_absolute_uri(target: &str) -> Result<Uri, UriError> {
    let rest = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(UriError::Scheme),
        None => return Err(UriError::Invalid),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let path = path.split('#').next().unwrap_or("");
    let path = match path.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    let router_target = parse_authority(authority, Some(80)).ok_or(UriError::Invalid)?;
    Ok(Uri {
        authority: router_target,
        host_header: authority.to_string(),
        path,
    })
}

/// `host:port`, `[v6]:port`, or with a default port a bare `host` / `[v6]`, into
/// the router's `host:port` form. `None` when it is not a plausible authority.
pub(super) fn parse_authority(s: &str, default_port: Option<u16>) -> Option<String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok()?,
            None if after.is_empty() => default_port?,
            None => return None,
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((host, p)) => (host, p.parse::<u16>().ok()?),
            None => (s, default_port?),
        }
    };
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || port == 0 || !host.chars().all(valid_char) {
        return None;
    }
    Some(super::super::join_host_port(host, port))
}
