//! The router: how a handler reaches a target address (directly today; through a
//! chain later, and with GOST's `interface` option).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Router {
    pub connect_timeout: Duration,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Router {
    /// Connect to `host:port` (a name is resolved).
    pub async fn connect(&self, target: &str) -> io::Result<TcpStream> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {target} timed out"),
            )),
        }
    }
}
