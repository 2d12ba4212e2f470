//! GOST's command-line form of a service endpoint: `[user:pass@]addr[?k=v&...]`,
//! as in `-metrics "user:pass@127.0.0.1:9000?path=/metrics"` and `-api`.

use super::auth::{AuthConfig, Secret};
use super::service::ListenAddr;

/// A flag value taken apart: credentials, the address, the query's options.
#[derive(Debug)]
pub struct FlagUrl {
    pub auth: Option<AuthConfig>,
    pub addr: ListenAddr,
    /// `k=v` pairs in order; a bare `k` has an empty value.
    pub options: Vec<(String, String)>,
}

impl FlagUrl {
    /// Parse the value of `-{flag}`; errors name the flag and what is expected.
    pub fn parse(flag: &str, s: &str) -> Result<FlagUrl, String> {
        // The password may contain '@': the address starts after the last one.
        let (cred, rest) = match s.rsplit_once('@') {
            Some((c, r)) => (Some(c), r),
            None => (None, s),
        };
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let auth = match cred {
            Some(c) => {
                let (u, p) = c
                    .split_once(':')
                    .ok_or_else(|| format!("-{flag}: expected user:password@address"))?;
                Some(AuthConfig {
                    username: u.to_string(),
                    password: Secret(p.to_string()),
                })
            }
            None => None,
        };
        let addr = ListenAddr::parse(addr).map_err(|e| format!("-{flag}: {e}"))?;
        let options = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Ok(FlagUrl {
            auth,
            addr,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts() {
        let f = FlagUrl::parse("metrics", "u:p@ss@127.0.0.1:9000?path=/m&x").unwrap();
        let a = f.auth.unwrap();
        assert_eq!((a.username.as_str(), a.password.expose()), ("u", "p@ss"));
        assert_eq!(f.addr.addr.to_string(), "127.0.0.1:9000");
        assert_eq!(
            f.options,
            [("path".into(), "/m".into()), ("x".into(), String::new())]
        );
        let f = FlagUrl::parse("metrics", ":9000").unwrap();
        assert!(f.auth.is_none() && f.options.is_empty());
        assert_eq!(f.addr.addr.to_string(), "0.0.0.0:9000");
        let e = FlagUrl::parse("metrics", "user@:9000").unwrap_err();
        assert!(e.contains("-metrics") && e.contains("user:password"), "{e}");
        assert!(FlagUrl::parse("metrics", "nowhere").is_err());
    }
}
