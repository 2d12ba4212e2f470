//! The Web API against the real binary on loopback (docs/api.md): every route's
//! success, 401, 404, duplicate and invalid-body answers in GOST's shape; a
//! refused change changes nothing; an oversized body is refused; random bodies
//! never crash the daemon; a service added serves at once while another one's
//! traffic flows untouched; a deleted one stops accepting and drains; the state
//! saved with `POST /config` comes back after a restart.

mod api_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use api_support::*;
use serde_json::Value;

const AUTH: Option<&str> = Some("admin:s3cret-pw");

struct Lab {
    _dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    api: u16,
    a: u16,
    backend: u16,
    d: Daemon,
}

/// A daemon with service `a` (TCP forward to an echo backend), service `s`
/// (SOCKS5 with a password) and the API on `/api` with basic auth.
fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.yml");
    let (api, a, s, backend) = (free_port(), free_port(), free_port(), echo_backend());
    std::fs::write(
        &cfg,
        format!(
            "api:\n  addr: 127.0.0.1:{api}\n  pathPrefix: /api\n  auth: {{username: admin, password: s3cret-pw}}\nservices:\n{}- name: s\n  addr: 127.0.0.1:{s}\n  handler:\n    type: socks5\n    auth: {{username: u, password: hunter2}}\n  listener: {{type: tcp}}\n",
            forward_yaml("a", a, backend)
        ),
    )
    .unwrap();
    let d = start(&cfg, &[]);
    assert!(
        wait_for(10, || request(api, "GET", "/api/status", None, b"").is_ok()),
        "the API did not come up:\n{}",
        d.log()
    );
    Lab {
        _dir: dir,
        cfg,
        api,
        a,
        backend,
        d,
    }
}

fn get(l: &Lab, path: &str) -> Resp {
    request(l.api, "GET", path, AUTH, b"").unwrap()
}

fn send(l: &Lab, method: &str, path: &str, body: &str) -> Resp {
    request(l.api, method, path, AUTH, body.as_bytes()).unwrap()
}

/// The services' names, as the API lists them.
fn names(l: &Lab) -> Vec<String> {
    let r = get(l, "/api/config/services");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let list = v["data"]["list"].as_array().unwrap().clone();
    assert_eq!(v["data"]["count"], list.len());
    list.iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// A service as GET shows it, without its live status.
fn written(l: &Lab, name: &str) -> Value {
    let mut v = get(l, &format!("/api/config/services/{name}")).json()["data"].clone();
    v.as_object_mut().unwrap().remove("status");
    v
}

fn assert_error(r: &Resp, status: u16, code: u64, msg_has: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["code"], code, "{}", r.body);
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains(msg_has), "{msg:?} lacks {msg_has:?}");
}

#[test]
fn auth_shapes_and_errors() {
    let l = lab();
    // 401 everywhere but the page and its summary, with GOST's body.
    for (m, p) in [
        ("GET", "/api/config"),
        ("GET", "/api/config/services"),
        ("GET", "/api/config/services/a"),
        ("POST", "/api/config/services"),
        ("PUT", "/api/config/services/a"),
        ("DELETE", "/api/config/services/a"),
        ("POST", "/api/config"),
        ("POST", "/api/config/reload"),
        ("GET", "/api/config/chains"),
        ("GET", "/api/failover"),
        ("POST", "/api/failover/standby"),
    ] {
        for auth in [None, Some("admin:wrong"), Some("nobody:s3cret-pw")] {
            let r = request(l.api, m, p, auth, b"").unwrap();
            assert_eq!(r.status, 401, "{m} {p} {auth:?}");
            assert_eq!(r.body, r#"{"code":401,"msg":"Unauthorized"}"#);
            assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        }
    }
    let page = request(l.api, "GET", "/api/", None, b"").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>gateway status</title>"));
    let st = request(l.api, "GET", "/api/status", None, b"")
        .unwrap()
        .json();
    assert_eq!(st["data"]["authenticated"], false);
    assert_eq!(st["data"]["services"][0]["name"], "a");
    assert!(!st.to_string().contains("hunter2"));

    // GET /config: the running config, secrets masked, each service with status.
    let c = get(&l, "/api/config").json();
    assert!(!c.to_string().contains("hunter2"), "{c}");
    assert!(!c.to_string().contains("s3cret-pw"), "{c}");
    assert_eq!(c["services"][1]["handler"]["auth"]["password"], "MASKED");
    assert_eq!(c["api"]["auth"]["password"], "MASKED");
    let status = &c["services"][0]["status"];
    assert_eq!(status["state"], "running");
    for k in [
        "totalConns",
        "currentConns",
        "totalErrs",
        "inputBytes",
        "outputBytes",
    ] {
        assert!(status["stats"][k].is_u64(), "{k}: {status}");
    }
    let y = get(&l, "/api/config?format=yaml");
    assert!(y.header("content-type").unwrap().starts_with("text/yaml"));
    assert!(y.body.contains("name: a") && !y.body.contains("hunter2"));
    assert_error(&get(&l, "/api/config?format=xml"), 400, 40001, "format");

    // Live counters move with traffic.
    assert_eq!(echo_once(l.a, "ping").unwrap(), "ping");
    assert!(wait_for(5, || {
        let s = get(&l, "/api/config/services/a").json();
        let st = &s["data"]["status"]["stats"];
        st["totalConns"].as_u64() >= Some(1)
            && st["inputBytes"].as_u64() >= Some(4)
            && st["outputBytes"].as_u64() >= Some(4)
    }));

    // 404s.
    assert_error(&get(&l, "/api/config/services/zz"), 404, 40004, "\"zz\"");
    assert_error(
        &send(&l, "DELETE", "/api/config/services/zz", ""),
        404,
        40004,
        "zz",
    );
    assert_error(
        &send(&l, "PUT", "/api/config/services/zz", "addr: :1"),
        404,
        40004,
        "zz",
    );
    assert_error(&get(&l, "/api/nothing"), 404, 40004, "no such route");
    assert_error(&get(&l, "/api/failover"), 404, 40004, "floating_ip");

    // Duplicate name: 40002, nothing changed.
    let dup = forward_yaml("a", free_port(), l.backend);
    let dup = dup.trim_start_matches("- ").replace("\n  ", "\n");
    assert_error(
        &send(&l, "POST", "/api/config/services", &dup),
        409,
        40002,
        "\"a\" already exists",
    );
    assert_eq!(names(&l), ["a", "s"]);

    // Invalid bodies: clear messages naming the field; nothing changed.
    let before = get(&l, "/api/config").json()["services"].clone();
    let strip = |mut v: Value| {
        for s in v.as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("status");
        }
        v
    };
    let bad: &[(&str, &str)] = &[
        (
            "name: b\naddr: 127.0.0.1:1\nhandler: {type: ftp}\nlistener: {type: tcp}\n",
            "handler.type: unknown variant `ftp`",
        ),
        (
            "name: b\naddr: 127.0.0.1:1\nhandler: {type: tcp}\nlistener: {type: tcp}\nforwarder: {nodes: []}\nbogus: 1\n",
            "bogus",
        ),
        (
            r#"{"name":"b","addr":"nowhere","handler":{"type":"tcp"},"listener":{"type":"tcp"}}"#,
            "addr",
        ),
        (
            &format!(
                "name: b\naddr: 127.0.0.1:{}\nhandler: {{type: tcp}}\nlistener: {{type: tcp}}\nforwarder: {{nodes: [{{addr: \"127.0.0.1:9\"}}]}}\n",
                l.a
            ),
            "addr: \"127.0.0.1:",
        ),
        ("[1, 2]", "expected a service object"),
        ("", "expected a service object"),
    ];
    for (body, want) in bad {
        assert_error(
            &send(&l, "POST", "/api/config/services", body),
            400,
            40001,
            want,
        );
    }
    // PUT with a bad body, and with a name that is not the URL's.
    assert_error(
        &send(
            &l,
            "PUT",
            "/api/config/services/a",
            "handler: {type: tcp}\nlistener: {type: tcp}\naddr: 127.0.0.1:1\nforwarder: {nodes: [{addr: x}]}\n",
        ),
        400,
        40001,
        "forwarder.nodes[0].addr",
    );
    assert_error(
        &send(
            &l,
            "PUT",
            "/api/config/services/a",
            "name: other\naddr: :1\n",
        ),
        400,
        40001,
        "differs from the service named in the URL",
    );
    // A valid service whose port is taken: 40003, nothing changed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tp = taken.local_addr().unwrap().port();
    assert_error(
        &send(
            &l,
            "POST",
            "/api/config/services",
            &forward_yaml("c", tp, l.backend)
                .trim_start_matches("- ")
                .replace("\n  ", "\n"),
        ),
        409,
        40003,
        "c",
    );
    assert_eq!(
        strip(get(&l, "/api/config").json()["services"].clone()),
        strip(before)
    );
    assert_eq!(echo_once(l.a, "still").unwrap(), "still");

    // Oversized body: 413, nothing read into the config.
    let big = vec![b'#'; 2 << 20];
    let r = request(l.api, "POST", "/api/config/services", AUTH, &big).unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["code"], 40001);
    assert_eq!(names(&l), ["a", "s"]);

    // Reload: same as SIGHUP; a broken file is refused with its line, nothing changes.
    let good = std::fs::read_to_string(&l.cfg).unwrap();
    std::fs::write(
        &l.cfg,
        good.replace("- name: s\n", "- name: s\n  bogus: 1\n"),
    )
    .unwrap();
    assert_error(
        &send(&l, "POST", "/api/config/reload", ""),
        400,
        40001,
        "bogus",
    );
    assert_eq!(names(&l), ["a", "s"]);
    std::fs::write(&l.cfg, good.replace("name: s\n", "name: s2\n")).unwrap();
    let r = send(&l, "POST", "/api/config/reload", "");
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"msg":"OK"}"#));
    assert_eq!(names(&l), ["a", "s2"]);
    assert!(l.d.log().contains("configuration reloaded"));
}

#[test]
fn random_bodies_never_crash_and_change_nothing() {
    let l = lab();
    let before = get(&l, "/api/config?format=yaml").body;
    let valid = b"name: r\naddr: 127.0.0.1:1\nhandler: {type: http, auth: {username: u, password: p}}\nlistener: {type: tcp, tls: {certFile: /nonexistent}}\nforwarder: {nodes: [{addr: \"127.0.0.1:2\"}], selector: {strategy: round}}\n";
    // xorshift: reproducible without a seed file.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..400 {
        let body: Vec<u8> = match i % 3 {
            // Random bytes.
            0 => (0..next() % 300).map(|_| next() as u8).collect(),
            // A valid-looking body with bytes flipped, cut or doubled.
            1 => {
                let mut b = valid.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len();
                    b[at] = b"{}[]:,-\"'&*!|>\n #\t0xZ"[(next() % 21) as usize];
                }
                b.truncate(1 + (next() as usize) % b.len());
                b
            }
            // Deep nesting and odd YAML.
            _ => {
                let depth = 1 + next() % 200;
                let mut s = "name: [".repeat(depth as usize);
                s.push_str(&"]".repeat((next() % (depth + 1)) as usize));
                s.into_bytes()
            }
        };
        let (m, p) = if i % 2 == 0 {
            ("POST", "/api/config/services")
        } else {
            ("PUT", "/api/config/services/a")
        };
        let r = request(l.api, m, p, AUTH, &body)
            .unwrap_or_else(|e| panic!("request {i} failed ({e}): daemon down?\n{}", l.d.log()));
        // A random body may happen to be valid only by a miracle; every answer is
        // a JSON error in GOST's shape.
        assert!(
            r.status == 400 || r.status == 409,
            "{i}: {} {}",
            r.status,
            r.body
        );
        assert!(r.json()["code"].is_u64());
    }
    assert!(!l.d.log().contains("panicked"), "{}", l.d.log());
    assert_eq!(
        get(&l, "/api/config?format=yaml")
            .body
            .lines()
            .filter(|l| !l.contains("Time")
                && !l.contains("time:")
                && !l.contains("Conns")
                && !l.contains("Errs")
                && !l.contains("completed"))
            .collect::<Vec<_>>(),
        before
            .lines()
            .filter(|l| !l.contains("Time")
                && !l.contains("time:")
                && !l.contains("Conns")
                && !l.contains("Errs")
                && !l.contains("completed"))
            .collect::<Vec<_>>()
    );
    assert_eq!(echo_once(l.a, "alive").unwrap(), "alive");
}

#[test]
fn add_serves_at_once_others_flow_delete_drains() {
    let l = lab();
    // Traffic through `a`, one new connection after another, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, a) = (stop.clone(), ok.clone(), failed.clone(), l.a);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let msg = format!("m{i}");
                match echo_once(a, &msg) {
                    Ok(r) if r == msg => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    assert!(wait_for(10, || ok.load(Ordering::Relaxed) > 20));
    let ok_before_edits = ok.load(Ordering::Relaxed);

    // Add `b`: it serves as soon as the API said OK.
    let bp = free_port();
    let body = serde_json::json!({
        "name": "b", "addr": format!("127.0.0.1:{bp}"),
        "handler": {"type": "tcp"}, "listener": {"type": "tcp"},
        "forwarder": {"nodes": [{"name": "echo", "addr": format!("127.0.0.1:{}", l.backend)}]},
    });
    let r = send(&l, "POST", "/api/config/services", &body.to_string());
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"msg":"OK"}"#));
    assert_eq!(echo_once(bp, "first").unwrap(), "first");
    assert_eq!(names(&l), ["a", "s", "b"]);
    // As written (JSON in, the same object out).
    assert_eq!(written(&l, "b"), body);

    // Replace `b` (new port); `a` is untouched meanwhile.
    let bp2 = free_port();
    let mut body2 = body.clone();
    body2["addr"] = format!("127.0.0.1:{bp2}").into();
    body2.as_object_mut().unwrap().remove("name");
    let r = send(&l, "PUT", "/api/config/services/b", &body2.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo_once(bp2, "moved").unwrap(), "moved");
    assert!(
        wait_for(5, || echo_once(bp, "x").is_err()),
        "old port of b still serves"
    );

    // A connection in flight through `b`, then DELETE: new connections are
    // refused at once, the one in flight keeps working (drains).
    let mut held = TcpStream::connect(("127.0.0.1", bp2)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    held.read_exact(&mut buf).unwrap();
    let r = send(&l, "DELETE", "/api/config/services/b", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        TcpStream::connect(("127.0.0.1", bp2)).is_err(),
        "b still accepts"
    );
    held.write_all(b"during").unwrap();
    held.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"during", "the drained connection was cut");
    assert_eq!(names(&l), ["a", "s"]);
    // Traffic kept flowing through `a` across the edits.
    assert!(wait_for(10, || ok.load(Ordering::Relaxed) > ok_before_edits + 20));

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "traffic through a failed while b was edited ({ok} ok)"
    );
}

#[test]
fn save_then_restart_reproduces_the_state() {
    let mut l = lab();
    let bp = free_port();
    let r = send(
        &l,
        "POST",
        "/api/config/services",
        &format!(
            "# YAML this time\nname: b\naddr: 127.0.0.1:{bp}\nhandler: {{type: tcp}}\nlistener: {{type: tcp}}\nforwarder:\n  nodes:\n  - {{addr: \"127.0.0.1:{}\"}}\nclient_idle_timeout: 90s\n",
            l.backend
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(&l, "DELETE", "/api/config/services/s", "");
    assert_eq!(r.status, 200, "{}", r.body);
    // A chain, too.
    let r = send(
        &l,
        "POST",
        "/api/config/chains",
        "name: up\nhops:\n- name: h\n  nodes:\n  - {name: p, addr: \"127.0.0.1:3128\"}\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_error(
        &send(&l, "POST", "/api/config/chains", "name: up\nhops: []\n"),
        409,
        40002,
        "up",
    );
    assert_eq!(get(&l, "/api/config/chains").json()["data"]["count"], 1);

    // Refused: outside the config's directory.
    assert_error(
        &send(&l, "POST", "/api/config?path=/tmp/elsewhere.yml", ""),
        400,
        40001,
        "outside the config file's directory",
    );
    let before_services = names(&l);
    let before_b = written(&l, "b");
    let r = send(&l, "POST", "/api/config?format=yaml", "");
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"msg":"OK"}"#));
    let saved = std::fs::read_to_string(&l.cfg).unwrap();
    assert!(saved.contains("client_idle_timeout: 90s"), "{saved}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&l.cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the saved file holds secrets");

    // Restart on the saved file: the same services, the same objects. The
    // old daemon is gone (killed and reaped) before the new one binds.
    l.d.stop();
    l.d = start(&l.cfg, &[]);
    assert!(
        wait_for(10, || request(l.api, "GET", "/api/status", None, b"")
            .is_ok()),
        "{}",
        l.d.log()
    );
    assert_eq!(names(&l), before_services);
    assert_eq!(written(&l, "b"), before_b);
    assert_eq!(echo_once(bp, "again").unwrap(), "again");
    assert_eq!(
        get(&l, "/api/config/chains/up").json()["data"]["name"],
        "up"
    );
    // The API's own password survived the save (it was masked only when shown).
    assert_eq!(get(&l, "/api/config/services").status, 200);
}

#[test]
fn api_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yml");
    let (api, a, backend) = (free_port(), free_port(), echo_backend());
    std::fs::write(
        &cfg,
        format!("services:\n{}", forward_yaml("a", a, backend)),
    )
    .unwrap();
    let flag = format!("op:pw@127.0.0.1:{api}");
    let d = start(&cfg, &["-api", &flag]);
    assert!(
        wait_for(10, || request(api, "GET", "/status", None, b"").is_ok()),
        "{}",
        d.log()
    );
    assert_eq!(
        request(api, "GET", "/config", None, b"").unwrap().status,
        401
    );
    let r = request(api, "GET", "/config/services", Some("op:pw"), b"").unwrap();
    assert_eq!(r.json()["data"]["count"], 1);
    // A bad -api is refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["-config", cfg.to_str().unwrap(), "-api", "u@:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user:password@address"));
}

/// `api.certFile`/`keyFile`: the API over TLS (curl as the client); plain HTTP
/// on the same port gets no answer in JSON.
#[test]
fn api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    let cfg = dir.path().join("g.yml");
    let (api, a, backend) = (free_port(), free_port(), echo_backend());
    std::fs::write(
        &cfg,
        format!(
            "api:\n  addr: 127.0.0.1:{api}\n  certFile: {}\n  keyFile: {}\n  auth: {{username: op, password: pw}}\nservices:\n{}",
            c.display(),
            k.display(),
            forward_yaml("a", a, backend)
        ),
    )
    .unwrap();
    let d = start(&cfg, &[]);
    let curl = |auth: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--cacert", c.to_str().unwrap(), "-u", auth])
            .arg(format!("https://localhost:{api}/config/services"))
            .arg("--resolve")
            .arg(format!("localhost:{api}:127.0.0.1"))
            .output()
            .unwrap()
    };
    assert!(
        wait_for(10, || curl("op:pw").status.success()),
        "{}",
        d.log()
    );
    let out = curl("op:pw");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["count"], 1);
    let out = curl("op:bad");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"code":401,"msg":"Unauthorized"}"#
    );
    // Plain HTTP to the TLS port is not served.
    let plain = request(api, "GET", "/status", None, b"");
    assert!(plain.is_err() || plain.unwrap().status != 200);
}

/// The shipped gateway.yml opens nothing to the LAN: every service and the API
/// listen on loopback (issue 10; the README's first command runs this file).
#[test]
fn shipped_sample_is_safe_on_a_lan() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = gateway::config::Config::from_str_named(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.services.is_empty());
    for s in &c.services {
        assert!(s.addr.addr.ip().is_loopback(), "{}: {}", s.name, s.addr);
    }
    let api = c.api.expect("the sample shows the API");
    assert!(api.addr.addr.ip().is_loopback(), "{}", api.addr);
    assert!(api.auth.is_some(), "the sample's API has a password");
    assert!(text.contains("SET A REAL PASSWORD"));
}

/// `/config/hops`: GOST v3's named hops, edited like chains — success, 401,
/// 404, duplicate, invalid bodies (nothing changed), a hop checked where a
/// chain uses it, a hop in use that cannot be deleted, and a service whose
/// chain uses an edited hop restarted with it (traffic through it works).
#[test]
fn hops_routes() {
    let l = lab();
    for (m, p) in [
        ("GET", "/api/config/hops"),
        ("POST", "/api/config/hops"),
        ("GET", "/api/config/hops/up"),
        ("PUT", "/api/config/hops/up"),
        ("DELETE", "/api/config/hops/up"),
    ] {
        let r = request(l.api, m, p, Some("admin:wrong"), b"").unwrap();
        assert_eq!(r.status, 401, "{m} {p}");
        assert_eq!(r.body, r#"{"code":401,"msg":"Unauthorized"}"#);
    }
    let count = |l: &Lab| get(l, "/api/config/hops").json()["data"]["count"].clone();
    assert_eq!(count(&l), 0);

    // An upstream HTTP proxy (this gateway's own handler) as the hop's node.
    let proxy = free_port();
    let r = send(
        &l,
        "POST",
        "/api/config/services",
        &format!(
            "name: px\naddr: 127.0.0.1:{proxy}\nhandler: {{type: http}}\nlistener: {{type: tcp}}\n"
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let hop = format!("name: up\nnodes:\n- {{name: p, addr: \"127.0.0.1:{proxy}\"}}\n");
    let r = send(&l, "POST", "/api/config/hops", &hop);
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"msg":"OK"}"#));
    assert_eq!(count(&l), 1);
    let v = get(&l, "/api/config/hops/up").json();
    assert_eq!(v["data"]["nodes"][0]["name"], "p", "{v}");
    assert_eq!(get(&l, "/api/config").json()["hops"][0]["name"], "up");

    // Duplicate, 404s, invalid bodies: nothing changed.
    assert_error(
        &send(&l, "POST", "/api/config/hops", &hop),
        409,
        40002,
        "hop \"up\" already exists",
    );
    assert_error(&get(&l, "/api/config/hops/zz"), 404, 40004, "hop \"zz\"");
    assert_error(
        &send(&l, "PUT", "/api/config/hops/zz", &hop),
        404,
        40004,
        "zz",
    );
    assert_error(
        &send(&l, "DELETE", "/api/config/hops/zz", ""),
        404,
        40004,
        "zz",
    );
    for (body, want) in [
        ("name: h2\nnodes: []\n", "nodes: no nodes"),
        (
            "name: h2\nnodes: [{addr: \"127.0.0.1:1\"}]\nbogus: 1\n",
            "bogus",
        ),
        ("name: h2\nnodes: [{addr: nowhere}]\n", "nodes[0].addr"),
        (
            "name: h2\nresolver: r9\nnodes: [{addr: \"127.0.0.1:1\"}]\n",
            "no resolver named \"r9\"",
        ),
    ] {
        assert_error(
            &send(&l, "POST", "/api/config/hops", body),
            400,
            40001,
            want,
        );
    }
    assert_eq!(count(&l), 1);

    // A chain that uses it by name, and a service through that chain.
    let r = send(
        &l,
        "POST",
        "/api/config/chains",
        "name: c\nhops:\n- name: up\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let via = free_port();
    let r = send(
        &l,
        "POST",
        "/api/config/services",
        &format!(
            "name: via\naddr: 127.0.0.1:{via}\nhandler: {{type: tcp, chain: c}}\nlistener: {{type: tcp}}\nforwarder: {{nodes: [{{addr: \"127.0.0.1:{}\"}}]}}\n",
            l.backend
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo_once(via, "hop").unwrap(), "hop");
    let crossed = |l: &Lab| {
        get(l, "/api/config/services/px").json()["data"]["status"]["stats"]["totalConns"].clone()
    };
    assert_eq!(crossed(&l), 1, "through the hop's proxy");

    // In use: cannot be deleted (names the chain's hop); still there.
    assert_error(
        &send(&l, "DELETE", "/api/config/hops/up", ""),
        400,
        40001,
        "chains[0].hops[0]",
    );
    assert_eq!(count(&l), 1);
    // Checked where it is used: a chain's first hop may have an interface, and
    // a bad PUT changes nothing.
    assert_error(
        &send(&l, "PUT", "/api/config/hops/up", "nodes: [{addr: x}]\n"),
        400,
        40001,
        "nodes[0].addr",
    );
    assert_eq!(
        get(&l, "/api/config/hops/up").json()["data"]["nodes"][0]["addr"],
        format!("127.0.0.1:{proxy}")
    );
    // PUT a hop whose node is gone: the service through the chain restarts
    // with it and fails; PUT it back: it works again.
    let gone = free_port();
    let r = send(
        &l,
        "PUT",
        "/api/config/hops/up",
        &format!("nodes: [{{name: p, addr: \"127.0.0.1:{gone}\"}}]\n"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(echo_once(via, "x").is_err(), "the edited hop is in use");
    let r = send(&l, "PUT", "/api/config/hops/up", &hop);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echo_once(via, "back").unwrap(), "back");

    // Unused again: deleted.
    for p in [
        "/api/config/services/via",
        "/api/config/chains/c",
        "/api/config/hops/up",
    ] {
        let r = send(&l, "DELETE", p, "");
        assert_eq!(r.status, 200, "{p}: {}", r.body);
    }
    assert_eq!(count(&l), 0);
}
