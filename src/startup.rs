//! Where the server is put together and run: storage, services, layers, listeners, shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use http::{HeaderName, HeaderValue, Method, header};
use tokio::net::TcpListener;
use tonic::{
    codec::CompressionEncoding,
    transport::{Server, server::TcpIncoming},
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

use crate::proto::soko::{
    admin::v1::admin_service_server::AdminServiceServer, auth::v1::auth_service_server::AuthServiceServer,
    search::v1::search_service_server::SearchServiceServer,
};
use crate::{
    api::{
        self,
        admin::AdminApi,
        auth::AuthApi,
        catalog::CatalogApi,
        health::{HealthApi, HealthState},
        search::SearchApi,
    },
    configuration::Config,
    domain::{accounts::Accounts, api_keys::ApiKeys, audit::Audit, catalog::Catalog, switches::Switches},
    middleware::{
        auth::{Authorize, Identify},
        deadline::DeadlineLayer,
        gate::GateLayer,
        load_shed::LoadShed,
        rate_limit::RateLimit,
        request_log::RequestLogLayer,
    },
    ops,
    product_cache::ProductCache,
    proto::{
        self,
        catalog::catalog_service_server::CatalogServiceServer,
        grpc::health::v1::{health_check_response::ServingStatus, health_server::HealthServer},
    },
    ratelimit::RateLimiter,
    redis_link::RedisLink,
    search::{
        SearchEngine,
        cache::{SearchCache, Shared},
    },
    security::{jwt::TokenKeys, password::PasswordHasher},
    store::{Db, PoolSettings},
    tls::Tls,
};

/// Connections the outbox follower keeps for itself: one reads the outbox, one the products.
const FOLLOWER_POOL_SIZE: u32 = 2;
/// A follower waits longer than a call for a connection: nobody is waiting on it.
const FOLLOWER_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a run ended other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("in-flight calls did not finish within the {0:?} drain deadline")]
    DrainTimeout(Duration),
    #[error("gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Account services built from the configuration: shared by the server and the CLI.
pub fn accounts(config: &Config, db: &Db) -> Accounts {
    let auth = &config.auth;
    let hasher = PasswordHasher::new(auth.password_hash_concurrency, auth.password_hash_max_wait);
    let mut tokens = TokenKeys::new(
        auth.jwt_secret.expose(),
        &auth.jwt_key_id,
        &auth.jwt_issuer,
        &auth.jwt_audience,
        auth.access_token_ttl,
    );
    if let Some((secret, key_id)) = &auth.jwt_previous {
        tokens = tokens.with_previous(secret.expose(), key_id);
    }
    Accounts::new(db.clone(), hasher, tokens, auth.refresh_token_ttl, Audit::new(db.clone()))
}

/// A server whose storage is ready and whose ports are bound, not yet serving.
pub struct Application {
    config: Config,
    db: Db,
    grpc_listener: TcpListener,
    ops_listener: TcpListener,
    /// The plaintext health-only port (`SOKO_HEALTH_ADDR`), for probes that cannot speak TLS.
    health_listener: Option<TcpListener>,
    /// The storefront page's port (`SOKO_WEB_ADDR`).
    web_listener: Option<TcpListener>,
    tls: Option<Tls>,
    /// Milvus, when `MILVUS_ADDRESS` is set: its collection checked at start-up.
    milvus: Option<crate::milvus::Milvus>,
}

impl Application {
    /// Connects storage, applies migrations when configured, and binds both ports (port 0 picks a
    /// free one, as tests do).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Db::connect(
            &config.database,
            &PoolSettings { max_size: config.db_pool_size, checkout_timeout: config.db_checkout_timeout },
        )?;
        if config.migrate_on_start {
            let applied = db.migrate().await.context("applying database migrations")?;
            tracing::info!(backend = db.backend(), applied, "database migrations applied");
        }
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC port {}", config.grpc_addr))?;
        let ops_listener = TcpListener::bind(config.ops_addr)
            .await
            .with_context(|| format!("binding ops port {}", config.ops_addr))?;
        let health_listener = match config.transport.health_addr {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("binding the health port {addr}"))?)
            }
            None => None,
        };
        let web_listener = match &config.web {
            Some(web) => Some(
                TcpListener::bind(web.addr)
                    .await
                    .with_context(|| format!("binding the storefront port {}", web.addr))?,
            ),
            None => None,
        };
        // Loaded here so that an unusable certificate stops start-up with its path in the message.
        let tls = config.transport.tls.as_ref().map(Tls::start).transpose().context("setting up TLS")?;
        let milvus = match &config.milvus {
            Some(milvus) => Some(connect_milvus(milvus).await?),
            None => None,
        };
        Ok(Self { config, db, grpc_listener, ops_listener, health_listener, web_listener, tls, milvus })
    }

    /// The plaintext health-only port, when `SOKO_HEALTH_ADDR` configured one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("a bound listener has an address")
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_listener.local_addr().expect("a bound listener has an address")
    }

    /// The storefront page's port, when `SOKO_WEB_ADDR` configured one.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown` resolves, then drains: health goes NOT_SERVING at once, the
    /// listener stops accepting, in-flight calls get until the drain deadline to finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        let (grpc_addr, ops_addr) = (self.grpc_addr(), self.ops_addr());
        let web_addr = self.web_addr();
        let Self { config, db, grpc_listener, ops_listener, health_listener, web_listener, tls, milvus } = self;
        let health =
            HealthState::new([api::CATALOG_SERVICE, api::SEARCH_SERVICE, api::AUTH_SERVICE, api::ADMIN_SERVICE]);
        let catalog = Catalog::new(db.clone(), config.embedding_dim);
        // One Redis connection for everything shared across replicas (rate limits, search cache).
        let redis = config
            .rate_limits
            .redis_url
            .as_ref()
            .map(|url| {
                RedisLink::with_ca(&url.0, config.rate_limits.redis_timeout, config.transport.redis_ca_file.as_deref())
                    .map(Arc::new)
            })
            .transpose()
            .context("setting up Redis")?;
        let search_cache = SearchCache::new(
            config.search_cache_ttl,
            redis.clone().map(|link| Shared { link, key_prefix: config.rate_limits.key_prefix.clone() }),
        );
        // The follower is background work: it has connections of its own, so a flood of calls
        // that holds every request connection never starves it (and it never takes theirs).
        let follower_db = Db::connect(
            &config.database,
            &PoolSettings { max_size: FOLLOWER_POOL_SIZE, checkout_timeout: FOLLOWER_CHECKOUT_TIMEOUT },
        )
        .context("setting up the outbox follower's connections")?;
        let search =
            SearchEngine::new(follower_db, config.embedding_dim, config.hnsw, config.snapshots.clone(), search_cache);
        let product_cache = Arc::new(ProductCache::new(
            config.product_cache,
            redis.clone().map(|link| (link, config.rate_limits.key_prefix.clone())),
        ));
        search.listen(product_cache.clone());
        // Milvus follows the outbox on connections of its own, like the search follower.
        let milvus_sync = match milvus {
            Some(milvus) => {
                let sync_db = Db::connect(
                    &config.database,
                    &PoolSettings { max_size: FOLLOWER_POOL_SIZE, checkout_timeout: FOLLOWER_CHECKOUT_TIMEOUT },
                )
                .context("setting up the Milvus sync's connections")?;
                // One breaker for the sync and the searches: both see the same Milvus.
                let breaker = Arc::new(crate::breaker::CircuitBreaker::new("milvus", 3, Duration::from_secs(5)));
                if milvus.config().route_search {
                    search.route_vectors_to(Arc::new(crate::milvus::MilvusVectors::new(
                        milvus.clone(),
                        db.clone(),
                        breaker.clone(),
                    )));
                    tracing::info!(collection = milvus.collection(), "vector search goes to Milvus");
                }
                Some(crate::milvus::MilvusSync::new(sync_db, milvus, breaker))
            }
            None => None,
        };
        let embedder = crate::embed::from_config(&config.embedder, config.embedding_dim, config.image_embed_max_wait)
            .context("setting up the image embedder")?;
        tracing::info!(embedder = embedder.name(), dim = embedder.dim(), "image embedder configured");
        let audit = Audit::new(db.clone());
        let accounts = accounts(&config, &db);
        let api_keys = ApiKeys::new(db.clone());
        if config.auth.jwt_secret_generated {
            tracing::warn!("JWT_SECRET is not set: using a random per-process secret (sessions end on restart)");
        }
        let identify = Identify {
            accounts: accounts.clone(),
            api_keys: api_keys.clone(),
            trusted_proxies: Arc::new(config.limits.trusted_proxies.clone()),
            audit: audit.clone(),
        };
        // Installed before anything registers a metric, or those handles would record nowhere.
        crate::telemetry::metrics();
        let limiter = RateLimiter::new(redis.clone());
        let rate_limit = RateLimit::new(limiter.clone(), config.rate_limits.clone());
        // The switches come up as they were left: a replica restarted in read-only mode stays in it.
        let database_breaker = crate::store::probe::database_breaker();
        let switches = Switches::new(db.clone(), database_breaker.clone());
        if let Err(e) = switches.load().await {
            tracing::warn!(error = %e, "reading the cluster switches failed; starting writable until the next poll");
        }
        let authorize = Authorize { audit: audit.clone(), switches: switches.clone() };

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building reflection v1")?;
        // grpcurl 1.8 and older tools speak only v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("building reflection v1alpha")?;
        let outbox_written = crate::outbox::OutboxSignal::new(
            std::iter::once(search.wake_handle()).chain(milvus_sync.as_ref().map(|sync| sync.wake_handle())),
        );
        let catalog_service = CatalogServiceServer::new(CatalogApi::new(catalog, product_cache, outbox_written))
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);

        let backups = crate::backup::Backups::new(db.clone(), config.backups.clone());
        let (stop_backups, backups_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(backups.clone().schedule(backups_stopped));

        let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        // Browsers must not sniff a response into something executable, and once a client has
        // reached us over TLS it should never fall back to plaintext.
        let hsts = tls.is_some().then(|| HeaderValue::from_static("max-age=31536000; includeSubDomains"));
        let grpc = Server::builder()
            // grpc-web from browsers arrives over HTTP/1.1 as well as HTTP/2.
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(config.limits.max_concurrent_streams))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(header::STRICT_TRANSPORT_SECURITY, hsts))
            .layer(cors_layer(&config))
            // Connect unary calls become gRPC calls here, before every other layer sees them.
            .layer(crate::middleware::connect::ConnectLayer::new(config.max_upload_bytes))
            .layer(tonic_web::GrpcWebLayer::new())
            // With a DSN: each call on a hub of its own (so its breadcrumbs and user stay its
            // own), and a sampled share of calls as performance traces. Without one, neither
            // layer is in the path.
            .layer(tower::util::option_layer(
                config.sentry.is_some().then(sentry::integrations::tower::NewSentryLayer::new_from_top),
            ))
            .layer(tower::util::option_layer(
                config
                    .sentry
                    .is_some()
                    .then(|| sentry::integrations::tower::SentryHttpLayer::new().enable_transaction()),
            ))
            .layer(RequestLogLayer::new(config.log_success_every))
            .layer(crate::middleware::catch_panic::CatchPanicLayer)
            .layer(crate::middleware::client_fault::ClientFaultLayer)
            .layer(DeadlineLayer { default: config.limits.request_timeout })
            .layer(GateLayer::new(LoadShed::new(config.limits.max_concurrent_requests)))
            .layer(GateLayer::new(identify))
            .layer(GateLayer::new(rate_limit))
            .layer(GateLayer::new(authorize))
            .add_service(HealthServer::new(HealthApi::new(health.clone())))
            // Reflection maps the whole API for whoever asks: on for development, opt-in in production.
            .add_optional_service(config.transport.reflection.then_some(reflection_v1))
            .add_optional_service(config.transport.reflection.then_some(reflection_v1alpha))
            .add_service(catalog_service)
            .add_service(AuthServiceServer::new(AuthApi::new(accounts.clone())))
            .add_service(AdminServiceServer::new(AdminApi::new(
                accounts.clone(),
                api_keys,
                audit,
                backups,
                switches.clone(),
                search.clone(),
                milvus_sync.clone(),
            )))
            .add_service(
                // SearchByImage carries a photo of up to 10 MiB: this service alone takes uploads.
                SearchServiceServer::new(SearchApi::new(search.clone(), embedder))
                    .max_decoding_message_size(config.max_upload_bytes)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
            );
        let grpc_stopped = async {
            let _ = grpc_stopped.await;
        };
        let grpc: futures_util::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
            match &tls {
                Some(tls) => Box::pin(grpc.serve_with_incoming_shutdown(
                    crate::tls::incoming(grpc_listener, tls.acceptor.clone()),
                    grpc_stopped,
                )),
                None => Box::pin(grpc.serve_with_incoming_shutdown(incoming(grpc_listener), grpc_stopped)),
            };
        let mut grpc = tokio::spawn(grpc);
        // Health alone, in plaintext: what a kubelet's gRPC probe can reach when the main port
        // wants TLS. It stops with the process; probes see NOT_SERVING as soon as draining starts.
        let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(listener) = health_listener {
            let server = Server::builder()
                .add_service(HealthServer::new(HealthApi::new(health.clone())))
                .serve_with_incoming_shutdown(incoming(listener), async {
                    let _ = health_stopped.await;
                });
            tokio::spawn(server);
        }

        let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
        let ops_router = ops::router(
            health.clone(),
            db.clone(),
            limiter,
            search.clone(),
            database_breaker.clone(),
            milvus_sync.clone(),
        );
        let ops = axum::serve(ops_listener, ops::protect_metrics(ops_router, config.transport.metrics_token.clone()))
            .with_graceful_shutdown(async {
                let _ = ops_stopped.await;
            });
        let ops = tokio::spawn(async move { ops.await });
        // The storefront page: static files, stopped with the ops port.
        let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
        if let (Some(listener), Some(web)) = (web_listener, &config.web) {
            let site = axum::serve(listener, crate::web::router(web, grpc_addr.port())).with_graceful_shutdown(async {
                let _ = web_stopped.await;
            });
            tokio::spawn(async move { site.await });
        }

        for service in [api::CATALOG_SERVICE, api::AUTH_SERVICE, api::ADMIN_SERVICE] {
            health.set(service, ServingStatus::Serving);
        }
        // Revocations reach this replica's session memory; stopped after the drain, or when its
        // sender drops on an early return.
        let (stop_sessions, sessions_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(accounts.sessions().follow(async {
            let _ = sessions_stopped.await;
        }));
        // The database prober: off the request path, it turns automatic read-only mode on and off.
        let (stop_probe, probe_stopped) = tokio::sync::oneshot::channel::<()>();
        let probe_stopped = futures_util::FutureExt::shared(async {
            let _ = probe_stopped.await;
        });
        tokio::spawn(crate::store::probe::run(db.clone(), database_breaker.clone(), probe_stopped.clone()));
        // Redis's prober: the one caller that waits on a failing Redis.
        if let Some(redis) = redis {
            tokio::spawn(redis.probe(probe_stopped));
        }
        // Read-only mode and reindex requests made on other replicas reach this one.
        let (stop_switches, switches_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut reindex_requests = switches.reindex_requests();
        tokio::spawn(switches.follow(async {
            let _ = switches_stopped.await;
        }));
        tokio::spawn({
            let search = search.clone();
            async move {
                while reindex_requests.changed().await.is_ok() {
                    if search.start_reindex().is_none() {
                        tracing::info!("reindex requested elsewhere while one runs here; the running one serves");
                    }
                }
            }
        });
        let (stop_milvus, milvus_stopped) = tokio::sync::oneshot::channel::<()>();
        let milvus_task = milvus_sync.clone().map(|sync| {
            tokio::spawn(sync.run(async {
                let _ = milvus_stopped.await;
            }))
        });
        // One replica an hour deletes the outbox events every consumer has passed.
        let (stop_compaction, compaction_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(retention) = config.outbox_retention {
            tokio::spawn(crate::outbox::run_compaction(db.clone(), retention, async {
                let _ = compaction_stopped.await;
            }));
        }
        // Search serves once its index has caught up with the outbox.
        let (stop_search, search_stopped) = tokio::sync::oneshot::channel::<()>();
        let follower = tokio::spawn(search.clone().follow(async {
            let _ = search_stopped.await;
        }));
        tokio::spawn({
            let (search, health) = (search.clone(), health.clone());
            async move {
                while !search.is_ready() {
                    tokio::time::sleep(crate::search::POLL_INTERVAL).await;
                }
                if health.status("") == Some(ServingStatus::Serving) {
                    health.set(api::SEARCH_SERVICE, ServingStatus::Serving);
                }
            }
        });
        health.set("", ServingStatus::Serving);
        tracing::info!(
            grpc = %grpc_addr,
            ops = %ops_addr,
            web = web_addr.map(tracing::field::display),
            backend = db.backend(),
            env = ?config.env,
            version = crate::build_info::VERSION,
            commit = crate::build_info::GIT_COMMIT,
            "soko is serving"
        );

        tokio::select! {
            () = shutdown => {}
            result = &mut grpc => {
                health.begin_shutdown();
                let _ = stop_ops.send(());
                return match result {
                    Ok(Ok(())) => Err(anyhow::anyhow!("gRPC server stopped unexpectedly").into()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(anyhow::anyhow!("gRPC server task failed: {e}").into()),
                };
            }
        }

        tracing::info!(deadline = ?config.shutdown_timeout, "shutdown: health NOT_SERVING, draining in-flight calls");
        health.begin_shutdown();
        let _ = stop_grpc.send(());
        let _ = stop_search.send(());
        let _ = stop_backups.send(());
        let _ = stop_compaction.send(());
        let drained = tokio::time::timeout(config.shutdown_timeout, grpc).await;
        let _ = stop_sessions.send(());
        let _ = stop_switches.send(());
        let _ = stop_probe.send(());
        // Readiness keeps answering 503 until the gRPC side is done.
        let _ = stop_ops.send(());
        let _ = stop_web.send(());
        let _ = stop_health.send(());
        let _ = tokio::time::timeout(Duration::from_secs(1), ops).await;
        let _ = follower.await;
        let _ = stop_milvus.send(());
        if let Some(task) = milvus_task {
            let _ = task.await;
        }
        drop(db);
        match drained {
            Err(_) => Err(RunError::DrainTimeout(config.shutdown_timeout)),
            Ok(Ok(Ok(()))) => {
                tracing::info!("shutdown complete");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(e)) => Err(anyhow::anyhow!("gRPC server task failed: {e}").into()),
        }
    }
}

/// Accepted gRPC connections, with Nagle's algorithm off. tonic turns it off only for listeners it
/// binds itself; with it on, a response's trailers waited for the client's delayed ACK of its
/// headers, up to 40 ms (a server answering without any work managed 2 200 calls/s, p50 44 ms,
/// under `benches/search_grpc.rs`; 15 000 calls/s with it off).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Browsers may call grpc-web only from the configured origins. tonic-web has no CORS of its own,
/// so this layer sits outermost and also exposes the headers grpc-web clients read.
fn cors_layer(config: &Config) -> CorsLayer {
    const ALLOWED: &[&str] = &[
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "grpc-accept-encoding",
        "grpc-encoding",
        "authorization",
        "x-api-key",
        "x-request-id",
        "connect-protocol-version",
        "connect-timeout-ms",
    ];
    const EXPOSED: &[&str] = &[
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-policy",
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(config.cors_origins.clone()))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>())
        .expose_headers(EXPOSED.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>())
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// Connects to Milvus and makes sure the collection is there with the configured shape. A
/// collection that disagrees with the configuration stops start-up; a Milvus that cannot be
/// reached does not (the sync worker creates the collection when it answers, and until then the
/// outbox holds the backlog).
async fn connect_milvus(config: &crate::milvus::MilvusConfig) -> anyhow::Result<crate::milvus::Milvus> {
    let milvus = crate::milvus::Milvus::new(config.clone()).context("setting up Milvus")?;
    match milvus.ensure_collection().await {
        Ok(()) => tracing::info!(collection = milvus.collection(), "Milvus collection ready"),
        Err(e @ crate::milvus::MilvusError::Mismatch { .. }) => {
            return Err(e).context("checking the Milvus collection");
        }
        Err(e) => tracing::warn!(error = %e, "Milvus is not ready; syncing starts when it answers"),
    }
    Ok(milvus)
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_grpc_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().expect("read TCP_NODELAY"));
    }
}
