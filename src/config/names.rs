//! The YAML names of the config's `type` enums, for messages, logs and the API.
//!
//! Each enum's names are what its serde `rename`s accept; [`yaml_names!`] writes
//! `name()` and `Display` from one table of them, so that an enum added here
//! is one table, not two hand-written impls.

/// `name()` (the variant's name in the YAML) and `Display` (the same) for a
/// config enum, from a table `Variant => "name"`.
///
/// ```ignore
/// yaml_names!(DialerType { Tcp => "tcp", Tls => "tls", Virtual => "virtual" });
/// ```
macro_rules! yaml_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// This variant's name in the YAML.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use yaml_names;
