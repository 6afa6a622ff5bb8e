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
    ratelimit::{Backend, Bucket, Decision, Rate, RateLimiter},
};

#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<RateLimiter>,
    config: Arc<RateLimitConfig>,
    counters: Arc<DecisionCounters>,
}

const CLASSES: [RateClass; 6] = [
    RateClass::Default,
    RateClass::Auth,
    RateClass::Search,
    RateClass::Upload,
    RateClass::Transaction,
    RateClass::Admin,
];
const OUTCOMES: [&str; 3] = ["allowed", "shadow_rejected", "rejected"];
const BACKENDS: [Backend; 2] = [Backend::Local, Backend::Redis];

/// `soko_ratelimit_decisions_total` by class, outcome and backend, registered once: labelled
/// lookups on every call would allocate on the hot path.
struct DecisionCounters(Vec<metrics::Counter>);

impl DecisionCounters {
    fn new() -> Self {
        let mut counters = Vec::new();
        for class in CLASSES {
            for outcome in OUTCOMES {
                for backend in BACKENDS {
                    counters.push(metrics::counter!(
                        "soko_ratelimit_decisions_total",
                        "class" => class_name(class),
                        "outcome" => outcome,
                        "backend" => backend.as_str()
                    ));
                }
            }
        }
        Self(counters)
    }

    fn get(&self, class: RateClass, outcome: usize, backend: Backend) -> &metrics::Counter {
        let c = CLASSES.iter().position(|x| *x == class).unwrap_or(0);
        let b = BACKENDS.iter().position(|x| *x == backend).unwrap_or(0);
        &self.0[(c * OUTCOMES.len() + outcome) * BACKENDS.len() + b]
    }
}

impl RateLimit {
    pub fn new(limiter: Arc<RateLimiter>, config: RateLimitConfig) -> Self {
        Self { limiter, config: Arc::new(config), counters: Arc::new(DecisionCounters::new()) }
    }
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

/// Allowed calls carry only the budget a client paces itself by: the limit (constant, so HTTP/2
/// header compression sends it once per connection) and what remains. Every extra changing
/// header costs encoding on both ends of every call (see BENCHMARKS.md).
fn budget_headers(decision: &Decision) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(5);
    h.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    let mut remaining = HeaderValue::from(decision.remaining);
    // A value that changes on every response would otherwise enter HPACK's dynamic table each
    // time and evict the stable headers (content-type, grpc-status…) that are cheap while indexed.
    // "Never indexed" keeps the table for them.
    remaining.set_sensitive(true);
    h.insert("ratelimit-remaining", remaining);
    h
}

/// Refusals say everything: when the budget resets and the policy it came from.
fn refusal_headers(decision: &Decision, retry_after: Duration) -> HeaderMap {
    let mut h = budget_headers(decision);
    h.insert("ratelimit-reset", HeaderValue::from(ceil_secs(decision.reset)));
    h.insert("retry-after", HeaderValue::from(retry_after.as_secs()));
    if let Ok(policy) = HeaderValue::from_str(&format!("{};w={}", decision.limit, decision.period.as_secs())) {
        h.insert("ratelimit-policy", policy);
    }
    h
}

impl RateLimit {
    fn buckets(&self, class: RateClass, principal: &Principal, client_ip: &str) -> Vec<Bucket> {
        use std::fmt::Write;
        // `{subject}` is a Redis Cluster hash tag: one caller's buckets live on one shard.
        let mut base = String::with_capacity(self.config.key_prefix.len() + 64);
        let _ = match principal {
            Principal::User { user_id, .. } | Principal::Certificate { user_id, .. } => {
                write!(base, "{}:rl:{{user:{user_id}}}:", self.config.key_prefix)
            }
            Principal::ApiKey { key_id, .. } => write!(base, "{}:rl:{{key:{key_id}}}:", self.config.key_prefix),
            Principal::Anonymous | Principal::System => {
                write!(base, "{}:rl:{{ip:{client_ip}}}:", self.config.key_prefix)
            }
        };
        let global = match principal {
            // Services, whether they present a key or a certificate, call more than people do.
            Principal::ApiKey { .. } | Principal::Certificate { .. } => self.config.api_key,
            _ => self.config.global,
        };
        let mut buckets = Vec::with_capacity(2);
        if class != RateClass::Default {
            let key = format!("{base}{}", class_name(class));
            buckets.push(Bucket { key, rate: Rate::from(self.config.quota(class)) });
        }
        base.push_str("global");
        buckets.push(Bucket { key: base, rate: Rate::from(global) });
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
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 2,
        };
        self.counters.get(class, outcome, decision.backend).increment(1);
        if decision.allowed {
            return Ok(Admit { headers: budget_headers(&decision), guard: None });
        }
        if shadow {
            tracing::info!(class = class_name(class), principal = %ctx.principal.audit_name(), "rate limit would reject (shadow mode)");
            return Ok(Admit::default());
        }
        let retry_after = Duration::from_secs(ceil_secs(decision.retry_after).max(1));
        let headers = refusal_headers(&decision, retry_after);
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
