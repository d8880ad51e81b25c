//! A TCP relay the run puts between the stages and a database when a fault is scheduled
//! on that database: it passes bytes both ways, and on cue closes every connection and
//! refuses new ones for a while (what a server restart does to its clients), or passes
//! nothing for a while with the connections left open (a stall). The server behind it is
//! the real one, untouched; the load's own writes go to it directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the relay is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Connections closed; the port refuses new ones.
    Down,
    /// Connections open; nothing passes.
    Stalled,
}

/// A running relay; it stops with its cancel token.
#[derive(Debug, Clone)]
pub(super) struct Relay {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `target` (`host:port`).
    pub(super) async fn start(target: String, cancel: CancellationToken) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::Pass));
        tokio::spawn(accept(listener, target, Arc::clone(&mode), cancel));
        Ok(Self { addr, mode })
    }

    /// `host:port` for the stages.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones for `down`, then passes again.
    pub(super) async fn restart(&self, down: Duration) {
        self.hold(Mode::Down, down).await;
    }

    /// Passes nothing, either way, for `stall`, then passes again.
    pub(super) async fn stall(&self, stall: Duration) {
        self.hold(Mode::Stalled, stall).await;
    }

    async fn hold(&self, mode: Mode, lasts: Duration) {
        self.mode.send_replace(mode);
        tokio::time::sleep(lasts).await;
        self.mode.send_replace(Mode::Pass);
    }
}

/// Accepts while passing; while down, the listening socket is closed (so connecting is
/// refused, as it is to a server that is not up) and opened again on the same port.
async fn accept(mut listener: TcpListener, target: String, mode: Arc<watch::Sender<Mode>>, cancel: CancellationToken) {
    let addr = listener.local_addr().ok();
    let mut modes = mode.subscribe();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(relay(client, target.clone(), mode.subscribe(), cancel.clone()));
                }
            }
            changed = modes.changed() => {
                if changed.is_err() {
                    return;
                }
                if *modes.borrow_and_update() == Mode::Down {
                    drop(listener);
                    let _ = modes.wait_for(|m| *m != Mode::Down).await;
                    let Some(addr) = addr else { return };
                    listener = match TcpListener::bind(addr).await {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                }
            }
        }
    }
}

/// One connection, relayed until either side closes, the relay goes down, or `cancel`.
async fn relay(mut client: TcpStream, target: String, mut mode: watch::Receiver<Mode>, cancel: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(&target).await else { return };
    let (_, _) = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        // While stalled, nothing is read (so nothing passes) until the stall lifts.
        let Ok(m) = mode.wait_for(|m| *m != Mode::Stalled).await.map(|m| *m) else { return };
        if m == Mode::Down {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = mode.changed() => if changed.is_err() { return },
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&up[..n]).await.is_err() { return },
            },
            n = sr.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&down[..n]).await.is_err() { return },
            },
        }
    }
}

/// `url` with its `host:port` replaced by `addr`, and the `host:port` it named (the
/// default port of its scheme when it gave none); `None` for a URL without an authority.
pub(super) fn through(url: &str, addr: SocketAddr, default_port: u16) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (creds, host_port) = authority.rsplit_once('@').map_or(("", authority), |(c, h)| (c, h));
    if host_port.is_empty() || host_port.contains(',') {
        return None;
    }
    let target =
        if host_port.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !host_port.ends_with(']') {
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
    let at = if creds.is_empty() { String::new() } else { format!("{creds}@") };
    Some((format!("{scheme}://{at}{addr}{tail}"), target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_pointed_at_the_relay_with_its_credentials_and_path_kept() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            through("postgres://u:p@db.example:5433/app?sslmode=disable", addr, 5432),
            Some(("postgres://u:p@127.0.0.1:4000/app?sslmode=disable".into(), "db.example:5433".into()))
        );
        assert_eq!(
            through("redis://127.0.0.1/0", addr, 6379),
            Some(("redis://127.0.0.1:4000/0".into(), "127.0.0.1:6379".into()))
        );
        assert_eq!(through("host=db user=u", addr, 5432), None);
        assert_eq!(through("postgres://u@a:1,b:2/db", addr, 5432), None);
    }

    #[tokio::test]
    async fn bytes_pass_a_restart_closes_and_refuses_and_a_stall_holds_them() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let target = echo.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let cancel = CancellationToken::new();
        let relay = Relay::start(target, cancel.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut c = TcpStream::connect(relay.addr()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await.unwrap_or_else(|e| panic!("{e}"));
        c.read_exact(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"hello");

        // A stall: the bytes wait and then arrive; the connection stays.
        let stall = tokio::spawn({
            let relay = relay.clone();
            async move { relay.stall(Duration::from_millis(300)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(b"later").await.unwrap_or_else(|e| panic!("{e}"));
        let early = tokio::time::timeout(Duration::from_millis(150), c.read_exact(&mut buf)).await;
        assert!(early.is_err(), "nothing passes during a stall");
        c.read_exact(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"later");
        stall.await.unwrap_or_else(|e| panic!("{e}"));

        // A restart: the connection is closed, connecting is refused, then it passes again.
        let restart = tokio::spawn({
            let relay = relay.clone();
            async move { relay.restart(Duration::from_millis(400)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0, "the connection is closed");
        assert!(TcpStream::connect(relay.addr()).await.is_err(), "refused while down");
        restart.await.unwrap_or_else(|e| panic!("{e}"));
        let mut c = TcpStream::connect(relay.addr()).await.unwrap_or_else(|e| panic!("{e}"));
        c.write_all(b"again").await.unwrap_or_else(|e| panic!("{e}"));
        c.read_exact(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"again");
        cancel.cancel();
    }
}
