//! The ops HTTP port: `/health` (liveness) and `/health/ready` (deep checks) for Kubernetes and
//! load balancers. Kept off the gRPC port so probes never compete with traffic for its limits.

use std::{sync::Arc, time::Instant};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;

use crate::{
    api::health::HealthState, breaker::CircuitBreaker, proto::grpc::health::v1::health_check_response::ServingStatus,
    ratelimit::RateLimiter, search::SearchEngine, store::Db,
};

#[derive(Clone)]
struct Ops {
    health: HealthState,
    db: Db,
    database_breaker: Arc<CircuitBreaker>,
    limiter: Arc<RateLimiter>,
    search: Arc<SearchEngine>,
    milvus: Option<Arc<crate::milvus::MilvusSync>>,
}

pub fn router(
    health: HealthState,
    db: Db,
    limiter: Arc<RateLimiter>,
    search: Arc<SearchEngine>,
    database_breaker: Arc<CircuitBreaker>,
    milvus: Option<Arc<crate::milvus::MilvusSync>>,
) -> Router {
    Router::new()
        .route("/health", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Ops { health, db, database_breaker, limiter, search, milvus })
        .layer(axum::middleware::map_response(security_headers))
}

/// `/metrics` behind `Authorization: Bearer <SOKO_METRICS_TOKEN>` when a token is configured:
/// metric names and labels map the service for whoever can reach the ops port.
pub fn protect_metrics(router: Router, token: Option<crate::configuration::Secret>) -> Router {
    let Some(token) = token else { return router };
    let expected = Arc::new(format!("Bearer {}", String::from_utf8_lossy(token.expose())));
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let expected = expected.clone();
        async move {
            let allowed = request.uri().path() != "/metrics"
                || request.headers().get(http::header::AUTHORIZATION).is_some_and(|given| {
                    crate::security::secrets::constant_time_eq(given.as_bytes(), expected.as_bytes())
                });
            if allowed {
                next.run(request).await
            } else {
                let mut refused = (StatusCode::UNAUTHORIZED, "metrics need a bearer token\n").into_response();
                refused.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                security_headers(refused).await
            }
        }
    }))
}

async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    headers.insert("cache-control", http::HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    response
}

/// Liveness: the process answers. Deliberately checks no dependency, so a database outage doesn't
/// get every replica restarted.
async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: this replica should get traffic — it is serving (not starting, not draining) and
/// its database answers. Each check reports its latency.
async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    let serving = ops.health.status("") == Some(ServingStatus::Serving);
    let start = Instant::now();
    let db = ops.db.ping().await;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let db_ok = db.is_ok();
    // `circuit` is the prober's view: open means automatic read-only mode is in effect.
    let mut database = json!({
        "ok": db_ok,
        "backend": ops.db.backend(),
        "latency_ms": latency_ms,
        "circuit": ops.database_breaker.state().as_str(),
    });
    if let Err(e) = db {
        tracing::warn!(error = %e, "readiness: database check failed");
        database["error"] = json!("unreachable");
    }
    // A failing Redis degrades the limiter to local limits; the replica still serves correctly,
    // so this is reported but does not make it unready.
    let limiter = ops.limiter.health();
    let rate_limiter = json!({
        "ok": !limiter.degraded,
        "backend": if limiter.degraded { "local (redis failing)" } else { limiter.configured.as_str() },
        "degraded": limiter.degraded,
    });
    // Likewise a failing Redis only narrows the search cache to this process.
    let cache = ops.search.cache_health();
    let search_cache = json!({
        "ok": !cache.degraded,
        "backend": match (cache.enabled, cache.shared, cache.degraded) {
            (false, _, _) => "off",
            (true, false, _) => "local",
            (true, true, false) => "redis",
            (true, true, true) => "local (redis failing)",
        },
        "degraded": cache.degraded,
    });
    // A failing or lagging Milvus degrades vector search to the local index and leaves the
    // outbox holding the backlog: reported, never a reason to take the replica out.
    let milvus = match &ops.milvus {
        None => json!({ "ok": true, "backend": "off", "degraded": false }),
        Some(sync) => {
            let s = sync.status();
            json!({
                "ok": !s.degraded(),
                "backend": "milvus",
                "degraded": s.degraded(),
                "circuit": s.circuit,
                "syncing_here": s.syncing_here,
                "lag_events": s.lag_events,
                "lag_seconds": s.lag.as_secs_f64(),
            })
        }
    };
    let ok = serving && db_ok;
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ok { "ready" } else { "not ready" },
        "serving": serving,
        "version": crate::build_info::VERSION,
        "commit": crate::build_info::GIT_COMMIT,
        "checks": {
            "database": database,
            "rate_limiter": rate_limiter,
            "search_cache": search_cache,
            "milvus": milvus,
        },
    });
    (code, Json(body))
}

/// Prometheus text exposition of this process's metrics.
async fn metrics() -> impl IntoResponse {
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::metrics().render())
}
