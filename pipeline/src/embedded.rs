//! The embedded broker: tailgate's own Kafka-protocol broker (the `broker` crate), served
//! on a loopback port inside this process, in memory unless a data directory is given.

use crate::{Error, Result};

pub use broker::faults::{Fault, FaultCounts, Faults, Plan};
pub use broker::security;
pub use broker::{Config, KIND, VERSION};

/// A running embedded broker; stopped when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    inner: broker::Broker,
}

impl EmbeddedBroker {
    /// Starts an in-memory broker on `127.0.0.1` and a free port.
    pub async fn start() -> Result<Self> {
        Self::start_with(Config::default()).await
    }

    /// Starts an in-memory broker listening on (and advertising) `host:port`, for clients
    /// in other processes too.
    pub async fn start_on(bootstrap: &str) -> Result<Self> {
        Self::start_with(Config { listen: bootstrap.to_owned(), ..Config::default() }).await
    }

    /// Starts a broker as `config` says.
    pub async fn start_with(config: Config) -> Result<Self> {
        let inner = broker::Broker::start(config).await.map_err(|e| Error::Embedded(Box::new(e)))?;
        Ok(Self { inner })
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> &str {
        self.inner.bootstrap()
    }

    /// Where the log is kept: `memory`, or `disk:DIR`.
    pub fn storage(&self) -> String {
        self.inner.storage()
    }

    /// Stops as a crash would and starts again on the same address from its data
    /// directory after `down` (see [`broker::Broker::restart`]).
    pub async fn restart(&mut self, down: std::time::Duration) -> Result<()> {
        self.inner.restart(down).await.map_err(|e| Error::Embedded(Box::new(e)))
    }

    /// The broker itself: its fault hooks and counters.
    pub fn broker(&self) -> &broker::Broker {
        &self.inner
    }
}
