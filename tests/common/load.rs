//! Load for the lab: servers in a lab host and a client thread in another, for the
//! tests that watch failover under traffic (tests/failover_net.rs, tests/soak.rs).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::lab::{Host, Lab};

/// A server in a lab host: one thread accepting, one per connection running
/// `serve`; everything stops and is joined on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(
        lab: &Lab,
        host: Host,
        port: u16,
        serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> Server {
        let listener = lab
            .in_netns(host, move || {
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            })
            .and_then(|r| r)
            .expect("cannot listen in the lab");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let s = stop.clone();
        let accept = thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let (s, serve) = (s.clone(), serve.clone());
                        conns.push(thread::spawn(move || serve(c, &s)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            stop,
            threads: vec![accept],
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Move the calling thread into the network namespace `ns` ([`Lab::ns`]), for a
/// thread that will open client sockets there.
pub fn enter(ns: &str) -> std::io::Result<()> {
    let ns = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns(2) on this thread only, with a valid fd.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
