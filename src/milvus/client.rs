//! The Milvus client: the generated MilvusService stub (build.rs, proto-vendor/milvus) with the
//! credentials on every call, and Milvus's two ways of saying no turned into one typed error.
//! Milvus answers most failures in-band, with gRPC OK and a `status` whose `code` (2.3+) or older
//! `error_code` is non-zero; transport trouble arrives as a gRPC status instead.

use std::time::Duration;

use base64::Engine as _;
use tonic::{
    Code,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use super::{MilvusConfig, schema::kv};
use crate::proto::milvus::proto::{common, milvus as pb, milvus::milvus_service_client::MilvusServiceClient};

#[derive(Debug, thiserror::Error)]
pub enum MilvusError {
    /// Milvus could not be reached, or did not answer in time: worth retrying.
    #[error("Milvus is unavailable ({op}): {message}")]
    Unavailable { op: &'static str, message: String },
    /// Milvus answered and refused: `code` is its error code (`status.code`, or the older
    /// `error_code` when a server sets only that).
    #[error("Milvus refused {op}: {reason} (code {code})")]
    Refused { op: &'static str, code: i32, reason: String, retriable: bool },
    /// The collection exists with a shape that disagrees with the configuration.
    #[error("the Milvus collection `{collection}` {what}")]
    Mismatch { collection: String, what: String },
    /// An answer Soko cannot use (a missing field, a wrong type).
    #[error("Milvus answered {op} with something unusable: {what}")]
    Protocol { op: &'static str, what: String },
}

impl MilvusError {
    /// Whether waiting and trying again may help. A mismatch or a refusal of our request's
    /// shape needs an operator, though the sync worker still retries slowly in case one fixes it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Refused { retriable, code, .. } => *retriable || RETRIABLE_ERROR_CODES.contains(code),
            Self::Mismatch { .. } | Self::Protocol { .. } => false,
        }
    }

    pub(super) fn from_status(op: &'static str, status: tonic::Status) -> Self {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::ResourceExhausted => {
                Self::Unavailable { op, message: status.message().to_owned() }
            }
            code => Self::Refused { op, code: code as i32, reason: status.message().to_owned(), retriable: false },
        }
    }
}

/// Old-style error codes that mean "not now" rather than "never": the proxy not ready yet,
/// rate limiting, memory quota.
const RETRIABLE_ERROR_CODES: &[i32] = &[
    common::ErrorCode::NotReadyServe as i32,
    common::ErrorCode::RateLimit as i32,
    common::ErrorCode::ForceDeny as i32,
    common::ErrorCode::MemoryQuotaExhausted as i32,
    common::ErrorCode::DiskQuotaExhausted as i32,
];

/// Turns Milvus's in-band status into a result.
pub(super) fn check(op: &'static str, status: Option<common::Status>) -> Result<(), MilvusError> {
    let status = status.unwrap_or_default();
    #[allow(deprecated)]
    let legacy = status.error_code;
    if status.code == 0 && legacy == 0 {
        return Ok(());
    }
    let code = if status.code != 0 { status.code } else { legacy };
    let reason = if status.reason.is_empty() { status.detail } else { status.reason };
    Err(MilvusError::Refused { op, code, reason, retriable: status.retriable })
}

/// Adds Milvus's credentials (`authorization: base64(user:password)`, as its SDKs send them).
#[derive(Clone)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Stub = MilvusServiceClient<InterceptedService<Channel, Credentials>>;

/// A connection to Milvus for one collection. Cheap to clone.
#[derive(Clone)]
pub struct Milvus {
    stub: Stub,
    pub(super) config: MilvusConfig,
    /// Milvus's timestamp of the last write acknowledged to this process. Searches wait for
    /// Milvus to have applied up to it (session consistency, as Milvus's SDKs implement it):
    /// read-your-writes for what this replica synced, without Strong's wait for the next time
    /// tick (~200 ms on every search, measured by benches/milvus.rs).
    last_write: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Milvus {
    /// Connects lazily: a Milvus that is down at start-up fails the calls made while it is down,
    /// never the start.
    pub fn new(config: MilvusConfig) -> Result<Self, MilvusError> {
        let endpoint = Channel::from_shared(config.address.clone())
            .map_err(|e| MilvusError::Protocol { op: "connect", what: format!("MILVUS_ADDRESS: {e}") })?
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .tcp_nodelay(true);
        let endpoint = if config.address.starts_with("https://") {
            // The system's CA bundle (tonic is built without a roots feature, to keep one TLS
            // stack and no second copy of the roots).
            let bundle = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            let pem = std::fs::read(&bundle).map_err(|e| MilvusError::Protocol {
                op: "connect",
                what: format!("reading the CA bundle {bundle} for an https:// MILVUS_ADDRESS: {e}"),
            })?;
            endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )
                .map_err(|e| MilvusError::Protocol { op: "connect", what: format!("TLS: {e}") })?
        } else {
            endpoint
        };
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                let mut raw = user.as_bytes().to_vec();
                raw.push(b':');
                raw.extend_from_slice(password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                let mut value: MetadataValue<Ascii> = encoded
                    .parse()
                    .map_err(|_| MilvusError::Protocol { op: "connect", what: "credentials are not ASCII".into() })?;
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };
        let stub = MilvusServiceClient::with_interceptor(endpoint.connect_lazy(), Credentials(credentials))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Ok(Self { stub, config, last_write: Default::default() })
    }

    pub fn config(&self) -> &MilvusConfig {
        &self.config
    }

    pub fn collection(&self) -> &str {
        &self.config.collection
    }

    pub(super) fn stub(&self) -> Stub {
        self.stub.clone()
    }

    fn wrote(&self, timestamp: u64) {
        self.last_write.fetch_max(timestamp, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether Milvus says it is healthy.
    pub async fn check_health(&self) -> Result<(), MilvusError> {
        const OP: &str = "CheckHealth";
        let answer = self
            .stub()
            .check_health(pb::CheckHealthRequest {})
            .await
            .map_err(|s| MilvusError::from_status(OP, s))?
            .into_inner();
        check(OP, answer.status)?;
        if answer.is_healthy {
            Ok(())
        } else {
            Err(MilvusError::Unavailable { op: OP, message: answer.reasons.join("; ") })
        }
    }

    /// Inserts or replaces `rows` by primary key.
    pub async fn upsert(&self, rows: &[super::Row]) -> Result<(), MilvusError> {
        const OP: &str = "Upsert";
        if rows.is_empty() {
            return Ok(());
        }
        let request = pb::UpsertRequest {
            collection_name: self.config.collection.clone(),
            fields_data: super::schema::columns(rows, self.config.dim),
            num_rows: rows.len() as u32,
            ..Default::default()
        };
        let answer = self.stub().upsert(request).await.map_err(|s| MilvusError::from_status(OP, s))?.into_inner();
        check(OP, answer.status)?;
        self.wrote(answer.timestamp);
        Ok(())
    }

    /// Deletes the entities with these primary keys (absent ones are no error: deletes replay).
    pub async fn delete(&self, ids: &[String]) -> Result<(), MilvusError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.delete_where(&super::schema::ids_expr(ids)).await
    }

    /// Deletes the entities matching a boolean expression.
    pub async fn delete_where(&self, expr: &str) -> Result<(), MilvusError> {
        const OP: &str = "Delete";
        let request = pb::DeleteRequest {
            collection_name: self.config.collection.clone(),
            expr: expr.to_owned(),
            ..Default::default()
        };
        let answer = self.stub().delete(request).await.map_err(|s| MilvusError::from_status(OP, s))?.into_inner();
        check(OP, answer.status)?;
        self.wrote(answer.timestamp);
        Ok(())
    }

    /// Entities matching a boolean expression, with the given fields, at strong consistency (so a
    /// write acknowledged before the call is seen).
    pub async fn query(&self, expr: &str, output_fields: &[&str]) -> Result<Vec<super::Row>, MilvusError> {
        const OP: &str = "Query";
        let request = pb::QueryRequest {
            collection_name: self.config.collection.clone(),
            expr: expr.to_owned(),
            output_fields: output_fields.iter().map(|f| (*f).to_owned()).collect(),
            consistency_level: common::ConsistencyLevel::Strong as i32,
            ..Default::default()
        };
        let answer = self.stub().query(request).await.map_err(|s| MilvusError::from_status(OP, s))?.into_inner();
        check(OP, answer.status)?;
        super::schema::rows(&answer.fields_data).map_err(|what| MilvusError::Protocol { op: OP, what })
    }

    /// The `k` entities nearest to `vector` among those matching `expr`, best first, as (id,
    /// score): the metric's similarity for COSINE, the distance for L2. Every write this process
    /// had acknowledged by Milvus is seen; writes synced by another replica may show a moment
    /// later (deletes never leak: callers re-check ids against the database).
    pub async fn search(&self, vector: &[f32], k: usize, expr: &str) -> Result<Vec<(String, f32)>, MilvusError> {
        const OP: &str = "Search";
        use crate::proto::milvus::proto::{
            common::{DslType, PlaceholderGroup, PlaceholderType, PlaceholderValue},
            schema::i_ds::IdField,
        };
        use prost::Message as _;
        let placeholder = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".into(),
                r#type: PlaceholderType::FloatVector as i32,
                values: vec![vector.iter().flat_map(|x| x.to_le_bytes()).collect()],
            }],
        };
        let params = match self.config.index {
            super::IndexKind::Hnsw { .. } => format!("{{\"ef\": {}}}", self.config.ef_search.max(k)),
            super::IndexKind::IvfFlat { .. } => format!("{{\"nprobe\": {}}}", self.config.nprobe),
        };
        let request = pb::SearchRequest {
            collection_name: self.config.collection.clone(),
            dsl: expr.to_owned(),
            dsl_type: DslType::BoolExprV1 as i32,
            placeholder_group: placeholder.encode_to_vec(),
            search_params: vec![
                kv("anns_field", super::schema::EMBEDDING),
                kv("topk", k),
                kv("metric_type", super::metric_name(self.config.metric)),
                kv("params", params),
                kv("round_decimal", -1),
            ],
            nq: 1,
            consistency_level: common::ConsistencyLevel::Customized as i32,
            // 1, not 0, when this process wrote nothing yet: 0 would mean "unset".
            guarantee_timestamp: self.last_write.load(std::sync::atomic::Ordering::Acquire).max(1),
            ..Default::default()
        };
        let answer = self.stub().search(request).await.map_err(|s| MilvusError::from_status(OP, s))?.into_inner();
        check(OP, answer.status)?;
        let Some(results) = answer.results else { return Ok(Vec::new()) };
        let ids = match results.ids.and_then(|ids| ids.id_field) {
            Some(IdField::StrId(ids)) => ids.data,
            None => Vec::new(),
            Some(IdField::IntId(_)) => {
                return Err(MilvusError::Protocol {
                    op: OP,
                    what: "integer ids in a collection keyed by strings".into(),
                });
            }
        };
        if ids.len() != results.scores.len() {
            return Err(MilvusError::Protocol { op: OP, what: "ids and scores of different lengths".into() });
        }
        Ok(ids.into_iter().zip(results.scores).collect())
    }

    /// How many entities the collection holds (strongly consistent).
    pub async fn count(&self) -> Result<i64, MilvusError> {
        const OP: &str = "Query";
        use crate::proto::milvus::proto::schema::{ScalarField, field_data, scalar_field};
        let request = pb::QueryRequest {
            collection_name: self.config.collection.clone(),
            output_fields: vec!["count(*)".into()],
            consistency_level: common::ConsistencyLevel::Strong as i32,
            ..Default::default()
        };
        let answer = self.stub().query(request).await.map_err(|s| MilvusError::from_status(OP, s))?.into_inner();
        check(OP, answer.status)?;
        answer
            .fields_data
            .iter()
            .find(|f| f.field_name == "count(*)")
            .and_then(|f| match &f.field {
                Some(field_data::Field::Scalars(ScalarField { data: Some(scalar_field::Data::LongData(l)) })) => {
                    l.data.first().copied()
                }
                _ => None,
            })
            .ok_or(MilvusError::Protocol { op: OP, what: "no count(*) in the answer".into() })
    }

    /// Waits, up to `within`, for `probe` to say yes; Milvus does some things (loading) in the
    /// background after acknowledging them.
    pub(super) async fn wait_until<F, Fut>(&self, within: Duration, mut probe: F) -> Result<bool, MilvusError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, MilvusError>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if probe().await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_band_refusal_is_an_error_whichever_code_field_it_uses() {
        assert!(check("Upsert", None).is_ok(), "no status is success");
        let new_style = common::Status { code: 1100, reason: "bad expr".into(), ..Default::default() };
        assert!(matches!(check("Delete", Some(new_style)), Err(MilvusError::Refused { code: 1100, .. })));
        #[allow(deprecated)]
        let old_style = common::Status { error_code: common::ErrorCode::RateLimit as i32, ..Default::default() };
        let err = check("Upsert", Some(old_style)).unwrap_err();
        assert!(err.is_transient(), "{err}");
    }

    #[test]
    fn transport_failures_are_transient_and_refusals_are_not() {
        assert!(MilvusError::from_status("Upsert", tonic::Status::unavailable("down")).is_transient());
        assert!(!MilvusError::from_status("Upsert", tonic::Status::unauthenticated("who")).is_transient());
    }
}
