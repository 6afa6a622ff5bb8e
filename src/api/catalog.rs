//! CatalogService: converts between the proto contract and the domain, and serves product reads
//! from the product cache when it can (see [`crate::product_cache`]).

use std::{collections::HashSet, sync::Arc};

use prost::Message;
use tonic::{Request, Response, Status};

use super::{
    context,
    read_mask::{check_mask, masked, names_embedding},
    timestamp,
};
use crate::{
    domain::{
        Error, FieldViolation,
        catalog::{Catalog, ListRequest, MAX_BATCH_GET, Version},
        listing::FilterInput,
        listing::ProductSort,
        product::{Category, Product, ProductId, ProductInput, ProductStatus, Seller, StatusInput, Visibility},
    },
    product_cache::ProductCache,
    proto::catalog::{self as pb, catalog_service_server::CatalogService},
};

pub struct CatalogApi {
    catalog: Catalog,
    cache: Arc<ProductCache>,
    /// Wakes the outbox consumers after a write (the search follower, the Milvus sync), so
    /// search, Milvus and other replicas' caches see it without waiting for a poll.
    outbox_written: crate::outbox::OutboxSignal,
}

impl CatalogApi {
    pub fn new(catalog: Catalog, cache: Arc<ProductCache>, outbox_written: crate::outbox::OutboxSignal) -> Self {
        Self { catalog, cache, outbox_written }
    }

    /// After a write committed: this replica's cached copies go, and the follower looks now.
    async fn written(&self, id: ProductId) {
        self.cache.forget(id).await;
        self.outbox_written.written();
    }

    /// Stores what was read from the database, if anyone may read it (see the cache's rules),
    /// and returns the products as they go out: without the embedding.
    async fn cache_public(&self, found: Vec<(Product, Version)>) -> Vec<pb::Product> {
        let mut cacheable = Vec::new();
        let out = found
            .into_iter()
            .map(|(product, version)| {
                let (id, public) = (product.id, product.status.is_public());
                let proto = pb::Product { embedding: Vec::new(), ..product_to_proto(product) };
                if public {
                    cacheable.push((id, version, proto.clone()));
                }
                proto
            })
            .collect();
        self.cache.put_many(cacheable).await;
        out
    }
}

fn status_to_proto(s: ProductStatus) -> pb::ProductStatus {
    match s {
        ProductStatus::Draft => pb::ProductStatus::Draft,
        ProductStatus::Active => pb::ProductStatus::Active,
        ProductStatus::Archived => pb::ProductStatus::Archived,
    }
}

pub fn status_from_proto(raw: i32) -> StatusInput {
    match pb::ProductStatus::try_from(raw) {
        Ok(pb::ProductStatus::Unspecified) => StatusInput::Unspecified,
        Ok(pb::ProductStatus::Draft) => StatusInput::Known(ProductStatus::Draft),
        Ok(pb::ProductStatus::Active) => StatusInput::Known(ProductStatus::Active),
        Ok(pb::ProductStatus::Archived) => StatusInput::Known(ProductStatus::Archived),
        Err(_) => StatusInput::Unknown(raw),
    }
}

/// A filter as the domain takes it, before validation.
pub fn filter_input(f: pb::ProductFilter) -> FilterInput {
    FilterInput {
        category_id: f.category_id,
        seller_id: f.seller_id,
        min_price_minor: f.min_price_minor,
        max_price_minor: f.max_price_minor,
        currency_code: f.currency_code,
        status: Some(status_from_proto(f.status)),
    }
}

pub fn product_to_proto(p: Product) -> pb::Product {
    pb::Product {
        id: p.id.to_string(),
        name: p.name,
        description: p.description,
        price: Some(pb::Money {
            amount_minor: p.price.amount_minor,
            currency_code: p.price.currency.as_str().to_owned(),
        }),
        category_id: p.category_id.to_string(),
        seller_id: p.seller_id.to_string(),
        image_urls: p.image_urls,
        embedding: p.embedding.unwrap_or_default(),
        status: status_to_proto(p.status).into(),
        create_time: timestamp(p.created_at),
        update_time: timestamp(p.updated_at),
    }
}

fn product_input(p: pb::Product) -> ProductInput {
    ProductInput {
        name: p.name,
        description: p.description,
        price: p.price.map(|m| (m.amount_minor, m.currency_code)),
        category_id: p.category_id,
        seller_id: p.seller_id,
        image_urls: p.image_urls,
        embedding: p.embedding,
        status: Some(status_from_proto(p.status)),
    }
}

fn category_to_proto(c: Category) -> pb::Category {
    pb::Category { id: c.id.to_string(), display_name: c.display_name }
}

fn seller_to_proto(s: Seller) -> pb::Seller {
    pb::Seller { id: s.id.to_string(), display_name: s.display_name, create_time: timestamp(s.created_at) }
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| Error::invalid(field, "is required").into())
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_categories(
        &self,
        _: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        let categories = self.catalog.list_categories().await?;
        Ok(Response::new(pb::ListCategoriesResponse {
            categories: categories.into_iter().map(category_to_proto).collect(),
        }))
    }

    async fn create_category(
        &self,
        request: Request<pb::CreateCategoryRequest>,
    ) -> Result<Response<pb::CreateCategoryResponse>, Status> {
        let category = required("category", request.into_inner().category)?;
        let created = self
            .catalog
            .create_category(&category.id, &category.display_name)
            .await
            .map_err(|e| e.within("category"))?;
        Ok(Response::new(pb::CreateCategoryResponse { category: Some(category_to_proto(created)) }))
    }

    async fn create_seller(
        &self,
        request: Request<pb::CreateSellerRequest>,
    ) -> Result<Response<pb::CreateSellerResponse>, Status> {
        let seller = self.catalog.create_seller(&context(&request), &request.into_inner().display_name).await?;
        Ok(Response::new(pb::CreateSellerResponse { seller: Some(seller_to_proto(seller)) }))
    }

    async fn get_seller(
        &self,
        request: Request<pb::GetSellerRequest>,
    ) -> Result<Response<pb::GetSellerResponse>, Status> {
        let seller = self.catalog.get_seller(&request.into_inner().id).await?;
        Ok(Response::new(pb::GetSellerResponse { seller: Some(seller_to_proto(seller)) }))
    }

    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let mask = request.read_mask.as_ref();
        check_mask(mask)?;
        if names_embedding(mask) {
            let (product, _) = self.catalog.get_product(&ctx, &request.id).await?;
            return Ok(Response::new(pb::GetProductResponse {
                product: Some(masked(product_to_proto(product), mask)),
            }));
        }
        if let Ok(id) = request.id.parse::<ProductId>()
            && let Some(hit) = self.cache.get(id).await
        {
            return Ok(Response::new(pb::GetProductResponse { product: Some(masked((*hit).clone(), mask)) }));
        }
        let found = self.catalog.get_product(&ctx, &request.id).await?;
        let product = self.cache_public(vec![found]).await.pop();
        Ok(Response::new(pb::GetProductResponse { product: product.map(|p| masked(p, mask)) }))
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let mask = request.read_mask.as_ref();
        check_mask(mask)?;
        // The domain refuses a bad id list with its violations; only a good one is looked up here.
        let parsed: Option<Vec<ProductId>> = request.ids.iter().map(|raw| raw.parse().ok()).collect();
        let cacheable = !names_embedding(mask) && (1..=MAX_BATCH_GET).contains(&request.ids.len());
        let Some(ids) = parsed.filter(|_| cacheable) else {
            let (products, missing_ids) = self.catalog.batch_get_products(&ctx, &request.ids).await?;
            return Ok(Response::new(pb::BatchGetProductsResponse {
                products: products.into_iter().map(|(p, _)| masked(product_to_proto(p), mask)).collect(),
                missing_ids,
            }));
        };
        let hits = self.cache.get_many(&ids).await;
        let mut seen = HashSet::new();
        let misses: Vec<String> = ids
            .iter()
            .zip(&hits)
            .filter(|(id, hit)| hit.is_none() && seen.insert(**id))
            .map(|(id, _)| id.to_string())
            .collect();
        let mut fetched = if misses.is_empty() {
            Vec::new()
        } else {
            let (found, _) = self.catalog.batch_get_products(&ctx, &misses).await?;
            self.cache_public(found).await
        };
        // In request order, each id once, as the domain answers.
        let mut seen = HashSet::new();
        let mut response = pb::BatchGetProductsResponse::default();
        for (id, hit) in ids.iter().zip(hits) {
            if !seen.insert(*id) {
                continue;
            }
            let text = id.to_string();
            match hit {
                Some(hit) => response.products.push(masked((*hit).clone(), mask)),
                None => match fetched.iter().position(|p| p.id == text) {
                    Some(i) => response.products.push(masked(fetched.swap_remove(i), mask)),
                    None => response.missing_ids.push(text),
                },
            }
        }
        Ok(Response::new(response))
    }

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let ctx = context(&request);
        let mut request = request.into_inner();
        check_mask(request.read_mask.as_ref())?;
        let read_mask = request.read_mask.take();
        // Pages everyone sees alike (anonymous callers') are cached, keyed by the request.
        let page_key = (!names_embedding(read_mask.as_ref())
            && Visibility::of(&ctx.principal) == Visibility::PublicAndOwnedBy(None))
        .then(|| request.encode_to_vec());
        if let Some(page) = page_key.as_deref().and_then(|key| self.cache.page(key)) {
            return Ok(Response::new(pb::ListProductsResponse {
                products: page.products.iter().map(|p| masked(p.clone(), read_mask.as_ref())).collect(),
                next_page_token: page.next_page_token.clone(),
            }));
        }
        let generation = self.cache.page_generation();
        let filter = request.filter.unwrap_or_default();
        let sort = match pb::ProductSort::try_from(request.sort) {
            Ok(pb::ProductSort::Unspecified | pb::ProductSort::Newest) => ProductSort::Newest,
            Ok(pb::ProductSort::PriceAsc) => ProductSort::PriceAsc,
            Ok(pb::ProductSort::PriceDesc) => ProductSort::PriceDesc,
            Err(_) => {
                return Err(Error::invalid("sort", format!("unknown sort {}", request.sort)).into());
            }
        };
        let page = self
            .catalog
            .list_products(
                &ctx,
                &ListRequest {
                    filter: filter_input(filter),
                    sort: Some(sort),
                    page_size: request.page_size,
                    page_token: request.page_token,
                },
            )
            .await?;
        let next_page_token = page.next_page_token.unwrap_or_default();
        let products = page.products.into_iter().map(product_to_proto);
        let Some(key) = page_key else {
            return Ok(Response::new(pb::ListProductsResponse {
                products: products.map(|p| masked(p, read_mask.as_ref())).collect(),
                next_page_token,
            }));
        };
        let full = pb::ListProductsResponse {
            products: products.map(|p| pb::Product { embedding: Vec::new(), ..p }).collect(),
            next_page_token,
        };
        let response = pb::ListProductsResponse {
            products: full.products.iter().map(|p| masked(p.clone(), read_mask.as_ref())).collect(),
            next_page_token: full.next_page_token.clone(),
        };
        self.cache.put_page(key, generation, full);
        Ok(Response::new(response))
    }

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let ctx = context(&request);
        let product = required("product", request.into_inner().product)?;
        let created =
            self.catalog.create_product(&ctx, product_input(product)).await.map_err(|e| e.within("product"))?;
        self.written(created.id).await;
        Ok(Response::new(pb::CreateProductResponse { product: Some(product_to_proto(created)) }))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let product = required("product", request.product)?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let id = product.id.clone();
        let updated =
            self.catalog.update_product(&ctx, &id, &paths, product_input(product)).await.map_err(|e| match e {
                // The mask is a sibling of `product` in the request, so its path stays top-level.
                Error::InvalidArgument(violations) => Error::InvalidArgument(
                    violations
                        .into_iter()
                        .map(|v| match v.field.as_str() {
                            "update_mask" => v,
                            field => FieldViolation { field: format!("product.{field}"), ..v },
                        })
                        .collect(),
                ),
                e => e,
            })?;
        self.written(updated.id).await;
        Ok(Response::new(pb::UpdateProductResponse { product: Some(product_to_proto(updated)) }))
    }

    async fn delete_product(
        &self,
        request: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        let id = self.catalog.delete_product(&context(&request), &request.into_inner().id).await?;
        self.written(id).await;
        Ok(Response::new(pb::DeleteProductResponse {}))
    }
}
