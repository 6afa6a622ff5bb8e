//! TLS on the gRPC port: real handshakes with certificates made here (a CA, server and client
//! certificates), ALPN for gRPC and grpc-web, client-certificate callers, certificate rotation
//! without a restart, the plaintext health-only port, and what production exposes.

use std::{path::Path, sync::Arc, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use soko::{
    domain::auth::Role,
    proto::{
        grpc::health::v1::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient},
        soko::auth::v1::{MeRequest, auth_service_client::AuthServiceClient},
    },
    startup::Application,
};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::common::{Backend, TestDatabase, spawn_app_with, test_config};

const SERVICE_EMAIL: &str = "billing@services.soko.test";

/// A CA and what it signs, as PEM.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Pair {
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Soko test CA");
        let key = KeyPair::generate().expect("CA key");
        let ca_pem = params.self_signed(&key).expect("CA").pem();
        Self { ca_pem, issuer: Issuer::new(params, key) }
    }

    fn server(&self, common_name: &str) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        self.sign(params)
    }

    fn client(&self, email: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().expect("ia5"))];
        params.distinguished_name.push(DnType::CommonName, "billing service");
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

fn write_pair(dir: &Path, pair: &Pair) {
    // Written beside and renamed, as cert-manager's atomic symlink swap would present them.
    for (name, body) in [("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, body).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

struct TlsApp {
    grpc_port: u16,
    health_addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _database: TestDatabase,
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn spawn_tls(dir: &Path, overrides: &[(&str, &str)]) -> TlsApp {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let (cert, key, ca) =
        (dir.join("tls.crt").display().to_string(), dir.join("tls.key").display().to_string(), dir.join("ca.crt"));
    let ca = ca.display().to_string();
    let mut vars = vec![
        ("SOKO_TLS_CERT_FILE", cert.as_str()),
        ("SOKO_TLS_KEY_FILE", key.as_str()),
        ("SOKO_TLS_CLIENT_CA_FILE", ca.as_str()),
        ("SOKO_TLS_RELOAD_SECS", "1"),
        ("SOKO_HEALTH_ADDR", "127.0.0.1:0"),
    ];
    vars.extend_from_slice(overrides);
    let config = test_config(&database.url, &vars);
    let app = Application::build(config.clone()).await.expect("server starts with TLS");
    let accounts = soko::startup::accounts(&config, app.db());
    accounts.create_user(SERVICE_EMAIL, "service-account-password", Role::Seller).await.expect("service account");
    let grpc_port = app.grpc_addr().port();
    let health_addr = app.health_addr().expect("health port");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TlsApp { grpc_port, health_addr, shutdown: Some(tx), _database: database }
}

async fn tls_channel(pki: &Pki, port: u16, identity: Option<&Pair>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert_pem, &pair.key_pem));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}")).expect("uri").tls_config(tls)?.connect().await
}

fn roots(pki: &Pki) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("ca pem")).expect("root");
    roots
}

/// A raw handshake: the ALPN protocol agreed and the common name of the certificate served.
async fn handshake(
    pki: &Pki,
    port: u16,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Option<Vec<u8>>, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(pki))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (_, session) = stream.get_ref();
    let leaf = session.peer_certificates().expect("server certificate")[0].clone();
    (session.alpn_protocol().map(<[u8]>::to_vec), common_name(&leaf))
}

fn common_name(leaf: &CertificateDer<'_>) -> String {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).expect("x509");
    cert.tbs_certificate.subject.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_alpn_client_certificates_and_rotation_without_dropping_connections() {
    let dir = tempdir("tls");
    let pki = Pki::new();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).expect("ca");
    write_pair(&dir, &pki.server("soko-first"));
    let app = spawn_tls(&dir, &[]).await;

    // gRPC over TLS answers; plaintext on the same port does not.
    let channel = tls_channel(&pki, app.grpc_port, None).await.expect("TLS channel");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let response = loop {
        let response = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("health over TLS");
        if response.get_ref().status() == ServingStatus::Serving || tokio::time::Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.get_ref().status(), ServingStatus::Serving);
    let headers = response.metadata();
    assert_eq!(
        headers.get("strict-transport-security").map(|v| v.to_str().unwrap()).unwrap_or_default(),
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"));
    let plaintext = Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port)).unwrap().connect().await;
    if let Ok(plain) = plaintext {
        // The client sees a protocol error: the server answered its HTTP/2 preface with TLS.
        let answered = HealthClient::new(plain).check(HealthCheckRequest { service: String::new() }).await;
        assert!(answered.is_err(), "plaintext on the TLS port was served");
    }

    // Both protocols are offered: h2 for gRPC, http/1.1 for grpc-web; TLS 1.2 still connects.
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    assert_eq!(handshake(&pki, app.grpc_port, &[b"h2"], all).await.0.as_deref(), Some(&b"h2"[..]));
    assert_eq!(handshake(&pki, app.grpc_port, &[b"http/1.1"], all).await.0.as_deref(), Some(&b"http/1.1"[..]));
    let (_, served) = handshake(&pki, app.grpc_port, &[b"h2"], &[&rustls::version::TLS12]).await;
    assert!(served.contains("soko-first"), "{served}");

    // A client certificate names the caller: the account it names, with that account's role.
    let service = pki.client(SERVICE_EMAIL);
    let mtls = tls_channel(&pki, app.grpc_port, Some(&service)).await.expect("mTLS channel");
    let me = AuthServiceClient::new(mtls).me(MeRequest {}).await.expect("Me as the certificate's account").into_inner();
    assert_eq!(me.user.expect("user").email, SERVICE_EMAIL);
    let anonymous = AuthServiceClient::new(channel.clone()).me(MeRequest {}).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "without a certificate or token: {anonymous:?}");
    // A certificate from a CA we do not trust is refused at the handshake.
    let stranger = Pki::new();
    let foreign = stranger.client(SERVICE_EMAIL);
    let refused = match tls_channel(&pki, app.grpc_port, Some(&foreign)).await {
        Err(_) => true,
        Ok(ch) => AuthServiceClient::new(ch).me(MeRequest {}).await.is_err(),
    };
    assert!(refused, "a client certificate from an unknown CA must not authenticate");

    // Rotation: new files are served to new handshakes within the reload interval, and the
    // connection made before keeps working.
    write_pair(&dir, &pki.server("soko-second"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, served) = handshake(&pki, app.grpc_port, &[b"h2"], all).await;
        if served.contains("soko-second") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the rotated certificate was not picked up: {served}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("the connection opened before the rotation still serves");

    // A broken rotation (a key that does not match) keeps the good certificate.
    std::fs::write(dir.join("tls.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, served) = handshake(&pki, app.grpc_port, &[b"h2"], all).await;
    assert!(served.contains("soko-second"), "{served}");

    // The plaintext health port answers health and nothing else.
    let health =
        Channel::from_shared(format!("http://{}", app.health_addr)).unwrap().connect().await.expect("health port");
    let status = HealthClient::new(health.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("plaintext health")
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    let other = AuthServiceClient::new(health).me(MeRequest {}).await.unwrap_err();
    assert_eq!(other.code(), Code::Unimplemented, "only health is served there: {other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_loaded_stops_start_up_with_its_path() {
    let dir = tempdir("tls-bad");
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.join("tls.key"), "not a key").unwrap();
    let database = TestDatabase::create(Backend::Sqlite).await;
    let cert = dir.join("tls.crt").display().to_string();
    let key = dir.join("tls.key").display().to_string();
    let config =
        test_config(&database.url, &[("SOKO_TLS_CERT_FILE", cert.as_str()), ("SOKO_TLS_KEY_FILE", key.as_str())]);
    let err = match Application::build(config).await {
        Ok(_) => panic!("a server started with an unusable certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("tls.crt"), "{err}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("soko-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_serves_reflection_only_when_asked() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_ENV", "production")]).await;
    let err = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(futures_util::stream::iter([list()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_ENV", "production"), ("SOKO_REFLECTION", "true")]).await;
    ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(futures_util::stream::iter([list()]))
        .await
        .expect("reflection when SOKO_REFLECTION=true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_want_the_bearer_token_when_one_is_configured() {
    use crate::common::http;
    const TOKEN: &str = "scrape-token-0123456789";
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_METRICS_TOKEN", TOKEN)]).await;
    let refused = http::request(app.ops_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
    let wrong = http::request(app.ops_addr, "GET", "/metrics", &[("authorization", "Bearer nope")], b"").await;
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let scraped = http::request(app.ops_addr, "GET", "/metrics", &[("authorization", &bearer)], b"").await;
    assert_eq!(scraped.status, 200);
    // Probes never need the token.
    assert_eq!(http::request(app.ops_addr, "GET", "/health", &[], b"").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_responses_say_nosniff() {
    use crate::common::http;
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let body = http::grpc_frame(&[]);
    let response = http::request(
        app.grpc_addr,
        "POST",
        "/soko.catalog.v1.CatalogService/ListCategories",
        &[("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")],
        &body,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("strict-transport-security"), None, "HSTS only over TLS");
}

/// A Redis of this test's own that speaks only TLS, with a certificate from `pki`.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    async fn start(dir: &Path, pki: &Pki) -> Self {
        let pair = pki.server("redis");
        std::fs::write(dir.join("redis.crt"), &pair.cert_pem).unwrap();
        std::fs::write(dir.join("redis.key"), &pair.key_pem).unwrap();
        std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = |name: &str| dir.join(name).display().to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "::1"])
            .args(["--tls-cert-file", &path("redis.crt"), "--tls-key-file", &path("redis.key")])
            .args(["--tls-ca-cert-file", &path("ca.crt"), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let started = tokio::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server with TLS did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_shared_through_redis_over_tls_and_an_unknown_ca_is_refused() {
    use soko::proto::catalog::ListCategoriesRequest;

    use crate::common::http;
    let dir = tempdir("redis-tls");
    let pki = Pki::new();
    let redis = TlsRedis::start(&dir, &pki).await;
    let url = format!("rediss://localhost:{}", redis.port);
    let ca = dir.join("ca.crt").display().to_string();
    let prefix = format!("tls{}", uuid::Uuid::new_v4().simple());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("SOKO_REDIS_CA_FILE", ca.as_str()),
        ("SOKO_REDIS_KEY_PREFIX", prefix.as_str()),
        ("SOKO_REDIS_TIMEOUT_MS", "2000"),
        ("SOKO_RATE_LIMIT_GLOBAL", "3/min"),
    ];
    let app = spawn_app_with(Backend::Sqlite, &vars).await;
    let mut refused = None;
    for _ in 0..6 {
        if let Err(status) = app.catalog_as(None).list_categories(ListCategoriesRequest {}).await {
            refused = Some(status);
            break;
        }
    }
    assert_eq!(refused.map(|s| s.code()), Some(Code::ResourceExhausted), "the quota is enforced");
    let ready = http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    let ready: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(ready["checks"]["rate_limiter"]["backend"], "redis", "{ready}");
    assert_eq!(ready["checks"]["rate_limiter"]["degraded"], false, "Redis answered over TLS: {ready}");

    // Without our CA the system roots do not know Redis's certificate: the limiter degrades to
    // local limits instead of talking to an unverified server.
    let unverified = spawn_app_with(Backend::Sqlite, &vars[..1]).await;
    let _ = unverified.catalog_as(None).list_categories(ListCategoriesRequest {}).await;
    let ready = http::request(unverified.ops_addr, "GET", "/health/ready", &[], b"").await;
    let ready: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(ready["checks"]["rate_limiter"]["degraded"], true, "{ready}");
}
