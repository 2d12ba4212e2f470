//! `floating_ip.secret`, `secret_file` and `accept_unauthenticated`: the keys that
//! authenticate heartbeats and echo answers (see `failover::auth`).
//!
//! * `secret: "..."` or `secret: ["new", "old"]` — inline; the first signs, all are
//!   accepted (key rotation).
//! * `secret_file: /etc/gateway/failover.key` — the same, one key per line (blank
//!   lines and `#` comments skipped). Read at start and on every reload (SIGHUP),
//!   so a rotation needs no restart. A file every user may read is refused: the
//!   key is what stands between any host on the LAN and the VIP. A relative path
//!   is relative to the config file's directory.
//! * `accept_unauthenticated: true` — also take unsigned heartbeats and echo
//!   answers; only for moving a running unauthenticated group to a secret without
//!   an outage (docs/security.md gives the order), logged as a warning.
//!
//! Keys must be at least [`MIN_SECRET_LEN`] characters: a captured heartbeat lets
//! an attacker test guesses offline, so a short secret is a weak one.
//!
//! What this module hands on is [`FailoverKeys`], the checked secrets in a
//! masked type; `failover::auth::Keyring` is built from it (config holds values,
//! failover holds the HMAC that uses them).

use std::path::Path;

use serde::Deserialize;

use crate::config::FieldError;
use crate::config::auth::Secret;

/// The shortest accepted key.
pub const MIN_SECRET_LEN: usize = 16;
/// The most keys at once (a rotation needs two).
pub const MAX_KEYS: usize = 8;

/// `secret:` as written: one key, or a list whose first signs.
#[derive(Clone, PartialEq, Eq)]
pub enum Secrets {
    One(Secret),
    Many(Vec<Secret>),
}

/// By hand rather than `untagged`, so that a wrong type says what is expected.
impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secrets;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key (a string of at least 16 characters) or a list of keys, the signing one first")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secrets, E> {
                Ok(Secrets::One(Secret(v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Secrets, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = a.next_element::<String>()? {
                    keys.push(Secret(k));
                }
                Ok(Secrets::Many(keys))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} key(s), MASKED", self.list().len())
    }
}

impl Secrets {
    fn list(&self) -> Vec<&Secret> {
        match self {
            Secrets::One(s) => vec![s],
            Secrets::Many(v) => v.iter().collect(),
        }
    }
}

/// The keys of a failover group as configured, checked: the first signs, every
/// one is accepted. Empty: no authentication (INFINI compatibility). `Debug`
/// shows how many, never a key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FailoverKeys {
    /// The secrets, the signing one first.
    pub secrets: Vec<Secret>,
    /// Accept unsigned heartbeats and echo answers although keys are set: only
    /// for the migration of a running unauthenticated group (docs/security.md).
    pub accept_unauthenticated: bool,
}

impl FailoverKeys {
    /// No key: heartbeats are not authenticated.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl std::fmt::Debug for FailoverKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverKeys")
            .field(
                "keys",
                &format_args!("{} key(s), MASKED", self.secrets.len()),
            )
            .field("accept_unauthenticated", &self.accept_unauthenticated)
            .finish()
    }
}

fn check_keys<'a>(
    field: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Secret>, FieldError> {
    let mut out = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        if k.chars().count() < MIN_SECRET_LEN {
            return Err(FieldError::new(
                field,
                format!(
                    "key {} is too short: expected at least {MIN_SECRET_LEN} characters (e.g. the output of `openssl rand -base64 32`)",
                    i + 1
                ),
            ));
        }
        out.push(Secret(k.to_string()));
    }
    if out.is_empty() {
        return Err(FieldError::new(
            field,
            "no key given: expected at least one key (the first one signs)",
        ));
    }
    if out.len() > MAX_KEYS {
        return Err(FieldError::new(
            field,
            format!(
                "{} keys given: expected at most {MAX_KEYS} (a rotation needs two)",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Checks that need only the file (an inline `secret`, the option combination).
pub fn validate(
    secret: Option<&Secrets>,
    secret_file: Option<&Path>,
    accept_unauthenticated: bool,
) -> Result<(), FieldError> {
    if secret.is_some() && secret_file.is_some() {
        return Err(FieldError::new(
            "floating_ip.secret_file",
            "set either secret or secret_file, not both",
        ));
    }
    if let Some(s) = secret {
        check_keys("floating_ip.secret", s.list().iter().map(|s| s.expose()))?;
    }
    if accept_unauthenticated && secret.is_none() && secret_file.is_none() {
        return Err(FieldError::new(
            "floating_ip.accept_unauthenticated",
            "only meaningful with secret or secret_file (without a key everything is accepted anyway)",
        ));
    }
    Ok(())
}

/// The keys: from the inline keys, or read from `secret_file` (relative to
/// `base`), refusing a world-readable file.
pub fn keys(
    secret: Option<&Secrets>,
    secret_file: Option<&Path>,
    accept_unauthenticated: bool,
    base: &Path,
) -> Result<FailoverKeys, FieldError> {
    let field = "floating_ip.secret_file";
    let keys = match (secret, secret_file) {
        (Some(s), _) => check_keys("floating_ip.secret", s.list().iter().map(|s| s.expose()))?,
        (None, Some(path)) => {
            let path = base.join(path);
            let shown = path.display();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let meta = std::fs::metadata(&path)
                    .map_err(|e| FieldError::new(field, format!("cannot read {shown}: {e}")))?;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o004 != 0 {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "{shown} is readable by every user (mode {mode:04o}): expected a file only its owner (and group) can read; run `chmod 600 {shown}`"
                        ),
                    ));
                }
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| FieldError::new(field, format!("cannot read {shown}: {e}")))?;
            let lines = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'));
            check_keys(field, lines)
                .map_err(|e| FieldError::new(field, format!("{shown}: {}", e.message)))?
        }
        (None, None) => return Ok(FailoverKeys::default()),
    };
    Ok(FailoverKeys {
        secrets: keys,
        accept_unauthenticated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const K1: &str = "0123456789abcdef-one";
    const K2: &str = "0123456789abcdef-two";

    fn inline(v: &[&str]) -> Secrets {
        Secrets::Many(v.iter().map(|s| Secret(s.to_string())).collect())
    }

    /// The secrets of `r`, in order.
    fn exposed(r: &FailoverKeys) -> Vec<&str> {
        r.secrets.iter().map(Secret::expose).collect()
    }

    #[test]
    fn inline_keys_first_signs() {
        let r = keys(Some(&inline(&[K1, K2])), None, false, Path::new("")).unwrap();
        assert_eq!(exposed(&r), vec![K1, K2]);
        assert!(!r.accept_unauthenticated);
    }

    #[test]
    fn bad_combinations_and_short_keys_name_the_field() {
        let e = validate(Some(&inline(&["short"])), None, false).unwrap_err();
        assert_eq!(e.field, "floating_ip.secret");
        assert!(e.message.contains("at least 16"), "{}", e.message);
        let e = validate(Some(&inline(&[K1])), Some(Path::new("/x")), false).unwrap_err();
        assert_eq!(e.field, "floating_ip.secret_file");
        let e = validate(None, None, true).unwrap_err();
        assert_eq!(e.field, "floating_ip.accept_unauthenticated");
        let e = validate(Some(&inline(&[])), None, false).unwrap_err();
        assert!(e.message.contains("at least one key"), "{}", e.message);
    }

    #[test]
    fn secret_file_is_read_relative_and_refused_when_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hb.key");
        std::fs::write(&p, format!("# rotation: new first\n{K2}\n\n{K1}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let r = keys(None, Some(Path::new("hb.key")), true, dir.path()).unwrap();
        assert_eq!(r.secrets.len(), 2);
        assert_eq!(exposed(&r)[0], K2);
        assert!(r.accept_unauthenticated, "accept_unauthenticated");

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = keys(None, Some(Path::new("hb.key")), false, dir.path()).unwrap_err();
        assert_eq!(e.field, "floating_ip.secret_file");
        assert!(
            e.message.contains("readable by every user") && e.message.contains("chmod 600"),
            "{}",
            e.message
        );

        std::fs::write(&p, "# nothing\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = keys(None, Some(&p), false, Path::new("")).unwrap_err();
        assert!(e.message.contains("no key"), "{}", e.message);
        let e = keys(
            None,
            Some(Path::new("/nonexistent/k")),
            false,
            Path::new(""),
        )
        .unwrap_err();
        assert!(e.message.contains("cannot read"), "{}", e.message);
    }

    #[test]
    fn a_wrong_type_says_what_is_expected() {
        let e = crate::config::from_yaml::<Secrets>("12345")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a key (a string"), "{e}");
        let ok: Secrets = crate::config::from_yaml("[\"a\", \"b\"]").unwrap();
        assert_eq!(ok.list().len(), 2);
    }

    #[test]
    fn debug_never_shows_a_key() {
        let s = format!("{:?}", inline(&[K1]));
        assert!(!s.contains(K1) && s.contains("MASKED"), "{s}");
        let r = keys(Some(&inline(&[K1])), None, false, Path::new("")).unwrap();
        assert!(!format!("{r:?}").contains(K1));
    }
}
