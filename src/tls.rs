//! TLS on the gRPC port with rustls: certificates that reload when their files change, optional
//! client certificates for internal services, and an accept loop whose handshakes never hold up
//! the next connection.
//!
//! tonic's own `ServerTlsConfig` loads its certificate once, and cert-manager rotates certificates
//! every few weeks: a replica would serve an expired certificate until restarted. Here the
//! certificate is resolved per handshake from a slot that a watcher refreshes, so rotation needs
//! no restart and leaves established connections alone.

use std::{
    fmt,
    io::{self, BufReader},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
        sign::CertifiedKey,
    },
    server::TlsStream,
};
use x509_cert::{
    Certificate,
    der::Decode,
    ext::pkix::{SubjectAltName, name::GeneralName},
};

/// `SOKO_TLS_*`: where the certificate, key and (for client certificates) the CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients may present a certificate signed by this CA; its identity becomes the
    /// caller (see [`client_identity`]). Clients without one still connect and use tokens.
    pub client_ca_file: Option<PathBuf>,
    /// How often the certificate files are checked for a new version.
    pub reload_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate currently served, replaced in place when the files change.
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingCert")
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A TLS acceptor whose certificate follows the files on disk. Dropping it stops the watcher.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Tls {
    /// Loads the certificate (failing start-up when it is unusable) and starts watching it.
    pub fn start(settings: &TlsSettings) -> Result<Self, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let (key, fingerprint) = load_certified_key(settings, &provider)?;
        let slot = Arc::new(ReloadingCert { current: RwLock::new(Arc::new(key)) });
        // TLS 1.2 and 1.3 only: rustls implements nothing older.
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &settings.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(|e| TlsError::Invalid { path: ca.clone(), what: e.to_string() })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Invalid { path: ca.clone(), what: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(slot.clone());
        // gRPC needs h2; grpc-web from browsers may arrive over HTTP/1.1 on the same port.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let watcher = tokio::spawn(watch(settings.clone(), provider, slot, fingerprint));
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)), watcher })
    }
}

/// Re-reads the files every `reload_interval`; a new, valid pair replaces the served one. A bad
/// pair (a rotation caught half-written, say) is logged and the old certificate kept.
async fn watch(
    settings: TlsSettings,
    provider: Arc<rustls::crypto::CryptoProvider>,
    slot: Arc<ReloadingCert>,
    mut fingerprint: [u8; 32],
) {
    let mut tick = tokio::time::interval(settings.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(now) = files_fingerprint(&settings) else { continue };
        if now == fingerprint {
            continue;
        }
        match load_certified_key(&settings, &provider) {
            Ok((key, loaded)) => {
                *slot.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                fingerprint = loaded;
                metrics::counter!("soko_tls_certificate_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(cert = %settings.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                metrics::counter!("soko_tls_certificate_reloads_total", "outcome" => "error").increment(1);
                tracing::warn!(error = %e, "TLS certificate changed but could not be loaded; keeping the old one");
            }
        }
    }
}

fn files_fingerprint(settings: &TlsSettings) -> Result<[u8; 32], TlsError> {
    let mut hash = Sha256::new();
    for path in [&settings.cert_file, &settings.key_file] {
        hash.update(std::fs::read(path).map_err(|source| TlsError::Read { path: path.clone(), source })?);
    }
    Ok(hash.finalize().into())
}

fn load_certified_key(
    settings: &TlsSettings,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(CertifiedKey, [u8; 32]), TlsError> {
    let fingerprint = files_fingerprint(settings)?;
    let chain = read_certs(&settings.cert_file)?;
    let key_pem = std::fs::read(&settings.key_file)
        .map_err(|source| TlsError::Read { path: settings.key_file.clone(), source })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
        path: settings.key_file.clone(),
        what: format!("no usable PEM private key ({e})"),
    })?;
    let not_after = Certificate::from_der(&chain[0])
        .map(|c| c.tbs_certificate.validity.not_after.to_unix_duration().as_secs())
        .map_err(|e| TlsError::Invalid { path: settings.cert_file.clone(), what: e.to_string() })?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| TlsError::Invalid { path: settings.key_file.clone(), what: e.to_string() })?;
    // What the "certificate expires soon" alert reads.
    metrics::gauge!("soko_tls_certificate_expiry_timestamp_seconds").set(not_after as f64);
    let remaining =
        not_after.saturating_sub(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    tracing::info!(cert = %settings.cert_file.display(), days_left = remaining / 86_400, "TLS certificate loaded");
    Ok((key, fingerprint))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read { path: path.into(), source })?;
    let certs = CertificateDer::pem_reader_iter(BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid { path: path.into(), what: format!("not PEM certificates ({e})") })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid { path: path.into(), what: "holds no certificate".into() });
    }
    Ok(certs)
}

/// How long a client may take over its handshake before the connection is dropped, so that a
/// slowloris on the handshake holds nothing but its own socket.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections after their TLS handshake. Handshakes run concurrently, so one slow or
/// failing client never delays the next; failures are counted and dropped, never surfaced to the
/// server (which would treat an error as fatal). The listener closes when the stream is dropped.
pub fn incoming(listener: TcpListener, acceptor: TlsAcceptor) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((socket, _)) = accepted else { continue };
            // tonic turns Nagle off only for listeners it binds itself (see `startup::incoming`).
            let _ = socket.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("soko_tls_handshake_failures_total").increment(1);
                        tracing::debug!(error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("soko_tls_handshake_failures_total").increment(1);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The identity a verified client certificate names: its first email or DNS subject alternative
/// name, else its subject common name. Soko maps it to the service account with that email.
pub fn client_identity(leaf: &CertificateDer<'_>) -> Option<String> {
    let cert = Certificate::from_der(leaf).ok()?;
    let tbs = &cert.tbs_certificate;
    if let Ok(Some((_, san))) = tbs.get::<SubjectAltName>() {
        for name in san.0 {
            match name {
                GeneralName::Rfc822Name(n) | GeneralName::DnsName(n) => return Some(n.to_string()),
                _ => {}
            }
        }
    }
    tbs.subject.0.iter().flat_map(|rdn| rdn.0.iter()).find_map(|atv| {
        (atv.oid == x509_cert::der::oid::db::rfc4519::CN).then(|| {
            atv.value
                .decode_as::<x509_cert::der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    atv.value.decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>().map(|s| s.as_str().to_owned())
                })
                .ok()
        })?
    })
}
