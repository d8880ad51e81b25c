//! Who may talk to the broker, as a Kafka listener decides it: a security protocol
//! (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`), a TLS listener (rustls) for the
//! `SSL` ones, and SASL `PLAIN` and `SCRAM-SHA-256`/`SCRAM-SHA-512` (RFC 5802 and 7677)
//! for the `SASL` ones. Passwords are kept only here and never printed: a [`Security`]
//! shows its users' names, not their passwords.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A listener's security protocol, named as Kafka's `security.protocol` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    /// Every protocol, by its Kafka name.
    pub const ALL: [(&'static str, Self); 4] = [
        ("PLAINTEXT", Self::Plaintext),
        ("SSL", Self::Ssl),
        ("SASL_PLAINTEXT", Self::SaslPlaintext),
        ("SASL_SSL", Self::SaslSsl),
    ];

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, p)| *p == self).map_or("PLAINTEXT", |(n, _)| n)
    }

    /// Whether connections are wrapped in TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(s.trim())).map(|(_, p)| *p).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            format!("unknown security protocol {s:?}; one of {}", names.join(", "))
        })
    }
}

/// The SASL mechanisms the broker offers, in the order it names them.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// How the listener is secured.
#[derive(Clone, Default)]
pub struct Security {
    pub protocol: Protocol,
    /// PEM certificate chain of the TLS listener (the server's certificate first).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub tls_key: Option<PathBuf>,
    /// SASL users and their passwords.
    pub users: BTreeMap<String, String>,
}

impl Security {
    /// What results say of the listener: its protocol, and the mechanisms it offers.
    pub fn listener(&self) -> String {
        if self.protocol.sasl() {
            format!("{} ({})", self.protocol.name(), MECHANISMS.join(", "))
        } else {
            self.protocol.name().to_owned()
        }
    }
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A user's SCRAM credential for one hash, as Kafka keeps it: salt, iterations, and the
/// stored and server keys (never the password).
#[derive(Clone)]
struct Credential {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

/// SCRAM's iteration count (Kafka's minimum, and what its tools use by default).
const ITERATIONS: u32 = 4096;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha512,
}

fn hmac_of<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length; the error arm cannot be reached.
    let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else { return Vec::new() };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => hmac_of::<Hmac<Sha256>>(key, data),
            Self::Sha512 => hmac_of::<Hmac<Sha512>>(key, data),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// PBKDF2 with HMAC of this hash, one block long (SCRAM's `Hi`).
    fn salted(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut first = salt.to_vec();
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &first);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }

    fn credential(self, password: &str) -> Credential {
        let salt: [u8; 16] = rand::random();
        self.credential_salted(password, &salt)
    }

    fn credential_salted(self, password: &str, salt: &[u8]) -> Credential {
        let salted = self.salted(password.as_bytes(), salt, ITERATIONS);
        let client_key = self.hmac(&salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            iterations: ITERATIONS,
            stored_key: self.digest(&client_key),
            server_key: self.hmac(&salted, b"Server Key"),
        }
    }
}

/// A mechanism a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    Plain,
    Scram(Hash),
}

impl Mechanism {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::Scram(Hash::Sha256)),
            "SCRAM-SHA-512" => Some(Self::Scram(Hash::Sha512)),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(Hash::Sha256) => "SCRAM-SHA-256",
            Self::Scram(Hash::Sha512) => "SCRAM-SHA-512",
        }
    }
}

struct User {
    password: String,
    sha256: Credential,
    sha512: Credential,
}

/// The listener's security made ready: the TLS acceptor and every user's credentials.
pub(crate) struct Guard {
    pub protocol: Protocol,
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, User>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Guard {
    /// Reads the certificate and key and derives every user's SCRAM credentials; names
    /// what is missing or unreadable.
    pub fn new(s: &Security) -> Result<Self, String> {
        let tls = if s.protocol.tls() {
            let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) else {
                return Err(format!(
                    "a {} listener needs a certificate and its key (tls_cert, tls_key)",
                    s.protocol.name()
                ));
            };
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
            if certs.is_empty() {
                return Err(format!("TLS certificate {}: no certificate in it", cert.display()));
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_no_client_auth()
                .with_single_cert(certs, key_der)
                .map_err(|e| format!("TLS certificate {} with key {}: {e}", cert.display(), key.display()))?;
            Some(TlsAcceptor::from(Arc::new(config)))
        } else {
            None
        };
        if s.protocol.sasl() && s.users.is_empty() {
            return Err(format!("a {} listener needs at least one user", s.protocol.name()));
        }
        let users = s
            .users
            .iter()
            .map(|(name, password)| {
                let user = User {
                    password: password.clone(),
                    sha256: Hash::Sha256.credential(password),
                    sha512: Hash::Sha512.credential(password),
                };
                (name.clone(), user)
            })
            .collect();
        Ok(Self { protocol: s.protocol, tls, users })
    }

    fn credential(&self, user: &str, hash: Hash) -> Option<&Credential> {
        let u = self.users.get(user)?;
        Some(match hash {
            Hash::Sha256 => &u.sha256,
            Hash::Sha512 => &u.sha512,
        })
    }
}

/// Where one connection is in authenticating.
#[derive(Debug)]
pub(crate) enum Session {
    /// The listener asks for no SASL: every request is served.
    Open,
    /// Waiting for a SaslHandshake.
    Handshake,
    /// The mechanism chosen; waiting for the first SaslAuthenticate.
    Authenticate(Mechanism),
    /// SCRAM's server-first message sent; waiting for the client's final message.
    ScramFinal { hash: Hash, user: String, auth_message_head: String, nonce: String },
    /// Authenticated as this user.
    Done(String),
}

/// What a SaslAuthenticate step answers.
#[derive(Debug)]
pub(crate) enum Step {
    /// Bytes for the client.
    Reply(Vec<u8>),
    /// Authentication failed: the message for the client, and the connection closes.
    Failed(String),
}

impl Session {
    pub fn new(guard: &Guard) -> Self {
        if guard.protocol.sasl() { Self::Handshake } else { Self::Open }
    }

    /// Whether requests other than ApiVersions and the SASL ones may be served.
    pub fn authenticated(&self) -> bool {
        matches!(self, Self::Open | Self::Done(_))
    }

    /// SaslHandshake: the mechanism, or the error and the mechanisms offered.
    pub fn handshake(&mut self, mechanism: &str) -> Result<(), kafka_protocol::ResponseError> {
        use kafka_protocol::ResponseError as E;
        match self {
            Self::Handshake => {}
            _ => return Err(E::IllegalSaslState),
        }
        let m = Mechanism::parse(mechanism).ok_or(E::UnsupportedSaslMechanism)?;
        *self = Self::Authenticate(m);
        Ok(())
    }

    /// One SaslAuthenticate's bytes.
    pub fn authenticate(&mut self, guard: &Guard, bytes: &[u8]) -> Result<Step, kafka_protocol::ResponseError> {
        let outcome = match std::mem::replace(self, Self::Handshake) {
            Self::Authenticate(Mechanism::Plain) => plain(guard, bytes).map(|user| {
                *self = Self::Done(user);
                Vec::new()
            }),
            Self::Authenticate(Mechanism::Scram(hash)) => scram_first(guard, hash, bytes).map(|(reply, next)| {
                *self = next;
                reply
            }),
            Self::ScramFinal { hash, user, auth_message_head, nonce } => {
                scram_final(guard, hash, &user, &auth_message_head, &nonce, bytes).inspect(|_| *self = Self::Done(user))
            }
            other => {
                *self = other;
                return Err(kafka_protocol::ResponseError::IllegalSaslState);
            }
        };
        Ok(match outcome {
            Ok(reply) => Step::Reply(reply),
            Err(why) => Step::Failed(why),
        })
    }
}

fn invalid(mechanism: Mechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        mechanism.name()
    )
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL password`; the user's name.
fn plain(guard: &Guard, bytes: &[u8]) -> Result<String, String> {
    let mut parts = bytes.split(|b| *b == 0);
    let (Some(authz), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    let (user, password) = (String::from_utf8_lossy(user), password);
    if !authz.is_empty() && authz != user.as_bytes() {
        return Err(
            "Authentication failed: Client requested an authorization id that is different from username".into()
        );
    }
    match guard.users.get(user.as_ref()) {
        Some(u) if constant_eq(u.password.as_bytes(), password) => Ok(user.into_owned()),
        _ => Err(invalid(Mechanism::Plain)),
    }
}

/// SCRAM's client-first message: `gs2-header client-first-bare`, with the bare part
/// `n=user,r=nonce[,extensions]`. Replies with server-first.
fn scram_first(guard: &Guard, hash: Hash, bytes: &[u8]) -> Result<(Vec<u8>, Session), String> {
    let mechanism = Mechanism::Scram(hash);
    let text = std::str::from_utf8(bytes).map_err(|_| "Invalid SCRAM client first message: not UTF-8".to_owned())?;
    let bare = text
        .strip_prefix("n,,")
        .or_else(|| text.strip_prefix("y,,"))
        .or_else(|| text.strip_prefix("n,a=").and_then(|r| r.split_once(',').map(|(_, b)| b)))
        .ok_or_else(|| {
            "Invalid SCRAM client first message: no GS2 header (channel binding is not supported)".to_owned()
        })?;
    let mut user = None;
    let mut client_nonce = None;
    for attr in bare.split(',') {
        match attr.split_once('=') {
            Some(("n", v)) => user = Some(v.replace("=2C", ",").replace("=3D", "=")),
            Some(("r", v)) if !v.is_empty() => client_nonce = Some(v.to_owned()),
            _ => {}
        }
    }
    let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
        return Err("Invalid SCRAM client first message: no user or nonce".into());
    };
    let Some(cred) = guard.credential(&user, hash) else { return Err(invalid(mechanism)) };
    let server_nonce: [u8; 18] = rand::random();
    let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
    let server_first = format!("r={nonce},s={},i={}", B64.encode(&cred.salt), cred.iterations);
    let head = format!("{bare},{server_first}");
    Ok((server_first.into_bytes(), Session::ScramFinal { hash, user, auth_message_head: head, nonce }))
}

/// SCRAM's client-final message: `c=binding,r=nonce,p=proof`. Checks the proof against
/// the stored key and replies with the server's signature.
fn scram_final(
    guard: &Guard,
    hash: Hash,
    user: &str,
    head: &str,
    nonce: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, String> {
    let mechanism = Mechanism::Scram(hash);
    let text = std::str::from_utf8(bytes).map_err(|_| "Invalid SCRAM client final message: not UTF-8".to_owned())?;
    let (without_proof, proof) =
        text.rsplit_once(",p=").ok_or_else(|| "Invalid SCRAM client final message: no proof".to_owned())?;
    let their_nonce = without_proof.split(',').find_map(|a| a.strip_prefix("r="));
    if their_nonce != Some(nonce) {
        return Err("Invalid SCRAM client final message: the nonce does not match".into());
    }
    let proof = B64.decode(proof).map_err(|_| "Invalid SCRAM client final message: proof not base64".to_owned())?;
    let Some(cred) = guard.credential(user, hash) else { return Err(invalid(mechanism)) };
    let auth_message = format!("{head},{without_proof}");
    let signature = hash.hmac(&cred.stored_key, auth_message.as_bytes());
    if proof.len() != signature.len() {
        return Err(invalid(mechanism));
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
    if !constant_eq(&hash.digest(&client_key), &cred.stored_key) {
        return Err(invalid(mechanism));
    }
    let server_signature = hash.hmac(&cred.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(protocol: Protocol) -> Guard {
        let users = BTreeMap::from([("user".to_owned(), "pencil".to_owned())]);
        Guard::new(&Security { protocol, users, ..Security::default() }).expect("a guard")
    }

    /// RFC 7677's example exchange, checked against a credential with its salt.
    #[test]
    fn scram_sha_256_accepts_the_rfc_7677_exchange_and_signs_as_it_does() {
        let mut g = guard(Protocol::SaslPlaintext);
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        if let Some(u) = g.users.get_mut("user") {
            u.sha256 = Hash::Sha256.credential_salted("pencil", &salt);
        }
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let head = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let last = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let reply = scram_final(&g, Hash::Sha256, "user", &head, nonce, last.as_bytes()).expect("accepted");
        assert_eq!(String::from_utf8_lossy(&reply), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        let wrong = last.replace("p=dHz", "p=eHz");
        let e = scram_final(&g, Hash::Sha256, "user", &head, nonce, wrong.as_bytes()).expect_err("refused");
        assert!(e.contains("invalid credentials with SASL mechanism SCRAM-SHA-256"), "{e}");
    }

    #[test]
    fn plain_takes_the_right_password_only_and_a_session_must_handshake_first() {
        let g = guard(Protocol::SaslPlaintext);
        let mut s = Session::new(&g);
        assert!(!s.authenticated());
        assert_eq!(s.authenticate(&g, b"\0user\0pencil").err(), Some(kafka_protocol::ResponseError::IllegalSaslState));
        assert_eq!(s.handshake("GSSAPI").err(), Some(kafka_protocol::ResponseError::UnsupportedSaslMechanism));
        s.handshake("PLAIN").expect("offered");
        assert!(matches!(s.authenticate(&g, b"\0user\0pencil"), Ok(Step::Reply(_))));
        assert!(s.authenticated());
        let mut s = Session::new(&g);
        s.handshake("PLAIN").expect("offered");
        assert!(matches!(s.authenticate(&g, b"\0user\0crayon"), Ok(Step::Failed(_))));
        assert!(!s.authenticated());
        for hostile in [&b""[..], b"\0\0\0\0", b"user", b"\xff\0\xff\0\xff"] {
            let mut s = Session::new(&g);
            s.handshake("PLAIN").expect("offered");
            assert!(matches!(s.authenticate(&g, hostile), Ok(Step::Failed(_))), "{hostile:?}");
        }
    }

    #[test]
    fn hostile_scram_messages_fail_without_panicking() {
        let g = guard(Protocol::SaslPlaintext);
        for first in [&b""[..], b"n,,", b"p=tls-unique,,n=user,r=x", b"n,,n=user", b"n,,r=abc", b"\xff\xfe"] {
            let mut s = Session::new(&g);
            s.handshake("SCRAM-SHA-512").expect("offered");
            assert!(matches!(s.authenticate(&g, first), Ok(Step::Failed(_))), "{first:?}");
        }
        let mut s = Session::new(&g);
        s.handshake("SCRAM-SHA-512").expect("offered");
        assert!(matches!(s.authenticate(&g, b"n,,n=user,r=abc"), Ok(Step::Reply(_))));
        assert!(matches!(s.authenticate(&g, b"c=biws,r=abc,p=!!!"), Ok(Step::Failed(_))));
    }

    #[test]
    fn protocols_parse_by_kafka_name_and_debug_hides_passwords() {
        assert_eq!("sasl_ssl".parse::<Protocol>(), Ok(Protocol::SaslSsl));
        assert!("TLS".parse::<Protocol>().expect_err("unknown").contains("SASL_SSL"));
        let s = Security { users: BTreeMap::from([("u".to_owned(), "hunter2".to_owned())]), ..Security::default() };
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = Guard::new(&Security { protocol: Protocol::SaslSsl, ..Security::default() }).expect_err("no cert");
        assert!(e.contains("tls_cert"), "{e}");
    }
}
