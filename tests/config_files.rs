//! Every shipped example and every file under tests/configs/ goes through the same
//! loader as the daemon. Valid files must load; each invalid file names, in its first
//! line (`# error: ...`), a piece of the error it must produce, and the error must
//! carry the file name and a line number.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use gateway::config;
use gateway::net::{IfAddr, Interfaces};

/// A made-up host, so the tests do not depend on this machine's interfaces.
fn host() -> Interfaces {
    Interfaces {
        addrs: vec![
            IfAddr::new("lo", Ipv4Addr::LOCALHOST, 8),
            IfAddr::new("eth0", Ipv4Addr::new(192, 168, 3, 35), 24),
            // The seeds' examples (tests/configs/valid/seed*.yml) name eth1 and 192.168.0.1.
            IfAddr::new("eth1", Ipv4Addr::new(192, 168, 0, 1), 24),
        ],
    }
}

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no configs in {}", dir.display());
    v
}

#[test]
fn shipped_sample_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yml");
    let loaded = config::load(&path, &host()).unwrap_or_else(|e| panic!("{e}"));
    let fip = loaded.floating_ip.expect("the sample enables floating_ip");
    assert_eq!(fip.vip, Ipv4Addr::new(192, 168, 3, 234));
    assert!(!loaded.config.services.is_empty());
}

/// A file whose first line is `# skip: <reason>` waits for a feature of another
/// branch; it is reported, not loaded.
pub fn skip_reason(f: &Path) -> Option<String> {
    let text = std::fs::read_to_string(f).ok()?;
    let reason = text.lines().next()?.strip_prefix("# skip: ")?;
    Some(reason.to_string())
}

#[test]
fn valid_configs_load() {
    for f in files("tests/configs/valid") {
        if let Some(why) = skip_reason(&f) {
            eprintln!("skipped {}: {why}", f.display());
            continue;
        }
        if let Err(e) = config::load(&f, &host()) {
            panic!("{} should load: {e}", f.display());
        }
    }
}

#[test]
fn invalid_configs_fail_with_file_line_and_reason() {
    for f in files("tests/configs/invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# error: ...`", f.display()));
        let err = match config::load(&f, &host()) {
            Ok(_) => panic!("{} should fail", f.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "{}: error {msg:?} lacks {want:?}",
            f.display()
        );
        assert!(msg.starts_with(&f.display().to_string()), "{msg}");
        assert!(err.line.is_some(), "{}: no line in {msg:?}", f.display());
    }
}
