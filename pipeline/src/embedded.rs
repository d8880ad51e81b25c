//! The embedded broker: tansu (an Apache-Kafka-compatible broker in Rust) with in-memory
//! storage, served on a free loopback port inside this process. Nothing is written to disk
//! and nothing outlives the process.

use crate::{Error, Result};
use std::net::TcpListener;
use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

/// Name and version reported in results.
pub const KIND: &str = "tansu";
/// The tansu release linked in.
pub const VERSION: &str = "0.6.0";
/// The storage engine behind it.
pub const STORAGE: &str = "memory://tansu/";

/// A running embedded broker; stopped when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts a broker on `127.0.0.1` and a free port.
    pub async fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Embedded(format!("no free loopback port: {e}")))?
            .port();
        Self::start_on(&format!("127.0.0.1:{port}")).await
    }

    /// Starts a broker listening on (and advertising) `host:port`, for clients in other
    /// processes too.
    pub async fn start_on(bootstrap: &str) -> Result<Self> {
        let bootstrap = bootstrap.to_owned();
        // Fails here, clearly, when the address is taken (the probe below would connect to
        // whatever holds it).
        drop(TcpListener::bind(&bootstrap).map_err(|e| Error::Embedded(format!("cannot listen on {bootstrap}: {e}")))?);
        let url = |s: String| Url::parse(&s).map_err(|e| Error::Embedded(e.to_string()));
        let listener = url(format!("tcp://{bootstrap}"))?;
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(tansu_broker::NODE_ID)
            .cluster_id("tailgate-embedded")
            .incarnation_id(uuid_from(rand_u128()))
            .advertised_listener(listener.clone())
            .storage(url(STORAGE.to_owned())?)
            .listener(listener)
            .silent(true)
            .build()
            .await
            .map_err(|e| Error::Embedded(format!("cannot build: {e}")))?;
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let result = broker.serve(tokio::time::Instant::now()).await;
            let _ = up_tx.send(result.map_err(|e| e.to_string()));
        });
        // serve() only returns on failure; give it a moment to fail on bind, then probe.
        for _ in 0..200 {
            if std::net::TcpStream::connect(&bootstrap).is_ok() {
                return Ok(Self { bootstrap, task });
            }
            if task.is_finished() {
                let why = up_rx.await.map_or_else(|e| e.to_string(), |r| format!("{r:?}"));
                return Err(Error::Embedded(format!("stopped on start: {why}")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        Err(Error::Embedded(format!("not listening on {bootstrap} after 2s")))
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rand_u128() -> u128 {
    let a = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    a ^ u128::from(std::process::id()) << 64
}

fn uuid_from(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}
