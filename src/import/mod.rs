//! `gateway import FORMAT FILE`: translate another balancer's configuration into
//! a `gateway.yml`. Only gobetween's TOML is known ([`gobetween`]).
//!
//! The translation is printed, never written over anything; what could not be
//! carried over is listed with its line so that the operator decides, and the
//! exit code says whether the list is empty.

pub mod gobetween;
pub mod yaml;

use std::path::Path;

/// Whether a file handed to `-config` is a gobetween TOML file, so the error can
/// point at `gateway import` instead of showing the YAML parser's confusion
/// ("invalid type: sequence" for a `[servers.x]` header).
pub fn looks_like_gobetween(path: &Path, text: &str) -> bool {
    let toml_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let table_header = text.lines().any(|l| {
        let l = l.trim_start();
        ["[servers.", "[defaults]", "[logging]", "[api]", "[acme]"]
            .iter()
            .any(|h| l.starts_with(h))
    });
    toml_name || table_header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_gobetween_files() {
        assert!(looks_like_gobetween(Path::new("gobetween.toml"), ""));
        assert!(looks_like_gobetween(
            Path::new("g.conf"),
            "# c\n[servers.web]\nbind = \":80\"\n"
        ));
        assert!(!looks_like_gobetween(
            Path::new("gateway.yml"),
            "services: []\n"
        ));
    }
}
