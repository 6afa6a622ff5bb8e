//! SearchService: converts between the proto contract and the search engine.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    catalog::{filter_input, product_to_proto},
    read_mask::{check_mask, masked},
};
use crate::{
    domain::Error,
    embed::Embedder,
    proto::soko::search::v1::{self as pb, search_service_server::SearchService},
    search::{ImageRequest, SearchEngine, SearchRequest, SearchSort, VectorRequest},
};

pub struct SearchApi {
    engine: Arc<SearchEngine>,
    embedder: Arc<dyn Embedder>,
}

impl SearchApi {
    pub fn new(engine: Arc<SearchEngine>, embedder: Arc<dyn Embedder>) -> Self {
        Self { engine, embedder }
    }
}

fn results(
    hits: Vec<(crate::domain::product::Product, f32)>,
    mask: Option<&prost_types::FieldMask>,
) -> Vec<pb::SearchResult> {
    hits.into_iter()
        .map(|(product, score)| pb::SearchResult {
            product_id: product.id.to_string(),
            score,
            product: Some(masked(product_to_proto(product), mask)),
        })
        .collect()
}

#[tonic::async_trait]
impl SearchService for SearchApi {
    async fn search_products(
        &self,
        request: Request<pb::SearchProductsRequest>,
    ) -> Result<Response<pb::SearchProductsResponse>, Status> {
        let r = request.into_inner();
        check_mask(r.read_mask.as_ref())?;
        let filter = r.filter.unwrap_or_default();
        let sort = match pb::SearchSort::try_from(r.sort) {
            Ok(pb::SearchSort::Unspecified | pb::SearchSort::Relevance) => SearchSort::Relevance,
            Ok(pb::SearchSort::PriceAsc) => SearchSort::PriceAsc,
            Ok(pb::SearchSort::PriceDesc) => SearchSort::PriceDesc,
            Ok(pb::SearchSort::Newest) => SearchSort::Newest,
            Err(_) => return Err(Error::invalid("sort", format!("unknown sort {}", r.sort)).into()),
        };
        let (hits, next) = self
            .engine
            .search(&SearchRequest {
                query: r.query,
                filter: filter_input(filter),
                sort: Some(sort),
                page_size: r.page_size,
                page_token: r.page_token,
            })
            .await?;
        Ok(Response::new(pb::SearchProductsResponse {
            results: hits
                .into_iter()
                .map(|hit| pb::SearchResult {
                    product_id: hit.product.id.to_string(),
                    score: hit.score,
                    product: Some(masked(product_to_proto(hit.product), r.read_mask.as_ref())),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn search_by_vector(
        &self,
        request: Request<pb::SearchByVectorRequest>,
    ) -> Result<Response<pb::SearchByVectorResponse>, Status> {
        let r = request.into_inner();
        check_mask(r.read_mask.as_ref())?;
        let hits = self
            .engine
            .search_by_vector(&VectorRequest {
                vector: r.vector,
                top_k: r.top_k,
                filter: filter_input(r.filter.unwrap_or_default()),
            })
            .await?;
        Ok(Response::new(pb::SearchByVectorResponse { results: results(hits, r.read_mask.as_ref()) }))
    }

    async fn search_by_image(
        &self,
        request: Request<pb::SearchByImageRequest>,
    ) -> Result<Response<pb::SearchByImageResponse>, Status> {
        let r = request.into_inner();
        check_mask(r.read_mask.as_ref())?;
        let hits = self
            .engine
            .search_by_image(
                self.embedder.as_ref(),
                ImageRequest { image: r.image, top_k: r.top_k, filter: filter_input(r.filter.unwrap_or_default()) },
            )
            .await?;
        Ok(Response::new(pb::SearchByImageResponse { results: results(hits, r.read_mask.as_ref()) }))
    }

    async fn similar_products(
        &self,
        request: Request<pb::SimilarProductsRequest>,
    ) -> Result<Response<pb::SimilarProductsResponse>, Status> {
        let r = request.into_inner();
        check_mask(r.read_mask.as_ref())?;
        let filter = filter_input(r.filter.unwrap_or_default());
        let hits = self.engine.similar_products(&r.product_id, r.top_k, &filter).await?;
        Ok(Response::new(pb::SimilarProductsResponse { results: results(hits, r.read_mask.as_ref()) }))
    }

    async fn hybrid_search(
        &self,
        request: Request<pb::HybridSearchRequest>,
    ) -> Result<Response<pb::HybridSearchResponse>, Status> {
        let r = request.into_inner();
        check_mask(r.read_mask.as_ref())?;
        let hits = self
            .engine
            .hybrid(
                &r.query,
                &VectorRequest { vector: r.vector, top_k: r.top_k, filter: filter_input(r.filter.unwrap_or_default()) },
            )
            .await?;
        Ok(Response::new(pb::HybridSearchResponse { results: results(hits, r.read_mask.as_ref()) }))
    }
}
