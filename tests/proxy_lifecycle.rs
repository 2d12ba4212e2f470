//! Service lifecycle: graceful drain on shutdown, reload (start/stop/replace with
//! socket hand-over), discovery updating a running service.

mod proxy_common;

use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gateway::proxy::ServiceSet;
use gateway::proxy::balance::Balancer;
use proxy_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Start service `name` with no static nodes and `discovery` (a YAML flow
/// mapping), and wait until discovery has found one node. Returns the set and
/// the service's balancer.
async fn start_discovering(name: &str, discovery: &str) -> (ServiceSet, Arc<Balancer>) {
    let set = start(&tcp_services(
        name,
        "[]",
        &format!("    discovery: {discovery}\n"),
    ));
    let bal = set.balancer(name).unwrap();
    assert!(wait_for(Duration::from_secs(2), || bal.nodes().len() == 1).await);
    (set, bal)
}

async fn echo(s: &mut tokio::net::TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_then_cuts_after_grace() {
    let a = Backend::start("a").await;
    let set = start(&tcp_services("d", &nodes_yaml(&[&a]), ""));
    let addr = set.local_addr("d").unwrap();
    let (mut finishing, name) = connect_greeted(addr).await;
    assert_eq!(name, "a");
    let (mut lingering, name) = connect_greeted(addr).await;
    assert_eq!(name, "a");

    let t = Instant::now();
    let shut = tokio::spawn(set.shutdown(Duration::from_millis(800)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The door is closed: new clients are refused, not left hanging.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // In-flight connections still work during the grace period and finish normally.
    assert_eq!(echo(&mut finishing, b"still here").await, b"still here");
    finishing.shutdown().await.unwrap();
    let mut rest = Vec::new();
    finishing.read_to_end(&mut rest).await.unwrap();
    // The other one stays open past the grace period and is cut.
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), lingering.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "lingering connection not cut");
    shut.await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_early_when_drained() {
    let a = Backend::start("a").await;
    let set = start(&tcp_services("e", &nodes_yaml(&[&a]), ""));
    let (c, name) = connect_greeted(set.local_addr("e").unwrap()).await;
    assert_eq!(name, "a");
    let t = Instant::now();
    let shut = tokio::spawn(set.shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);
    shut.await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_starts_stops_and_replaces_without_rebinding() {
    let [a, b] = Backend::start_all(["a", "b"]).await;
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let p_keep = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let p_change = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let p_remove = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let p_new = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    // A service on 127.0.0.1:`port` forwarding to `to`.
    let svc = |name: &str, port: u16, to: &Backend| {
        tcp_service(name, &format!("127.0.0.1:{port}"), &nodes_yaml(&[to]), "")
    };
    let keep = svc("keep", p_keep, &a);
    let change_v1 = svc("change", p_change, &a);
    let change_v2 = svc("change", p_change, &b);
    let remove = svc("remove", p_remove, &a);
    let new = svc("new", p_new, &b);

    let mut set = start(&format!("services:\n{keep}{change_v1}{remove}"));
    set.set_reload_grace(Duration::from_secs(5));
    let at = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let (mut held_keep, name) = connect_greeted(at(p_keep)).await;
    assert_eq!(name, "a");
    let (mut held_change, name) = connect_greeted(at(p_change)).await;
    assert_eq!(name, "a");

    set.reload(&services(&format!("services:\n{keep}{change_v2}{new}")))
        .unwrap();
    assert_eq!(set.names(), ["change", "keep", "new"]);
    // Unchanged service: same instance (its counter survived).
    assert_eq!(set.stats("keep").unwrap().accepted, 1);
    // Changed service: same port, new nodes, and the old connection still works.
    assert_eq!(which(at(p_change), None).await.as_deref(), Some("b"));
    assert_eq!(echo(&mut held_change, b"old conn").await, b"old conn");
    assert_eq!(echo(&mut held_keep, b"kept").await, b"kept");
    // Removed service: refused. New service: serves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(at(p_remove)).await.is_err());
    assert_eq!(which(at(p_new), None).await.as_deref(), Some("b"));

    // A reload that cannot start a service changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = tcp_service(
        "bad",
        &taken.local_addr().unwrap().to_string(),
        &nodes_yaml(&[&a]),
        "",
    );
    let e = set
        .reload(&services(&format!("services:\n{keep}{bad}")))
        .unwrap_err();
    assert!(e.to_string().contains("\"bad\""), "{e}");
    assert_eq!(set.names(), ["change", "keep", "new"]);
    assert_eq!(which(at(p_new), None).await.as_deref(), Some("b"));
    set.shutdown(Duration::from_secs(1)).await;
}

/// Breaks if a reload that changes a service but keeps its address closes the old
/// listening socket and binds a new one instead of handing the socket over: in
/// between, clients are refused. A prober connects in a tight loop (blocking
/// sockets on a thread of its own) across twenty reloads that flip the service's
/// node; every connection must be answered by a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_hands_the_listening_socket_over() {
    let [a, b] = Backend::start_all(["a", "b"]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let to = |n: &Backend| {
        format!(
            "services:\n{}",
            tcp_service("flip", &addr.to_string(), &nodes_yaml(&[n]), "")
        )
    };
    let mut set = start(&to(&a));
    set.set_reload_grace(Duration::from_secs(2));

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let (mut answered, mut refused) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match std::net::TcpStream::connect(addr) {
                    Ok(mut s) => {
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut greeting = [0u8; 2];
                        match s.read_exact(&mut greeting) {
                            Ok(()) => answered += 1,
                            Err(e) => refused.push(format!("read: {e}")),
                        }
                    }
                    Err(e) => refused.push(format!("connect: {e}")),
                }
            }
            (answered, refused)
        })
    };
    // Let the prober get going, then flip the node back and forth.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..20 {
        let next = if i % 2 == 0 { &b } else { &a };
        set.reload(&services(&to(next))).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(which(addr, None).await.as_deref(), Some("a"));
    stop.store(true, Ordering::Relaxed);
    let (answered, refused) = prober.join().unwrap();
    assert!(
        refused.is_empty(),
        "{} refused across reloads: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    assert!(answered > 20, "the prober got only {answered} answers");
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_discovery_follows_the_file_and_keeps_last_good() {
    let [a, b] = Backend::start_all(["a", "b"]).await;
    let (_dir, list) = temp_file("nodes.txt", &format!("{}\n", a.addr));
    let discovery = format!(
        "{{kind: file, file_path: \"{}\", interval: 100ms}}",
        list.display()
    );
    let (set, bal) = start_discovering("disc", &discovery).await;
    let addr = set.local_addr("disc").unwrap();
    assert_eq!(which(addr, None).await.as_deref(), Some("a"));
    // Rewrite as JSON with b only.
    std::fs::write(
        &list,
        format!("[{{\"addr\": \"{}\", \"name\": \"b\"}}]", b.addr),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || bal
            .nodes()
            .first()
            .is_some_and(|n| n.config.name == "b"))
        .await
    );
    assert_eq!(which(addr, None).await.as_deref(), Some("b"));
    // A broken file keeps the last good list.
    std::fs::write(&list, "this is not a node list\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(bal.nodes().len(), 1);
    assert_eq!(which(addr, None).await.as_deref(), Some("b"));
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_discovery_and_setempty_policy() {
    let a = Backend::start("a").await;
    let (_dir, out) = temp_file("out", &format!("{} weight=2\n", a.addr));
    let discovery = format!(
        "{{kind: exec, exec_command: [\"cat\", \"{}\"], interval: 100ms, failpolicy: setempty}}",
        out.display()
    );
    let (set, bal) = start_discovering("ex", &discovery).await;
    assert_eq!(bal.nodes()[0].config.weight, 2);
    assert_eq!(
        which(set.local_addr("ex").unwrap(), None).await.as_deref(),
        Some("a")
    );
    std::fs::remove_file(&out).unwrap(); // cat fails → setempty
    assert!(wait_for(Duration::from_secs(2), || bal.nodes().is_empty()).await);
    assert_eq!(which(set.local_addr("ex").unwrap(), None).await, None);
    set.shutdown(Duration::from_secs(1)).await;
}
