//! Making sure the collection exists, has the configured shape, is indexed and is loaded.

use prost::Message;

use super::{IndexKind, Milvus, MilvusError, check, schema, schema::kv};
use crate::{
    proto::milvus::proto::{
        common::{ConsistencyLevel, LoadState},
        milvus as pb,
    },
    vector::distance::Metric,
};

/// Milvus's name for a metric.
pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "COSINE",
        Metric::L2 => "L2",
    }
}

impl Milvus {
    /// Creates the collection if it is missing, with its index, and loads it. An existing
    /// collection whose dimension or metric disagrees with the configuration is a
    /// [`MilvusError::Mismatch`] naming both values.
    pub async fn ensure_collection(&self) -> Result<(), MilvusError> {
        let name = self.config.collection.clone();
        let exists = {
            const OP: &str = "HasCollection";
            let answer = self
                .stub()
                .has_collection(pb::HasCollectionRequest { collection_name: name.clone(), ..Default::default() })
                .await
                .map_err(|s| MilvusError::from_status(OP, s))?
                .into_inner();
            check(OP, answer.status)?;
            answer.value
        };
        if exists {
            self.check_dimension().await?;
        } else {
            const OP: &str = "CreateCollection";
            let request = pb::CreateCollectionRequest {
                collection_name: name.clone(),
                schema: schema::collection(&name, self.config.dim).encode_to_vec(),
                shards_num: 1,
                // Searches that must see the writes acknowledged before them ask for Strong
                // themselves; this is the default for the rest.
                consistency_level: ConsistencyLevel::Bounded as i32,
                ..Default::default()
            };
            let status = self.stub().create_collection(request).await.map_err(|s| MilvusError::from_status(OP, s))?;
            check(OP, Some(status.into_inner()))?;
            tracing::info!(collection = %name, dim = self.config.dim, "Milvus collection created");
        }
        match self.index_metric().await? {
            Some(metric) if metric.eq_ignore_ascii_case(metric_name(self.config.metric)) => {}
            Some(metric) => {
                return Err(MilvusError::Mismatch {
                    collection: name,
                    what: format!(
                        "is indexed with metric {metric}, but SOKO_VECTOR_METRIC is {}",
                        metric_name(self.config.metric)
                    ),
                });
            }
            None => self.create_index().await?,
        }
        self.load().await
    }

    async fn check_dimension(&self) -> Result<(), MilvusError> {
        const OP: &str = "DescribeCollection";
        let answer = self
            .stub()
            .describe_collection(pb::DescribeCollectionRequest {
                collection_name: self.config.collection.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| MilvusError::from_status(OP, s))?
            .into_inner();
        check(OP, answer.status)?;
        let found = answer.schema.as_ref().and_then(schema::vector_dim);
        match found {
            Some(dim) if dim == self.config.dim => Ok(()),
            Some(dim) => Err(MilvusError::Mismatch {
                collection: self.config.collection.clone(),
                what: format!("has vectors of dimension {dim}, but SOKO_EMBEDDING_DIM is {}", self.config.dim),
            }),
            None => Err(MilvusError::Mismatch {
                collection: self.config.collection.clone(),
                what: "has no float vector field".into(),
            }),
        }
    }

    /// The metric of the index on the vector field, or `None` when it has no index.
    async fn index_metric(&self) -> Result<Option<String>, MilvusError> {
        const OP: &str = "DescribeIndex";
        let answer = self
            .stub()
            .describe_index(pb::DescribeIndexRequest {
                collection_name: self.config.collection.clone(),
                field_name: schema::EMBEDDING.into(),
                ..Default::default()
            })
            .await
            .map_err(|s| MilvusError::from_status(OP, s))?
            .into_inner();
        match check(OP, answer.status) {
            Ok(()) => {}
            // "index not found": 700 in 2.3's codes, IndexNotExist in the older ones.
            Err(MilvusError::Refused { code, .. })
                if code == 700 || code == crate::proto::milvus::proto::common::ErrorCode::IndexNotExist as i32 =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        Ok(answer
            .index_descriptions
            .iter()
            .find(|d| d.field_name == schema::EMBEDDING)
            .and_then(|d| d.params.iter().find(|p| p.key == "metric_type"))
            .map(|p| p.value.clone()))
    }

    async fn create_index(&self) -> Result<(), MilvusError> {
        const OP: &str = "CreateIndex";
        let (index_type, params) = match self.config.index {
            IndexKind::Hnsw { m, ef_construction } => {
                ("HNSW", format!("{{\"M\": {m}, \"efConstruction\": {ef_construction}}}"))
            }
            IndexKind::IvfFlat { nlist } => ("IVF_FLAT", format!("{{\"nlist\": {nlist}}}")),
        };
        let request = pb::CreateIndexRequest {
            collection_name: self.config.collection.clone(),
            field_name: schema::EMBEDDING.into(),
            index_name: "embedding_index".into(),
            extra_params: vec![
                kv("index_type", index_type),
                kv("metric_type", metric_name(self.config.metric)),
                kv("params", params),
            ],
            ..Default::default()
        };
        let status = self.stub().create_index(request).await.map_err(|s| MilvusError::from_status(OP, s))?;
        check(OP, Some(status.into_inner()))?;
        tracing::info!(collection = %self.config.collection, index_type, "Milvus index created");
        Ok(())
    }

    /// Loads the collection into Milvus's query nodes (searches and queries need it) and waits
    /// for the load to finish.
    async fn load(&self) -> Result<(), MilvusError> {
        const OP: &str = "LoadCollection";
        let status = self
            .stub()
            .load_collection(pb::LoadCollectionRequest {
                collection_name: self.config.collection.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| MilvusError::from_status(OP, s))?;
        check(OP, Some(status.into_inner()))?;
        let loaded = self
            .wait_until(self.config.timeout * 6, || async {
                const OP: &str = "GetLoadState";
                let answer = self
                    .stub()
                    .get_load_state(pb::GetLoadStateRequest {
                        collection_name: self.config.collection.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| MilvusError::from_status(OP, s))?
                    .into_inner();
                check(OP, answer.status)?;
                Ok(answer.state == LoadState::Loaded as i32)
            })
            .await?;
        if loaded {
            Ok(())
        } else {
            Err(MilvusError::Unavailable { op: OP, message: "the collection did not finish loading in time".into() })
        }
    }

    /// Drops the collection (tests, and an operator starting over).
    pub async fn drop_collection(&self) -> Result<(), MilvusError> {
        const OP: &str = "DropCollection";
        let status = self
            .stub()
            .drop_collection(pb::DropCollectionRequest {
                collection_name: self.config.collection.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| MilvusError::from_status(OP, s))?;
        check(OP, Some(status.into_inner()))
    }
}
