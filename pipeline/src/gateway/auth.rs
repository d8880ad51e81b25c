//! Bearer tokens: which sessions (or the firehose) a token may read and write, and the
//! answer to a request that is refused.

use super::GatewayState;
use crate::Result;
use axum::http::StatusCode;

/// What a bearer token may read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every session, and the firehose.
    All,
    /// These sessions only.
    Sessions(std::collections::BTreeSet<u64>),
}

/// The gateway's bearer tokens and their scopes.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<(Vec<u8>, Scope)>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No bearer token, or one the gateway does not know (401).
    Unauthenticated,
    /// A known token for other sessions (403).
    Forbidden,
}

impl Auth {
    /// Tokens and their scopes.
    pub fn new(tokens: impl IntoIterator<Item = (String, Scope)>) -> Self {
        Self { tokens: tokens.into_iter().map(|(t, s)| (t.into_bytes(), s)).collect() }
    }

    /// Whether `authorization` (the header's value) may use `session` (the firehose when
    /// `None`).
    pub fn check(&self, authorization: Option<&str>, session: Option<u64>) -> Result<(), Denied> {
        let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).ok_or(Denied::Unauthenticated)?;
        // Every token is compared in full, so the time taken does not tell how much matched.
        let scope = self
            .tokens
            .iter()
            .filter(|(t, _)| {
                t.len() == token.len() && t.iter().zip(token.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0
            })
            .map(|(_, s)| s)
            .next_back()
            .ok_or(Denied::Unauthenticated)?;
        match (scope, session) {
            (Scope::All, _) => Ok(()),
            (Scope::Sessions(ids), Some(id)) if ids.contains(&id) => Ok(()),
            _ => Err(Denied::Forbidden),
        }
    }
}

/// Whether the request's bearer token may use `session` (the firehose when `None`).
pub(super) fn authorize(s: &GatewayState, headers: &axum::http::HeaderMap, session: Option<u64>) -> Result<(), Denied> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    s.authorize(header, session)
}

impl GatewayState {
    /// Whether `authorization` (a header's value) may use `session` (the firehose when
    /// `None`); anything may when no tokens are configured.
    pub fn authorize(&self, authorization: Option<&str>, session: Option<u64>) -> Result<(), Denied> {
        self.auth.as_ref().map_or(Ok(()), |auth| auth.check(authorization, session))
    }
}

/// The answer to a refused request.
pub(super) fn refusal(denied: Denied) -> axum::response::Response {
    use axum::response::IntoResponse;
    match denied {
        Denied::Unauthenticated => {
            (StatusCode::UNAUTHORIZED, [(axum::http::header::WWW_AUTHENTICATE, "Bearer")], "a bearer token is needed")
                .into_response()
        }
        Denied::Forbidden => (StatusCode::FORBIDDEN, "this token is not for that stream").into_response(),
    }
}
