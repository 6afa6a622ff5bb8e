//! Rate limits per method class and caller, from the policy table. Every call counts against the
//! caller's global quota (an API key's own quota for services) and, for classed methods, against
//! the class quota too. Callers are keyed by user, API key, or — anonymous — client IP.
//! Answers follow the IETF RateLimit fields: allowed calls carry their remaining budget, refused
//! ones RESOURCE_EXHAUSTED with `RetryInfo`, `QuotaFailure` and `retry-after`.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::gate::{Admit, Gate, Refusal};
use crate::{
    configuration::RateLimitConfig,
    domain::auth::{Principal, RequestContext},
    policy::{self, RateClass},
    ratelimit::{Bucket, Decision, Rate, RateLimiter},
};

#[derive(Clone)]
pub struct RateLimit {
    pub limiter: Arc<RateLimiter>,
    pub config: Arc<RateLimitConfig>,
}

fn class_name(class: RateClass) -> &'static str {
    match class {
        RateClass::Default => "global",
        RateClass::Auth => "auth",
        RateClass::Search => "search",
        RateClass::Upload => "upload",
        RateClass::Transaction => "transaction",
        RateClass::Admin => "admin",
    }
}

/// Whole seconds, rounded up: waiting that long is always enough.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn headers(decision: &Decision) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("ratelimit-limit", decision.limit.to_string());
    put("ratelimit-remaining", decision.remaining.to_string());
    put("ratelimit-reset", ceil_secs(decision.reset).to_string());
    put("ratelimit-policy", format!("{};w={}", decision.limit, decision.period.as_secs()));
    h
}

impl RateLimit {
    fn buckets(&self, class: RateClass, principal: &Principal, client_ip: &str) -> Vec<Bucket> {
        let subject = match principal {
            Principal::User { user_id, .. } => format!("user:{user_id}"),
            Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
            Principal::Anonymous | Principal::System => format!("ip:{client_ip}"),
        };
        let global = match principal {
            Principal::ApiKey { .. } => self.config.api_key,
            _ => self.config.global,
        };
        // `{subject}` is a Redis Cluster hash tag: one caller's buckets live on one shard.
        let prefix = &self.config.key_prefix;
        let mut buckets = vec![Bucket { key: format!("{prefix}:rl:{{{subject}}}:global"), rate: Rate::from(global) }];
        if class != RateClass::Default {
            buckets.push(Bucket {
                key: format!("{prefix}:rl:{{{subject}}}:{}", class_name(class)),
                rate: Rate::from(self.config.quota(class)),
            });
        }
        buckets
    }
}

impl Gate for RateLimit {
    async fn check<B: Send>(&self, request: &mut http::Request<B>) -> Result<Admit, Refusal> {
        let path = request.uri().path();
        if !self.config.enabled || policy::is_exempt(path) {
            return Ok(Admit::default());
        }
        let Some(ctx) = request.extensions().get::<RequestContext>() else {
            return Ok(Admit::default());
        };
        let class = policy::policy(path).map_or(RateClass::Default, |p| p.class);
        let buckets = self.buckets(class, &ctx.principal, &ctx.client_ip);
        let decision = self.limiter.check(&buckets).await;
        let shadow = self.config.shadow.contains(&class);
        let outcome = match (decision.allowed, shadow) {
            (true, _) => "allowed",
            (false, true) => "shadow_rejected",
            (false, false) => "rejected",
        };
        metrics::counter!("soko_ratelimit_decisions_total", "class" => class_name(class), "outcome" => outcome, "backend" => decision.backend.as_str())
            .increment(1);
        let mut headers = headers(&decision);
        if decision.allowed {
            return Ok(Admit { headers, guard: None });
        }
        if shadow {
            tracing::info!(class = class_name(class), principal = %ctx.principal.audit_name(), "rate limit would reject (shadow mode)");
            return Ok(Admit::default());
        }
        let retry_after = Duration::from_secs(ceil_secs(decision.retry_after).max(1));
        if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().to_string()) {
            headers.insert("retry-after", v);
        }
        let mut details = ErrorDetails::with_retry_info(Some(retry_after));
        details.add_quota_failure_violation(
            ctx.principal.audit_name(),
            format!("{} calls per {} s for the {} class", decision.limit, decision.period.as_secs(), class_name(class)),
        );
        let status = Status::with_error_details(
            Code::ResourceExhausted,
            format!("rate limit exceeded; retry in {} s", retry_after.as_secs()),
            details,
        );
        Err(Refusal { status, headers })
    }
}
