//! The command line as an operator meets it: Go-style `-config`/`-test`/`-version`,
//! exit codes, and the refusal to run failover without privileges — checked inside
//! a lab namespace so that the interface lookups see a known network.

// Network namespaces (the lab in tests/common/lab.rs) exist on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::lab::{Host, Lab};

fn run(lab: &Lab, args: &[&str]) -> (i32, String) {
    let mut argv = vec![env!("CARGO_BIN_EXE_gateway")];
    argv.extend_from_slice(args);
    let out = lab.exec(Host::N1, &argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn test_flag_checks_config_and_sets_exit_code() {
    let lab = Lab::new("cli-test");
    let dir = tempfile::tempdir().unwrap();
    let good = write(&dir, "good.yml", "floating_ip:\n  enabled: true\n");
    let (code, out) = run(&lab, &["-test", "-config", &good]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("test is successful"), "{out}");
    assert!(
        out.contains(&format!("vip {}/24 on eth0", lab.default_vip())),
        "{out}"
    );

    // The same with GNU-style options.
    let (code, _) = run(&lab, &["--test", "--config", &good]);
    assert_eq!(code, 0);

    let bad = write(
        &dir,
        "bad.yml",
        "floating_ip:\n  enabled: true\n  netmask: 255.0.255.0\n",
    );
    let (code, out) = run(&lab, &["-test", "-config", &bad]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yml:3: floating_ip.netmask"), "{out}");
    assert!(out.contains("test failed"), "{out}");

    let (code, out) = run(&lab, &["-test", "-config", "/nonexistent/gateway.yml"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("/nonexistent/gateway.yml: cannot read"),
        "{out}"
    );
}

#[test]
fn version_flag() {
    let lab = Lab::new("cli-ver");
    let (code, out) = run(&lab, &["-version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn without_privileges_failover_refuses_before_touching_anything() {
    let lab = Lab::new("cli-priv");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "g.yml", "floating_ip:\n  enabled: true\n");
    // Readable by the unprivileged user.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = lab.exec(
        Host::N1,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_gateway"),
            "-config",
            &cfg,
        ],
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("CAP_NET_ADMIN"), "{text}");
    assert!(lab.vip_holders(lab.default_vip()).is_empty());
}
