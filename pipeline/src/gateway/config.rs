//! `[gateway]`: who may read and post, how much each client may have queued, what
//! long-poll clients may catch up on, and the gRPC listener, with defaults and checks.

use super::fanout::{FanoutConfig, SlowClient};
use super::{Auth, Scope};
use crate::config::{Problems, valid_bootstrap};
use serde::Deserialize;

/// `[gateway]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// `[[gateway.tokens]]`: bearer tokens; none means the gateway is open.
    #[serde(default)]
    pub tokens: Vec<TokenSection>,
    /// Updates each client may have queued (default 4096).
    pub client_buffer: Option<usize>,
    /// `drop_oldest` (default: the client is told `lagged N`) or `disconnect`.
    #[serde(default)]
    pub slow_client: SlowClient,
    /// Updates kept for long-poll clients (default 10000).
    pub retain: Option<usize>,
    /// Also serve the gRPC `Updates` stream here (`host:port`).
    pub grpc: Option<String>,
}

/// One bearer token and the sessions it may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub token: String,
    /// `"all"` (and the firehose), or a list of session ids.
    pub sessions: SessionsScope,
}

/// `sessions = "all"` or `sessions = [1, 2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SessionsScope {
    Named(String),
    Ids(Vec<u64>),
}

impl GatewaySection {
    /// The gateway's token check, when tokens are configured.
    pub fn auth(&self) -> Option<Auth> {
        (!self.tokens.is_empty()).then(|| {
            Auth::new(self.tokens.iter().map(|t| {
                let scope = match &t.sessions {
                    SessionsScope::Ids(ids) => Scope::Sessions(ids.iter().copied().collect()),
                    SessionsScope::Named(_) => Scope::All,
                };
                (t.token.clone(), scope)
            }))
        })
    }

    /// The clients' buffering.
    pub fn fanout(&self) -> FanoutConfig {
        let d = FanoutConfig::default();
        FanoutConfig {
            buffer: self.client_buffer.unwrap_or(d.buffer),
            policy: self.slow_client,
            retain: self.retain.unwrap_or(d.retain),
        }
    }

    /// The token the run's own clients (the audience, the HTTP players) use: the first
    /// all-sessions one.
    pub fn run_token(&self) -> Option<String> {
        self.tokens
            .iter()
            .find(|t| matches!(&t.sessions, SessionsScope::Named(n) if n == "all"))
            .map(|t| t.token.clone())
    }

    /// Every problem of the section.
    pub fn validate(&self, p: &mut Problems) {
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.trim().is_empty() || t.token.chars().any(char::is_whitespace) {
                p.bad("gateway.tokens", Some(i), "token", "must be non-empty, without spaces");
            }
            if let SessionsScope::Named(n) = &t.sessions
                && n != "all"
            {
                p.bad(
                    "gateway.tokens",
                    Some(i),
                    "sessions",
                    format!("must be \"all\" or a list of session ids, not `{n}`"),
                );
            }
        }
        for (key, value) in [("client_buffer", self.client_buffer), ("retain", self.retain)] {
            if let Some(n) = value
                && !(1..=1_000_000).contains(&n)
            {
                p.bad("gateway", None, key, format!("must be 1 to 1000000, not {n}"));
            }
        }
        if let Some(g) = &self.grpc
            && (!valid_bootstrap(g) || g.contains(','))
        {
            p.bad("gateway", None, "grpc", format!("`{g}` is not host:port, e.g. \"127.0.0.1:50051\""));
        }
        if !self.tokens.is_empty() && self.run_token().is_none() {
            p.bad(
                "gateway.tokens",
                Some(0),
                "sessions",
                "the run's audience follows the firehose: one token needs sessions = \"all\"",
            );
        }
    }
}
