//! Certificates for tests of TLS listeners: a certificate authority of the test's own and
//! a server certificate it signed for `127.0.0.1` and `localhost`, written as PEM files.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// Where [`write`] put the files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The authority's certificate: a client's `ssl.ca.location`.
    pub ca: PathBuf,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes an authority and a server certificate and writes them into `dir`.
pub fn write(dir: &Path) -> TlsFiles {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tailgate test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a server key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).expect("the server certificate");
    let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") };
    std::fs::write(&files.ca, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(&files.cert, cert.pem()).expect("write server.pem");
    std::fs::write(&files.key, key.serialize_pem()).expect("write server.key");
    files
}
