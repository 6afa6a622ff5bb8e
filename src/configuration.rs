//! Typed configuration read from the environment and validated once at start-up.
//!
//! Every problem is reported at once, one line per bad variable, so an operator fixes a bad
//! deployment in one round. The variable names are Soko's public interface: keep them stable.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use http::HeaderValue;

use crate::{middleware::client_ip::Cidr, policy::RateClass};

/// The deployment environment. Production hides internal error text and logs JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Which SQL backend holds the data. URLs may carry passwords, so Debug redacts them.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
    Mysql(String),
}

impl DatabaseUrl {
    /// Parses `DATABASE_URL`; `sqlite://path`, a bare path, `postgres://…` or `mysql://…`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Ok(Self::Postgres(raw.to_owned()))
        } else if raw.starts_with("mysql://") || raw.starts_with("mariadb://") {
            Ok(Self::Mysql(raw.replacen("mariadb://", "mysql://", 1)))
        } else if let Some(path) = raw.strip_prefix("sqlite://") {
            Self::sqlite_path(path)
        } else if raw.contains("://") {
            Err("must start with postgres://, mysql:// or sqlite:// (or be a file path)".into())
        } else {
            Self::sqlite_path(raw)
        }
    }

    fn sqlite_path(path: &str) -> Result<Self, String> {
        if path.is_empty() || path == ":memory:" {
            // Each pooled connection would get its own empty in-memory database.
            return Err("SQLite needs a file path (:memory: is not shared between connections)".into());
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The backend's name, for logs, health and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) | Self::Mysql(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

/// A secret value: never printed, not even in Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Access-token signing and session lifetimes.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secret: Secret,
    /// True when no `JWT_SECRET` was given and a random one was made for this process
    /// (development only: tokens die with the process and differ between replicas).
    pub jwt_secret_generated: bool,
    /// The secret being rotated out and its key id (`JWT_SECRET_PREVIOUS`,
    /// `SOKO_JWT_PREVIOUS_KEY_ID`): still accepted, never used to sign.
    pub jwt_previous: Option<(Secret, String)>,
    pub jwt_key_id: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub password_hash_concurrency: usize,
    /// `SOKO_PASSWORD_HASH_MAX_WAIT_MS`: the longest a sign-in may wait for a hashing slot.
    pub password_hash_max_wait: Duration,
}

/// A rate-limit quota: `limit` calls per `period`, of which up to `burst` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
    pub burst: u32,
}

impl std::str::FromStr for Quota {
    type Err = String;

    /// `100/min`, `5/sec`, `1000/hour`, optionally `,burst=N` (default: the limit).
    fn from_str(raw: &str) -> Result<Self, String> {
        let bad = || format!("`{raw}` is not a quota like 100/min or 10/min,burst=5");
        let mut parts = raw.split(',');
        let (limit, unit) = parts.next().and_then(|r| r.trim().split_once('/')).ok_or_else(bad)?;
        let limit: u32 = limit.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let mut burst = limit;
        for option in parts {
            match option.trim().split_once('=') {
                Some(("burst", n)) => burst = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
        Ok(Self { limit, period, burst })
    }
}

/// A URL that may carry a password; Debug shows it with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(pub String);

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Rate limiting: one quota per method class, keyed per caller.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// The quota every call of a caller counts against, whatever its class.
    pub global: Quota,
    pub auth: Quota,
    pub search: Quota,
    pub upload: Quota,
    pub transaction: Quota,
    pub admin: Quota,
    /// The global quota of a caller using an API key (services call more than people do).
    pub api_key: Quota,
    /// Classes that only count and log would-be rejections.
    pub shadow: Vec<RateClass>,
    /// Shared counters; without it each process limits on its own.
    pub redis_url: Option<RedactedUrl>,
    /// How long a limit decision may wait for Redis before falling back to the local limiter.
    pub redis_timeout: Duration,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl RateLimitConfig {
    pub fn quota(&self, class: RateClass) -> Quota {
        match class {
            RateClass::Default => self.global,
            RateClass::Auth => self.auth,
            RateClass::Search => self.search,
            RateClass::Upload => self.upload,
            RateClass::Transaction => self.transaction,
            RateClass::Admin => self.admin,
        }
    }
}

/// Bounds on what one call may cost the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Deadline of a call when the client sets none (or a longer one).
    pub request_timeout: Duration,
    /// Calls in flight across all connections; more are shed with UNAVAILABLE.
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

/// Which image embedder SearchByImage uses (`SOKO_EMBEDDER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderConfig {
    /// Colour and texture features computed in-process: works with no model, but not semantic.
    Builtin,
    /// A model server implementing `soko.embedder.v1.EmbedderService`.
    Remote { url: RedactedUrl, timeout: Duration },
}

/// Secrets that ship in examples and tutorials: never acceptable in production.
const KNOWN_WEAK_SECRETS: &[&str] =
    &["secret", "changeme", "change-me", "your-secret-key", "jwt-secret", "supersecret", "password"];

fn weak_secret(secret: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(secret).to_lowercase();
    if secret.len() < 32 {
        Some("must be at least 32 bytes")
    } else if KNOWN_WEAK_SECRETS.iter().any(|w| text.contains(w)) {
        Some("contains a well-known example secret")
    } else if secret.iter().collect::<std::collections::HashSet<_>>().len() < 8 {
        Some("has too few distinct characters to be random")
    } else {
        None
    }
}

/// The whole configuration of a Soko process.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseUrl,
    pub env: Environment,
    pub cors_origins: Vec<HeaderValue>,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// `SOKO_LOG_SUCCESS_EVERY`: one successful call in this many gets its log line (1, the
    /// default, logs every call). Failures and refusals are always logged.
    pub log_success_every: u64,
    pub db_pool_size: u32,
    pub db_checkout_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_message_bytes: usize,
    /// Largest accepted message of the search service, which takes photos (SearchByImage).
    pub max_upload_bytes: usize,
    pub embedding_dim: usize,
    pub embedder: EmbedderConfig,
    /// `SOKO_IMAGE_EMBED_MAX_WAIT_MS`: the longest an image search may wait for a decoding slot
    /// of the builtin embedder.
    pub image_embed_max_wait: Duration,
    pub migrate_on_start: bool,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub limits: Limits,
    pub hnsw: crate::vector::HnswParams,
    /// Vector index snapshots; `None` when SOKO_SNAPSHOT_INTERVAL_SECS is 0.
    pub snapshots: Option<crate::vector::snapshot::SnapshotConfig>,
    /// Outbox compaction: `SOKO_OUTBOX_RETENTION_SECS` (7 days; 0 keeps every event) and
    /// `SOKO_OUTBOX_COMPACT_INTERVAL_SECS` (an hour).
    pub outbox_retention: Option<crate::outbox::Retention>,
    /// How long a search result stays cached (in Redis when `REDIS_URL` is set, in this process
    /// otherwise); zero turns the cache off.
    pub search_cache_ttl: Duration,
    /// `SOKO_PRODUCT_CACHE_ENTRIES`: products kept in this process's cache (0 turns the product
    /// cache off); `SOKO_PRODUCT_CACHE_TTL_SECS`: how long an entry lives, here and in Redis.
    pub product_cache: ProductCacheSettings,
    /// Transport security and what the ports expose.
    pub transport: TransportConfig,
    /// Where backups go, how often they are taken and how long they are kept.
    pub backups: crate::backup::BackupConfig,
    /// Trace export over OTLP/gRPC; `None` unless an OTLP endpoint is set.
    pub traces: Option<crate::telemetry::otlp::TraceExport>,
    /// Error tracking; `None` unless `SENTRY_DSN` is set.
    pub sentry: Option<crate::telemetry::sentry::SentryConfig>,
    /// The storefront page's port; `None` unless `SOKO_WEB_ADDR` is set.
    pub web: Option<crate::web::WebConfig>,
    /// Milvus, kept in sync through the outbox; `None` unless `MILVUS_ADDRESS` is set.
    pub milvus: Option<crate::milvus::MilvusConfig>,
}

/// TLS on the gRPC port, the plaintext health port for probes, and what production exposes.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// `SOKO_TLS_CERT_FILE` + `SOKO_TLS_KEY_FILE`; `None` serves plaintext.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `SOKO_HEALTH_ADDR`: a plaintext port serving `grpc.health.v1` alone, for Kubernetes' gRPC
    /// probes, which cannot speak TLS.
    pub health_addr: Option<SocketAddr>,
    /// `SOKO_REFLECTION`: server reflection, on in development and off in production by default.
    pub reflection: bool,
    /// `SOKO_METRICS_TOKEN`: when set, `/metrics` wants `Authorization: Bearer <token>`.
    pub metrics_token: Option<Secret>,
    /// `SOKO_REDIS_CA_FILE`: the CA that signed Redis's certificate, for `rediss://` URLs when it
    /// is not in the system's roots.
    pub redis_ca_file: Option<PathBuf>,
}

/// All the problems found in the environment, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads configuration through `lookup`, so tests can supply their own variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());

        let grpc_addr =
            parse_or(&mut problems, "SOKO_GRPC_ADDR", var("SOKO_GRPC_ADDR"), SocketAddr::from(([0, 0, 0, 0], 50051)));
        let ops_addr =
            parse_or(&mut problems, "SOKO_OPS_ADDR", var("SOKO_OPS_ADDR"), SocketAddr::from(([0, 0, 0, 0], 9090)));
        let data_dir = PathBuf::from(var("SOKO_DATA_DIR").unwrap_or_else(|| "./soko-data".into()));

        let env = match var("SOKO_ENV").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                problems.push(format!("SOKO_ENV: `{other}` is not one of development, production"));
                Environment::Development
            }
        };

        let database = match var("DATABASE_URL") {
            None => DatabaseUrl::Sqlite(data_dir.join("soko.db")),
            Some(raw) => DatabaseUrl::parse(&raw).unwrap_or_else(|why| {
                problems.push(format!("DATABASE_URL: {why}"));
                DatabaseUrl::Sqlite(data_dir.join("soko.db"))
            }),
        };

        let cors_origins = var("SOKO_CORS_ORIGINS").map(|raw| parse_origins(&raw, &mut problems)).unwrap_or_default();

        let log_filter = var("RUST_LOG").unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            problems.push(format!("RUST_LOG: {e}"));
        }
        let log_success_every: u64 =
            parse_or(&mut problems, "SOKO_LOG_SUCCESS_EVERY", var("SOKO_LOG_SUCCESS_EVERY"), 1);
        if !(1..=1_000_000).contains(&log_success_every) {
            problems.push(format!("SOKO_LOG_SUCCESS_EVERY: {log_success_every} is outside 1..=1000000"));
        }
        let log_format = match var("SOKO_LOG_FORMAT").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => match env {
                Environment::Production => LogFormat::Json,
                Environment::Development => LogFormat::Pretty,
            },
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                problems.push(format!("SOKO_LOG_FORMAT: `{other}` is not one of json, pretty"));
                LogFormat::Pretty
            }
        };

        let db_pool_size: u32 = parse_or(&mut problems, "SOKO_DB_POOL_SIZE", var("SOKO_DB_POOL_SIZE"), 10);
        if !(1..=1000).contains(&db_pool_size) {
            problems.push(format!("SOKO_DB_POOL_SIZE: {db_pool_size} is outside 1..=1000"));
        }
        let checkout_ms: u64 =
            parse_or(&mut problems, "SOKO_DB_CHECKOUT_TIMEOUT_MS", var("SOKO_DB_CHECKOUT_TIMEOUT_MS"), 250);
        if !(1..=60_000).contains(&checkout_ms) {
            problems.push(format!("SOKO_DB_CHECKOUT_TIMEOUT_MS: {checkout_ms} is outside 1..=60000"));
        }
        let shutdown_secs: u64 =
            parse_or(&mut problems, "SOKO_SHUTDOWN_TIMEOUT_SECS", var("SOKO_SHUTDOWN_TIMEOUT_SECS"), 10);
        if !(1..=600).contains(&shutdown_secs) {
            problems.push(format!("SOKO_SHUTDOWN_TIMEOUT_SECS: {shutdown_secs} is outside 1..=600"));
        }
        let max_message_bytes: usize =
            parse_or(&mut problems, "SOKO_MAX_MESSAGE_BYTES", var("SOKO_MAX_MESSAGE_BYTES"), 4 * 1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            problems.push(format!("SOKO_MAX_MESSAGE_BYTES: {max_message_bytes} is outside 1024..=67108864"));
        }
        // A 10 MiB photo plus the rest of the request and framing.
        let max_upload_bytes: usize = parse_or(
            &mut problems,
            "SOKO_MAX_UPLOAD_BYTES",
            var("SOKO_MAX_UPLOAD_BYTES"),
            crate::embed::MAX_IMAGE_BYTES + 64 * 1024,
        );
        if !(1024..=64 * 1024 * 1024).contains(&max_upload_bytes) {
            problems.push(format!("SOKO_MAX_UPLOAD_BYTES: {max_upload_bytes} is outside 1024..=67108864"));
        }
        // Raising the general limit past the upload one must not make search the stingy service.
        let max_upload_bytes = max_upload_bytes.max(max_message_bytes);
        let embedding_dim: usize = parse_or(&mut problems, "SOKO_EMBEDDING_DIM", var("SOKO_EMBEDDING_DIM"), 768);
        if !(2..=4096).contains(&embedding_dim) {
            problems.push(format!("SOKO_EMBEDDING_DIM: {embedding_dim} is outside 2..=4096"));
        }
        let embedder_timeout_ms: u64 =
            parse_or(&mut problems, "SOKO_EMBEDDER_TIMEOUT_MS", var("SOKO_EMBEDDER_TIMEOUT_MS"), 3000);
        if !(10..=60_000).contains(&embedder_timeout_ms) {
            problems.push(format!("SOKO_EMBEDDER_TIMEOUT_MS: {embedder_timeout_ms} is outside 10..=60000"));
        }
        // Two seconds: a photo search is a person waiting, who will try again rather than wait
        // longer; at a few hundred milliseconds a decode, that is a few rounds per core queued.
        let image_wait_ms: u64 =
            parse_or(&mut problems, "SOKO_IMAGE_EMBED_MAX_WAIT_MS", var("SOKO_IMAGE_EMBED_MAX_WAIT_MS"), 2000);
        if !(1..=60_000).contains(&image_wait_ms) {
            problems.push(format!("SOKO_IMAGE_EMBED_MAX_WAIT_MS: {image_wait_ms} is outside 1..=60000"));
        }
        let embedder = match var("SOKO_EMBEDDER").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("builtin") => EmbedderConfig::Builtin,
            Some("remote") => match var("SOKO_EMBEDDER_URL") {
                // Plain HTTP/2 only: this build has no TLS client, so an https URL would fail at
                // the first search instead of here.
                Some(url) if url.starts_with("http://") && url.parse::<http::Uri>().is_ok() => EmbedderConfig::Remote {
                    url: RedactedUrl(url),
                    timeout: Duration::from_millis(embedder_timeout_ms),
                },
                Some(_) => {
                    problems.push("SOKO_EMBEDDER_URL: must be an http:// URL like http://embedder:50052".into());
                    EmbedderConfig::Builtin
                }
                None => {
                    problems.push("SOKO_EMBEDDER_URL: is required when SOKO_EMBEDDER=remote".into());
                    EmbedderConfig::Builtin
                }
            },
            Some(other) => {
                problems.push(format!("SOKO_EMBEDDER: `{other}` is not one of builtin, remote"));
                EmbedderConfig::Builtin
            }
        };
        let migrate_on_start = parse_or(&mut problems, "SOKO_MIGRATE_ON_START", var("SOKO_MIGRATE_ON_START"), true);

        let (jwt_secret, jwt_secret_generated) = match var("JWT_SECRET") {
            Some(raw) => {
                if let Some(why) = weak_secret(raw.as_bytes()) {
                    if env == Environment::Production {
                        problems.push(format!("JWT_SECRET: {why}; production refuses weak secrets"));
                    } else {
                        tracing::warn!("JWT_SECRET {why}; production would refuse it");
                    }
                }
                (Secret::new(raw.into_bytes()), false)
            }
            None if env == Environment::Production => {
                problems.push("JWT_SECRET: is required in production (at least 32 random bytes)".into());
                (Secret::new(Vec::new()), false)
            }
            None => {
                let mut bytes = vec![0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|e| ConfigError(vec![format!("JWT_SECRET: no randomness: {e}")]))?;
                (Secret::new(bytes), true)
            }
        };
        let access_secs: u64 =
            parse_or(&mut problems, "SOKO_ACCESS_TOKEN_TTL_SECS", var("SOKO_ACCESS_TOKEN_TTL_SECS"), 900);
        if !(60..=86_400).contains(&access_secs) {
            problems.push(format!("SOKO_ACCESS_TOKEN_TTL_SECS: {access_secs} is outside 60..=86400"));
        }
        let refresh_secs: u64 =
            parse_or(&mut problems, "SOKO_REFRESH_TOKEN_TTL_SECS", var("SOKO_REFRESH_TOKEN_TTL_SECS"), 30 * 24 * 3600);
        if !(3600..=90 * 24 * 3600).contains(&refresh_secs) {
            problems.push(format!("SOKO_REFRESH_TOKEN_TTL_SECS: {refresh_secs} is outside 3600..=7776000"));
        }
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        let password_hash_concurrency: usize =
            parse_or(&mut problems, "SOKO_PASSWORD_HASH_CONCURRENCY", var("SOKO_PASSWORD_HASH_CONCURRENCY"), cores);
        if !(1..=64).contains(&password_hash_concurrency) {
            problems.push(format!("SOKO_PASSWORD_HASH_CONCURRENCY: {password_hash_concurrency} is outside 1..=64"));
        }
        // One second: a sign-in waiting longer than that for its turn is better told at once
        // when to retry (RESOURCE_EXHAUSTED with RetryInfo). At OWASP's parameters that is some
        // tens of hashes per core queued: enough to absorb a burst, too few to build up seconds.
        let hash_wait_ms: u64 =
            parse_or(&mut problems, "SOKO_PASSWORD_HASH_MAX_WAIT_MS", var("SOKO_PASSWORD_HASH_MAX_WAIT_MS"), 1000);
        if !(1..=60_000).contains(&hash_wait_ms) {
            problems.push(format!("SOKO_PASSWORD_HASH_MAX_WAIT_MS: {hash_wait_ms} is outside 1..=60000"));
        }
        let jwt_key_id = var("SOKO_JWT_KEY_ID").unwrap_or_else(|| "soko-1".into());
        // A rotation: the old secret under its old key id, accepted (never used to sign) until
        // the tokens it signed have expired.
        let jwt_previous = match (var("JWT_SECRET_PREVIOUS"), var("SOKO_JWT_PREVIOUS_KEY_ID")) {
            (None, None) => None,
            (Some(secret), Some(key_id)) => {
                if key_id == jwt_key_id {
                    problems.push(format!(
                        "SOKO_JWT_PREVIOUS_KEY_ID: `{key_id}` is also SOKO_JWT_KEY_ID; a rotation gives the new key a new id"
                    ));
                }
                if let Some(why) = weak_secret(secret.as_bytes())
                    && env == Environment::Production
                {
                    problems.push(format!("JWT_SECRET_PREVIOUS: {why}; production refuses weak secrets"));
                }
                Some((Secret::new(secret.into_bytes()), key_id))
            }
            (Some(_), None) => {
                problems.push("JWT_SECRET_PREVIOUS: needs SOKO_JWT_PREVIOUS_KEY_ID, the key id it signed with".into());
                None
            }
            (None, Some(_)) => {
                problems.push("SOKO_JWT_PREVIOUS_KEY_ID: needs JWT_SECRET_PREVIOUS".into());
                None
            }
        };
        let auth = AuthConfig {
            jwt_secret,
            jwt_secret_generated,
            jwt_previous,
            jwt_key_id,
            jwt_issuer: var("SOKO_JWT_ISSUER").unwrap_or_else(|| "soko".into()),
            jwt_audience: var("SOKO_JWT_AUDIENCE").unwrap_or_else(|| "soko-api".into()),
            access_token_ttl: Duration::from_secs(access_secs),
            refresh_token_ttl: Duration::from_secs(refresh_secs),
            password_hash_concurrency,
            password_hash_max_wait: Duration::from_millis(hash_wait_ms),
        };

        let quota = |problems: &mut Vec<String>, key: &str, default: &str| -> Quota {
            parse_or(problems, key, var(key), default.parse().expect("valid default quota"))
        };
        let shadow = var("SOKO_RATE_LIMIT_SHADOW")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .filter_map(|c| match c {
                        "default" | "global" => Some(RateClass::Default),
                        "auth" => Some(RateClass::Auth),
                        "search" => Some(RateClass::Search),
                        "upload" => Some(RateClass::Upload),
                        "transaction" => Some(RateClass::Transaction),
                        "admin" => Some(RateClass::Admin),
                        other => {
                            problems.push(format!("SOKO_RATE_LIMIT_SHADOW: unknown class `{other}`"));
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let redis_url = var("REDIS_URL");
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            problems.push("REDIS_URL: must start with redis:// or rediss://".into());
        }
        let redis_timeout_ms: u64 = parse_or(&mut problems, "SOKO_REDIS_TIMEOUT_MS", var("SOKO_REDIS_TIMEOUT_MS"), 50);
        let rate_limits = RateLimitConfig {
            enabled: parse_or(&mut problems, "SOKO_RATE_LIMIT_ENABLED", var("SOKO_RATE_LIMIT_ENABLED"), true),
            global: quota(&mut problems, "SOKO_RATE_LIMIT_GLOBAL", "100/min"),
            auth: quota(&mut problems, "SOKO_RATE_LIMIT_AUTH", "10/min"),
            search: quota(&mut problems, "SOKO_RATE_LIMIT_SEARCH", "100/min"),
            upload: quota(&mut problems, "SOKO_RATE_LIMIT_UPLOAD", "5/min"),
            transaction: quota(&mut problems, "SOKO_RATE_LIMIT_TRANSACTION", "20/min"),
            admin: quota(&mut problems, "SOKO_RATE_LIMIT_ADMIN", "300/min"),
            api_key: quota(&mut problems, "SOKO_RATE_LIMIT_API_KEY", "1000/min"),
            shadow,
            redis_url: redis_url.map(RedactedUrl),
            redis_timeout: Duration::from_millis(redis_timeout_ms.clamp(1, 10_000)),
            key_prefix: var("SOKO_REDIS_KEY_PREFIX").unwrap_or_else(|| "soko".into()),
        };
        let trusted_proxies = var("SOKO_TRUSTED_PROXIES")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .filter_map(|c| c.parse().map_err(|e| problems.push(format!("SOKO_TRUSTED_PROXIES: {e}"))).ok())
                    .collect()
            })
            .unwrap_or_default();
        let timeout_ms: u64 =
            parse_or(&mut problems, "SOKO_REQUEST_TIMEOUT_MS", var("SOKO_REQUEST_TIMEOUT_MS"), 30_000);
        if !(10..=600_000).contains(&timeout_ms) {
            problems.push(format!("SOKO_REQUEST_TIMEOUT_MS: {timeout_ms} is outside 10..=600000"));
        }
        let limits = Limits {
            trusted_proxies,
            request_timeout: Duration::from_millis(timeout_ms),
            max_concurrent_requests: parse_or(
                &mut problems,
                "SOKO_MAX_CONCURRENT_REQUESTS",
                var("SOKO_MAX_CONCURRENT_REQUESTS"),
                1024,
            ),
            max_concurrent_streams: parse_or(
                &mut problems,
                "SOKO_MAX_CONCURRENT_STREAMS",
                var("SOKO_MAX_CONCURRENT_STREAMS"),
                256,
            ),
        };
        if limits.max_concurrent_requests == 0 {
            problems.push("SOKO_MAX_CONCURRENT_REQUESTS: must be at least 1".into());
        }

        let defaults = crate::vector::HnswParams::default();
        let hnsw = crate::vector::HnswParams {
            m: parse_or(&mut problems, "SOKO_HNSW_M", var("SOKO_HNSW_M"), defaults.m),
            ef_construction: parse_or(
                &mut problems,
                "SOKO_HNSW_EF_CONSTRUCTION",
                var("SOKO_HNSW_EF_CONSTRUCTION"),
                defaults.ef_construction,
            ),
            ef_search: parse_or(&mut problems, "SOKO_HNSW_EF_SEARCH", var("SOKO_HNSW_EF_SEARCH"), defaults.ef_search),
            metric: match var("SOKO_VECTOR_METRIC") {
                None => defaults.metric,
                Some(name) => crate::vector::distance::Metric::parse(&name).unwrap_or_else(|| {
                    problems.push(format!("SOKO_VECTOR_METRIC: {name:?} is not cosine or l2"));
                    defaults.metric
                }),
            },
        };
        if !(4..=256).contains(&hnsw.m) {
            problems.push(format!("SOKO_HNSW_M: {} is outside 4..=256", hnsw.m));
        }
        if !(8..=4096).contains(&hnsw.ef_construction) {
            problems.push(format!("SOKO_HNSW_EF_CONSTRUCTION: {} is outside 8..=4096", hnsw.ef_construction));
        }
        if !(1..=4096).contains(&hnsw.ef_search) {
            problems.push(format!("SOKO_HNSW_EF_SEARCH: {} is outside 1..=4096", hnsw.ef_search));
        }

        let snapshot_secs: u64 =
            parse_or(&mut problems, "SOKO_SNAPSHOT_INTERVAL_SECS", var("SOKO_SNAPSHOT_INTERVAL_SECS"), 300);
        if snapshot_secs > 7 * 24 * 3600 {
            problems.push(format!("SOKO_SNAPSHOT_INTERVAL_SECS: {snapshot_secs} is more than a week"));
        }
        let snapshots = (snapshot_secs > 0).then(|| crate::vector::snapshot::SnapshotConfig {
            dir: var("SOKO_SNAPSHOT_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("search-snapshot")),
            interval: Duration::from_secs(snapshot_secs),
            source: format!("{database:?}"),
        });

        let retention_secs: u64 =
            parse_or(&mut problems, "SOKO_OUTBOX_RETENTION_SECS", var("SOKO_OUTBOX_RETENTION_SECS"), 7 * 24 * 3600);
        let compact_secs: u64 = parse_or(
            &mut problems,
            "SOKO_OUTBOX_COMPACT_INTERVAL_SECS",
            var("SOKO_OUTBOX_COMPACT_INTERVAL_SECS"),
            3600,
        );
        if compact_secs == 0 || compact_secs > 7 * 24 * 3600 {
            problems.push(format!("SOKO_OUTBOX_COMPACT_INTERVAL_SECS: {compact_secs} is outside 1 second..1 week"));
        }
        let outbox_retention = (retention_secs > 0).then(|| crate::outbox::Retention {
            keep: Duration::from_secs(retention_secs),
            every: Duration::from_secs(compact_secs.max(1)),
        });

        let search_cache_secs: u64 =
            parse_or(&mut problems, "SOKO_SEARCH_CACHE_TTL_SECS", var("SOKO_SEARCH_CACHE_TTL_SECS"), 3600);
        if search_cache_secs > 7 * 24 * 3600 {
            problems.push(format!("SOKO_SEARCH_CACHE_TTL_SECS: {search_cache_secs} is more than a week"));
        }
        let product_cache_entries: usize =
            parse_or(&mut problems, "SOKO_PRODUCT_CACHE_ENTRIES", var("SOKO_PRODUCT_CACHE_ENTRIES"), 50_000);
        if product_cache_entries > 10_000_000 {
            problems.push(format!("SOKO_PRODUCT_CACHE_ENTRIES: {product_cache_entries} is more than 10000000"));
        }
        let product_cache_secs: u64 =
            parse_or(&mut problems, "SOKO_PRODUCT_CACHE_TTL_SECS", var("SOKO_PRODUCT_CACHE_TTL_SECS"), 600);
        if !(1..=86_400).contains(&product_cache_secs) {
            problems.push(format!("SOKO_PRODUCT_CACHE_TTL_SECS: {product_cache_secs} is outside 1..=86400"));
        }

        let transport = transport(&var, env, &mut problems);

        let backup_secs: u64 =
            parse_or(&mut problems, "SOKO_BACKUP_INTERVAL_SECS", var("SOKO_BACKUP_INTERVAL_SECS"), 86_400);
        if backup_secs != 0 && !(60..=30 * 86_400).contains(&backup_secs) {
            problems.push(format!(
                "SOKO_BACKUP_INTERVAL_SECS: {backup_secs} is outside 60..=2592000 (0 turns the schedule off)"
            ));
        }
        let retention_days: u64 =
            parse_or(&mut problems, "SOKO_BACKUP_RETENTION_DAYS", var("SOKO_BACKUP_RETENTION_DAYS"), 30);
        if !(1..=3650).contains(&retention_days) {
            problems.push(format!("SOKO_BACKUP_RETENTION_DAYS: {retention_days} is outside 1..=3650"));
        }
        let backups = crate::backup::BackupConfig {
            dir: var("SOKO_BACKUP_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("backups")),
            interval: (backup_secs > 0).then(|| Duration::from_secs(backup_secs)),
            retention: Duration::from_secs(retention_days.saturating_mul(86_400)),
            keep_min: parse_or(&mut problems, "SOKO_BACKUP_KEEP_MIN", var("SOKO_BACKUP_KEEP_MIN"), 7),
        };

        let traces = traces(&var, &mut problems);
        let milvus = milvus(&var, embedding_dim, hnsw, &mut problems);
        let secrets = known_secrets(&database, &auth, &rate_limits, &transport, milvus.as_ref());
        let sentry = sentry(&var, env, secrets, &mut problems);
        let web = var("SOKO_WEB_ADDR").map(|raw| {
            let addr = parse_or(&mut problems, "SOKO_WEB_ADDR", Some(raw), SocketAddr::from(([127, 0, 0, 1], 8080)));
            let grpc_url = var("SOKO_WEB_GRPC_URL");
            if let Some(url) = &grpc_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                problems.push(format!("SOKO_WEB_GRPC_URL: `{url}` is not an http:// or https:// URL"));
            }
            crate::web::WebConfig {
                addr,
                dir: var("SOKO_WEB_DIR").map_or_else(|| PathBuf::from("clients/web/dist"), PathBuf::from),
                grpc_url,
            }
        });

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Self {
            grpc_addr,
            ops_addr,
            data_dir,
            database,
            env,
            cors_origins,
            log_filter,
            log_format,
            log_success_every: log_success_every.max(1),
            db_pool_size,
            db_checkout_timeout: Duration::from_millis(checkout_ms),
            shutdown_timeout: Duration::from_secs(shutdown_secs),
            max_message_bytes,
            max_upload_bytes,
            embedding_dim,
            embedder,
            image_embed_max_wait: Duration::from_millis(image_wait_ms),
            migrate_on_start,
            auth,
            rate_limits,
            limits,
            hnsw,
            snapshots,
            outbox_retention,
            search_cache_ttl: Duration::from_secs(search_cache_secs),
            product_cache: ProductCacheSettings {
                entries: product_cache_entries,
                ttl: Duration::from_secs(product_cache_secs),
            },
            transport,
            backups,
            traces,
            sentry,
            web,
            milvus,
        })
    }
}

/// The standard OpenTelemetry variables that say whether and how spans leave the process. The
/// exporter reads the rest of them itself (headers, timeout, compression); the sampler and the
/// resource come from `OTEL_TRACES_SAMPLER*`, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
fn traces(
    var: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<crate::telemetry::otlp::TraceExport> {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter = var("OTEL_TRACES_EXPORTER").map(|v| v.to_ascii_lowercase());
    let (key, endpoint) = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
        (None, Some(url)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", url),
        (None, None) => return None,
    };
    if disabled || exporter.as_deref() == Some("none") {
        return None;
    }
    if let Some(other) = exporter.as_deref().filter(|e| *e != "otlp") {
        problems.push(format!("OTEL_TRACES_EXPORTER: `{other}` is not one of otlp, none"));
    }
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => problems.push(format!("{key}: `{endpoint}` is not an http:// or https:// URL")),
    }
    if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|p| p != "grpc") {
        problems.push(format!("OTEL_EXPORTER_OTLP_PROTOCOL: `{protocol}` is not supported; Soko exports over grpc"));
    }
    // The batch settings of the OTel specification's batch span processor (milliseconds).
    let millis = |problems: &mut Vec<String>, key: &str, default: u64| {
        let ms: u64 = parse_or(problems, key, var(key), default);
        if !(1..=600_000).contains(&ms) {
            problems.push(format!("{key}: {ms} is outside 1..=600000 milliseconds"));
        }
        Duration::from_millis(ms.max(1))
    };
    let schedule_delay = millis(problems, "OTEL_BSP_SCHEDULE_DELAY", 5_000);
    let export_timeout = millis(problems, "OTEL_BSP_EXPORT_TIMEOUT", 30_000);
    let max_queue: usize = parse_or(problems, "OTEL_BSP_MAX_QUEUE_SIZE", var("OTEL_BSP_MAX_QUEUE_SIZE"), 2048);
    let max_batch: usize =
        parse_or(problems, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"), 512);
    if !(1..=1_000_000).contains(&max_queue) {
        problems.push(format!("OTEL_BSP_MAX_QUEUE_SIZE: {max_queue} is outside 1..=1000000"));
    }
    if max_batch == 0 || max_batch > max_queue {
        problems.push(format!("OTEL_BSP_MAX_EXPORT_BATCH_SIZE: {max_batch} is not in 1..=OTEL_BSP_MAX_QUEUE_SIZE"));
    }
    Some(crate::telemetry::otlp::TraceExport {
        endpoint,
        schedule_delay,
        export_timeout,
        max_queue: max_queue.max(1),
        max_batch: max_batch.max(1),
    })
}

/// Every secret the configuration holds, for scrubbers to look for.
fn known_secrets(
    database: &DatabaseUrl,
    auth: &AuthConfig,
    rate_limits: &RateLimitConfig,
    transport: &TransportConfig,
    milvus: Option<&crate::milvus::MilvusConfig>,
) -> Vec<Secret> {
    let url_password = |url: &str| -> Option<Secret> {
        let (_, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let (userinfo, _) = authority.rsplit_once('@')?;
        let (_, password) = userinfo.split_once(':')?;
        Some(Secret::new(password.as_bytes().to_vec()))
    };
    let mut secrets = vec![auth.jwt_secret.clone()];
    secrets.extend(auth.jwt_previous.iter().map(|(secret, _)| secret.clone()));
    secrets.extend(transport.metrics_token.clone());
    if let DatabaseUrl::Postgres(url) | DatabaseUrl::Mysql(url) = database {
        secrets.extend(url_password(url));
    }
    secrets.extend(rate_limits.redis_url.as_ref().and_then(|url| url_password(&url.0)));
    secrets.extend(milvus.and_then(|m| m.password.clone()));
    secrets
}

/// `SENTRY_DSN`, `SENTRY_RELEASE`, `SENTRY_ENVIRONMENT` and `SENTRY_TRACES_SAMPLE_RATE`, the
/// names Sentry's own SDKs read, and `SOKO_SENTRY_EVENTS_PER_SECOND`, how many events one kind
/// of failure may send (1 by default, in bursts of ten seconds' worth). The secrets this process
/// holds are handed over too, so that an event can never carry one.
fn sentry(
    var: &impl Fn(&str) -> Option<String>,
    env: Environment,
    secrets: Vec<Secret>,
    problems: &mut Vec<String>,
) -> Option<crate::telemetry::sentry::SentryConfig> {
    let raw = var("SENTRY_DSN")?;
    let dsn = match raw.parse::<sentry::types::Dsn>() {
        Ok(dsn) => dsn,
        Err(e) => {
            problems.push(format!("SENTRY_DSN: {e} (expected https://KEY@HOST/PROJECT)"));
            return None;
        }
    };
    let traces_sample_rate: f32 =
        parse_or(problems, "SENTRY_TRACES_SAMPLE_RATE", var("SENTRY_TRACES_SAMPLE_RATE"), 0.1);
    if !(0.0..=1.0).contains(&traces_sample_rate) {
        problems.push(format!("SENTRY_TRACES_SAMPLE_RATE: {traces_sample_rate} is outside 0..=1"));
    }
    let events_per_second: f64 =
        parse_or(problems, "SOKO_SENTRY_EVENTS_PER_SECOND", var("SOKO_SENTRY_EVENTS_PER_SECOND"), 1.0);
    if !(events_per_second > 0.0 && events_per_second <= 10_000.0) {
        problems.push(format!("SOKO_SENTRY_EVENTS_PER_SECOND: {events_per_second} is outside (0, 10000]"));
    }
    Some(crate::telemetry::sentry::SentryConfig {
        dsn,
        release: var("SENTRY_RELEASE").unwrap_or_else(crate::telemetry::sentry::default_release),
        environment: var("SENTRY_ENVIRONMENT").unwrap_or_else(|| env.name().to_owned()),
        traces_sample_rate: traces_sample_rate.clamp(0.0, 1.0),
        events_per_second,
        secrets,
    })
}

/// Milvus, named as its operators already name it (`MILVUS_ADDRESS`, `MILVUS_USERNAME`,
/// `MILVUS_PASSWORD`, `MILVUS_TIMEOUT` in seconds), plus Soko's collection and index settings.
/// The vector dimension and metric are the local index's: both stores hold the same vectors.
fn milvus(
    var: &impl Fn(&str) -> Option<String>,
    dim: usize,
    hnsw: crate::vector::HnswParams,
    problems: &mut Vec<String>,
) -> Option<crate::milvus::MilvusConfig> {
    let route_search = match var("SOKO_VECTOR_BACKEND").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("local") => false,
        Some("milvus") => true,
        Some(other) => {
            problems.push(format!("SOKO_VECTOR_BACKEND: `{other}` is not one of local, milvus"));
            false
        }
    };
    let Some(raw) = var("MILVUS_ADDRESS") else {
        if route_search {
            problems.push("SOKO_VECTOR_BACKEND: `milvus` needs MILVUS_ADDRESS".into());
        }
        return None;
    };
    let address = if raw.contains("://") { raw.trim().to_owned() } else { format!("http://{}", raw.trim()) };
    if !(address.starts_with("http://") || address.starts_with("https://"))
        || address.parse::<http::Uri>().map_or(true, |u| u.host().is_none())
    {
        problems.push(format!("MILVUS_ADDRESS: `{raw}` is not host:port or an http(s):// URL"));
    }
    let username = var("MILVUS_USERNAME");
    let password = var("MILVUS_PASSWORD").map(|p| Secret::new(p.into_bytes()));
    if username.is_some() != password.is_some() {
        problems.push("MILVUS_USERNAME and MILVUS_PASSWORD: set both, or neither".into());
    }
    let timeout: f64 = parse_or(problems, "MILVUS_TIMEOUT", var("MILVUS_TIMEOUT"), 10.0);
    if !(0.1..=600.0).contains(&timeout) {
        problems.push(format!("MILVUS_TIMEOUT: {timeout} is outside 0.1..=600 seconds"));
    }
    let collection = var("SOKO_MILVUS_COLLECTION").unwrap_or_else(|| "soko_products".into());
    let valid_name = collection.len() <= 255
        && collection.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && collection.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        problems.push(format!(
            "SOKO_MILVUS_COLLECTION: `{collection}` must start with a letter or _ and hold only letters, digits and _"
        ));
    }
    let index = match var("SOKO_MILVUS_INDEX").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("hnsw") => crate::milvus::IndexKind::Hnsw { m: hnsw.m, ef_construction: hnsw.ef_construction },
        Some("ivf_flat") => {
            let nlist: usize = parse_or(problems, "SOKO_MILVUS_NLIST", var("SOKO_MILVUS_NLIST"), 1024);
            if !(1..=65_536).contains(&nlist) {
                problems.push(format!("SOKO_MILVUS_NLIST: {nlist} is outside 1..=65536"));
            }
            crate::milvus::IndexKind::IvfFlat { nlist }
        }
        Some(other) => {
            problems.push(format!("SOKO_MILVUS_INDEX: `{other}` is not one of hnsw, ivf_flat"));
            crate::milvus::IndexKind::Hnsw { m: hnsw.m, ef_construction: hnsw.ef_construction }
        }
    };
    let nprobe: usize = parse_or(problems, "SOKO_MILVUS_NPROBE", var("SOKO_MILVUS_NPROBE"), 16);
    if !(1..=65_536).contains(&nprobe) {
        problems.push(format!("SOKO_MILVUS_NPROBE: {nprobe} is outside 1..=65536"));
    }
    let reconcile_secs: u64 =
        parse_or(problems, "SOKO_MILVUS_RECONCILE_INTERVAL_SECS", var("SOKO_MILVUS_RECONCILE_INTERVAL_SECS"), 3600);
    if reconcile_secs > 7 * 24 * 3600 {
        problems.push(format!("SOKO_MILVUS_RECONCILE_INTERVAL_SECS: {reconcile_secs} is more than a week"));
    }
    Some(crate::milvus::MilvusConfig {
        reconcile_every: (reconcile_secs > 0).then(|| Duration::from_secs(reconcile_secs)),
        route_search,
        ef_search: hnsw.ef_search,
        nprobe,
        address,
        username,
        password,
        timeout: Duration::from_secs_f64(timeout.clamp(0.1, 600.0)),
        collection,
        index,
        dim,
        metric: hnsw.metric,
    })
}

fn transport(var: &impl Fn(&str) -> Option<String>, env: Environment, problems: &mut Vec<String>) -> TransportConfig {
    let tls = match (var("SOKO_TLS_CERT_FILE"), var("SOKO_TLS_KEY_FILE")) {
        (Some(cert), Some(key)) => {
            let reload_secs: u64 = parse_or(problems, "SOKO_TLS_RELOAD_SECS", var("SOKO_TLS_RELOAD_SECS"), 30);
            if !(1..=86_400).contains(&reload_secs) {
                problems.push(format!("SOKO_TLS_RELOAD_SECS: {reload_secs} is outside 1..=86400"));
            }
            Some(crate::tls::TlsSettings {
                cert_file: cert.into(),
                key_file: key.into(),
                client_ca_file: var("SOKO_TLS_CLIENT_CA_FILE").map(PathBuf::from),
                reload_interval: Duration::from_secs(reload_secs.max(1)),
            })
        }
        (None, None) => {
            if var("SOKO_TLS_CLIENT_CA_FILE").is_some() {
                problems.push(
                    "SOKO_TLS_CLIENT_CA_FILE: client certificates need SOKO_TLS_CERT_FILE and SOKO_TLS_KEY_FILE".into(),
                );
            }
            None
        }
        (Some(_), None) => {
            problems.push("SOKO_TLS_KEY_FILE: required with SOKO_TLS_CERT_FILE".into());
            None
        }
        (None, Some(_)) => {
            problems.push("SOKO_TLS_CERT_FILE: required with SOKO_TLS_KEY_FILE".into());
            None
        }
    };
    let allow_plaintext: bool = parse_or(problems, "SOKO_ALLOW_PLAINTEXT", var("SOKO_ALLOW_PLAINTEXT"), false);
    if env == Environment::Production && tls.is_none() && !allow_plaintext {
        problems.push(
            "SOKO_TLS_CERT_FILE: production needs TLS (SOKO_TLS_CERT_FILE and SOKO_TLS_KEY_FILE), or \
             SOKO_ALLOW_PLAINTEXT=true when a proxy in front terminates TLS"
                .into(),
        );
    }
    let health_addr = var("SOKO_HEALTH_ADDR").and_then(|raw| {
        raw.trim().parse().map_err(|e| problems.push(format!("SOKO_HEALTH_ADDR: `{raw}` is not valid: {e}"))).ok()
    });
    let metrics_token = var("SOKO_METRICS_TOKEN").map(|t| Secret::new(t.into_bytes()));
    if let Some(token) = &metrics_token
        && token.expose().len() < 16
    {
        problems.push("SOKO_METRICS_TOKEN: use at least 16 characters".into());
    }
    TransportConfig {
        tls,
        health_addr,
        reflection: parse_or(problems, "SOKO_REFLECTION", var("SOKO_REFLECTION"), env == Environment::Development),
        metrics_token,
        redis_ca_file: var("SOKO_REDIS_CA_FILE").map(PathBuf::from),
    }
}

/// Parses `raw` when present, falling back to `default`; a parse failure is recorded as a problem.
/// The product cache's bounds (see [`crate::product_cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductCacheSettings {
    pub entries: usize,
    pub ttl: Duration,
}

fn parse_or<T>(problems: &mut Vec<String>, key: &str, raw: Option<String>, default: T) -> T
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    match raw {
        None => default,
        Some(raw) => raw.trim().parse().unwrap_or_else(|e| {
            problems.push(format!("{key}: `{raw}` is not valid: {e}"));
            default
        }),
    }
}

/// Origins are exact `scheme://host[:port]` values; a wildcard would let any site call with the
/// user's browser, so it is refused.
fn parse_origins(raw: &str, problems: &mut Vec<String>) -> Vec<HeaderValue> {
    raw.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|origin| {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.trim_end_matches('/').contains(['*', ' '])
                && origin.splitn(4, '/').nth(3).is_none_or(str::is_empty);
            match (valid, HeaderValue::from_str(origin.trim_end_matches('/'))) {
                (true, Ok(value)) => Some(value),
                _ => {
                    problems.push(format!(
                        "SOKO_CORS_ORIGINS: `{origin}` is not an origin like https://shop.example.com (no wildcards, no path)"
                    ));
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_are_the_embedded_sqlite_setup() {
        let c = config(&[]).unwrap();
        assert_eq!(c.grpc_addr.to_string(), "0.0.0.0:50051");
        assert_eq!(c.ops_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(c.database, DatabaseUrl::Sqlite(PathBuf::from("./soko-data/soko.db")));
        assert_eq!(c.env, Environment::Development);
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.db_checkout_timeout, Duration::from_millis(250));
        assert_eq!(c.embedder, EmbedderConfig::Builtin);
        assert_eq!(c.max_upload_bytes, 10 * 1024 * 1024 + 64 * 1024);
    }

    #[test]
    fn traces_follow_the_standard_otel_variables() {
        assert_eq!(config(&[]).unwrap().traces, None, "off without an endpoint");
        let on =
            config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"), ("OTEL_BSP_SCHEDULE_DELAY", "200")])
                .unwrap()
                .traces
                .unwrap();
        assert_eq!(on.endpoint, "http://collector:4317");
        assert_eq!(on.schedule_delay, Duration::from_millis(200));
        assert_eq!((on.max_queue, on.max_batch), (2048, 512));
        let traces_only = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces:4317"),
        ]);
        assert_eq!(traces_only.unwrap().traces.unwrap().endpoint, "https://traces:4317");
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"), off]).unwrap();
            assert_eq!(c.traces, None, "{off:?}");
        }
        let err = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20"),
        ])
        .unwrap_err()
        .to_string();
        for key in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] {
            assert!(err.contains(key), "{key} in {err}");
        }
    }

    #[test]
    fn a_remote_embedder_needs_a_plain_http_url() {
        let c = config(&[("SOKO_EMBEDDER", "remote"), ("SOKO_EMBEDDER_URL", "http://embedder:50052")]).unwrap();
        assert_eq!(
            c.embedder,
            EmbedderConfig::Remote {
                url: RedactedUrl("http://embedder:50052".into()),
                timeout: Duration::from_millis(3000)
            }
        );
        for (vars, key) in [
            (vec![("SOKO_EMBEDDER", "remote")], "SOKO_EMBEDDER_URL"),
            (vec![("SOKO_EMBEDDER", "remote"), ("SOKO_EMBEDDER_URL", "https://embedder")], "SOKO_EMBEDDER_URL"),
            (vec![("SOKO_EMBEDDER", "remote"), ("SOKO_EMBEDDER_URL", "embedder:50052")], "SOKO_EMBEDDER_URL"),
            (vec![("SOKO_EMBEDDER", "clip")], "SOKO_EMBEDDER"),
            (vec![("SOKO_EMBEDDER_TIMEOUT_MS", "0")], "SOKO_EMBEDDER_TIMEOUT_MS"),
            (vec![("SOKO_MAX_UPLOAD_BYTES", "1")], "SOKO_MAX_UPLOAD_BYTES"),
        ] {
            let err = config(&vars).unwrap_err();
            assert!(err.0.len() == 1 && err.0[0].starts_with(key), "{vars:?}: {err}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = config(&[
            ("SOKO_GRPC_ADDR", "nope"),
            ("SOKO_ENV", "staging"),
            ("DATABASE_URL", "oracle://x"),
            ("SOKO_CORS_ORIGINS", "https://ok.example,*"),
            ("SOKO_LOG_FORMAT", "xml"),
            ("SOKO_DB_POOL_SIZE", "0"),
        ])
        .unwrap_err();
        let keys =
            ["SOKO_GRPC_ADDR", "SOKO_ENV", "DATABASE_URL", "SOKO_CORS_ORIGINS", "SOKO_LOG_FORMAT", "SOKO_DB_POOL_SIZE"];
        assert_eq!(err.0.len(), keys.len(), "{err}");
        for key in keys {
            assert!(err.to_string().contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn quotas_parse_with_optional_burst() {
        let q: Quota = "10/min".parse().unwrap();
        assert_eq!((q.limit, q.period, q.burst), (10, Duration::from_secs(60), 10));
        let q: Quota = "5/sec,burst=2".parse().unwrap();
        assert_eq!((q.limit, q.period, q.burst), (5, Duration::from_secs(1), 2));
        for bad in ["", "10", "0/min", "10/fortnight", "10/min,burst=0", "10/min,x=1"] {
            assert!(bad.parse::<Quota>().is_err(), "{bad}");
        }
        let c = config(&[("SOKO_RATE_LIMIT_AUTH", "3/min"), ("SOKO_RATE_LIMIT_SHADOW", "search")]).unwrap();
        assert_eq!(c.rate_limits.auth.limit, 3);
        assert_eq!(c.rate_limits.global.limit, 100);
        assert_eq!(c.rate_limits.shadow, vec![RateClass::Search]);
    }

    #[test]
    fn database_passwords_are_redacted() {
        let c = config(&[("DATABASE_URL", "postgres://soko:hunter2@db:5432/soko")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://soko:***@db:5432/soko"), "{shown}");
    }

    const STRONG: &str = "k3J9xQ2mV8pL4wR7tY1uE6oI5aS0dF3gH";

    #[test]
    fn production_logs_json_by_default() {
        let c =
            config(&[("SOKO_ENV", "production"), ("JWT_SECRET", STRONG), ("SOKO_ALLOW_PLAINTEXT", "true")]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn production_refuses_a_missing_or_weak_jwt_secret() {
        for bad in [None, Some("short"), Some("changeme-changeme-changeme-changeme"), Some(&"a".repeat(40)[..])] {
            let mut vars = vec![("SOKO_ENV", "production"), ("SOKO_ALLOW_PLAINTEXT", "true")];
            if let Some(secret) = bad {
                vars.push(("JWT_SECRET", secret));
            }
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().contains("JWT_SECRET"), "{bad:?}: {err}");
        }
        let ok =
            config(&[("SOKO_ENV", "production"), ("JWT_SECRET", STRONG), ("SOKO_ALLOW_PLAINTEXT", "true")]).unwrap();
        assert!(!format!("{ok:?}").contains(STRONG), "the secret is redacted");
        let dev = config(&[]).unwrap();
        assert!(dev.auth.jwt_secret_generated && dev.auth.jwt_secret.expose().len() == 32);
    }

    #[test]
    fn production_refuses_plaintext_unless_a_proxy_terminates_tls() {
        let err = config(&[("SOKO_ENV", "production"), ("JWT_SECRET", STRONG)]).unwrap_err();
        assert!(err.to_string().contains("SOKO_ALLOW_PLAINTEXT=true"), "{err}");
        let tls = config(&[
            ("SOKO_ENV", "production"),
            ("JWT_SECRET", STRONG),
            ("SOKO_TLS_CERT_FILE", "/etc/soko/tls.crt"),
            ("SOKO_TLS_KEY_FILE", "/etc/soko/tls.key"),
        ])
        .unwrap();
        assert!(tls.transport.tls.is_some());
        assert!(!tls.transport.reflection, "reflection is off in production unless asked for");
        assert!(config(&[]).unwrap().transport.reflection, "and on in development");
    }

    #[test]
    fn tls_settings_come_in_pairs() {
        for (vars, key) in [
            (vec![("SOKO_TLS_CERT_FILE", "c.pem")], "SOKO_TLS_KEY_FILE"),
            (vec![("SOKO_TLS_KEY_FILE", "k.pem")], "SOKO_TLS_CERT_FILE"),
            (vec![("SOKO_TLS_CLIENT_CA_FILE", "ca.pem")], "SOKO_TLS_CLIENT_CA_FILE"),
            (vec![("SOKO_METRICS_TOKEN", "short")], "SOKO_METRICS_TOKEN"),
        ] {
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().contains(key), "{vars:?}: {err}");
        }
        let token = config(&[("SOKO_METRICS_TOKEN", "a-metrics-scrape-token")]).unwrap();
        assert!(!format!("{token:?}").contains("a-metrics-scrape-token"), "the token is redacted");
    }
}
