//! Catalog operations: validate input into domain types, then read or write through the store.

use std::collections::HashSet;

use super::{
    auth::RequestContext,
    error::{Error, Violations},
    listing::{self, Cursor, FilterInput, ListQuery, ProductSort},
    product::{
        self, Category, CategoryId, Money, Product, ProductId, ProductInput, ProductPatch, ProductStatus, Seller,
        SellerId, StatusInput, Timestamp, Visibility,
    },
};
pub use crate::store::catalog::Version;
use crate::store::{Db, StoreError, catalog::WriteError};

pub const MAX_BATCH_GET: usize = 100;

/// The paths an update mask may name.
pub const UPDATABLE_FIELDS: &[&str] =
    &["name", "description", "price", "category_id", "image_urls", "embedding", "status"];

#[derive(Clone)]
pub struct Catalog {
    db: Db,
    embedding_dim: usize,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub products: Vec<Product>,
    pub next_page_token: Option<String>,
}

/// A listing request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub filter: FilterInput,
    pub sort: Option<ProductSort>,
    pub page_size: i32,
    pub page_token: String,
}

fn parse_id<T: std::str::FromStr<Err = String>>(field: &str, raw: &str) -> Result<T, Error> {
    raw.parse().map_err(|why| Error::invalid(field, why))
}

fn write_error(e: WriteError, id: impl FnOnce() -> String, category: impl FnOnce() -> String) -> Error {
    match e {
        WriteError::ProductNotFound => Error::NotFound { resource: "product", id: id() },
        WriteError::CategoryNotFound => {
            Error::invalid("category_id", format!("category `{}` does not exist", category()))
        }
        WriteError::SellerNotFound => Error::invalid("seller_id", "is not a seller you manage"),
        WriteError::Store(e) => e.into(),
    }
}

impl Catalog {
    pub fn new(db: Db, embedding_dim: usize) -> Self {
        Self { db, embedding_dim }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn list_categories(&self) -> Result<Vec<Category>, Error> {
        Ok(self.db.list_categories().await?)
    }

    pub async fn create_category(&self, id: &str, display_name: &str) -> Result<Category, Error> {
        let mut v = Violations::default();
        let id = v.check("id", id.parse::<CategoryId>());
        let display_name = v.check("display_name", product::parse_category_name(display_name));
        v.finish()?;
        let (Some(id), Some(display_name)) = (id, display_name) else { unreachable!("checked above") };
        let category = Category { id, display_name };
        match self.db.insert_category(category.clone()).await {
            Ok(()) => Ok(category),
            Err(StoreError::UniqueViolation(_)) => {
                Err(Error::AlreadyExists { resource: "category", id: category.id.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a seller profile. A seller's profile is theirs to manage (one per user); one an
    /// admin creates is managed by admins.
    pub async fn create_seller(&self, ctx: &RequestContext, display_name: &str) -> Result<Seller, Error> {
        let owner = ctx.principal.write_scope()?;
        let display_name =
            product::parse_seller_name(display_name).map_err(|why| Error::invalid("display_name", why))?;
        let seller = Seller { id: SellerId::generate(), display_name, created_at: Timestamp::now(), owner };
        match self.db.insert_seller(&seller).await {
            Ok(()) => Ok(seller),
            Err(StoreError::UniqueViolation(_)) => Err(Error::AlreadyExists {
                resource: "seller profile of user",
                id: owner.map(|o| o.to_string()).unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_seller(&self, id: &str) -> Result<Seller, Error> {
        let id: SellerId = parse_id("id", id)?;
        self.db.get_seller(id).await?.ok_or_else(|| Error::NotFound { resource: "seller", id: id.to_string() })
    }

    /// A product the caller may see, with the version it was read at; one they may not (another
    /// seller's draft) is NOT_FOUND.
    pub async fn get_product(&self, ctx: &RequestContext, id: &str) -> Result<(Product, Version), Error> {
        let id: ProductId = parse_id("id", id)?;
        self.db
            .get_products(&[id], Visibility::of(&ctx.principal))
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound { resource: "product", id: id.to_string() })
    }

    /// Returns the live products among `ids` that the caller may see, in request order, and the
    /// ids that were not found (or may not be seen: the two are indistinguishable on purpose).
    pub async fn batch_get_products(
        &self,
        ctx: &RequestContext,
        ids: &[String],
    ) -> Result<(Vec<(Product, Version)>, Vec<String>), Error> {
        if ids.is_empty() || ids.len() > MAX_BATCH_GET {
            return Err(Error::invalid("ids", format!("must have 1–{MAX_BATCH_GET} entries (has {})", ids.len())));
        }
        let mut v = Violations::default();
        let mut seen = HashSet::new();
        let wanted: Vec<ProductId> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| v.check(&format!("ids[{i}]"), raw.parse::<ProductId>()))
            .filter(|id| seen.insert(*id))
            .collect();
        v.finish()?;
        let mut found = self.db.get_products(&wanted, Visibility::of(&ctx.principal)).await?;
        let mut products = Vec::with_capacity(found.len());
        let mut missing = Vec::new();
        for id in wanted {
            match found.iter().position(|(p, _)| p.id == id) {
                Some(i) => products.push(found.swap_remove(i)),
                None => missing.push(id.to_string()),
            }
        }
        Ok((products, missing))
    }

    /// One page of the products the caller may see that match the filter. Filtering on a
    /// private status lists only the caller's own products in it (all of them, for admins).
    pub async fn list_products(&self, ctx: &RequestContext, request: &ListRequest) -> Result<Page, Error> {
        let mut v = Violations::default();
        let filter = listing::parse_filter(&mut v, &request.filter);
        let limit = v.check("page_size", listing::page_size(request.page_size));
        v.finish()?;
        let sort = request.sort.unwrap_or(ProductSort::Newest);
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                Some(listing::decode_token(token, &filter, sort).map_err(|why| Error::invalid("page_token", why))?)
            }
        };
        let limit = limit.unwrap_or(listing::DEFAULT_PAGE_SIZE);

        // One extra row tells whether another page exists without a second query.
        let mut products = self
            .db
            .list_products(&ListQuery {
                filter: filter.clone(),
                visibility: Visibility::of(&ctx.principal),
                sort,
                after,
                limit: limit + 1,
            })
            .await?;
        let next_page_token = (products.len() > limit).then(|| {
            products.truncate(limit);
            let last = products.last().expect("limit is at least 1");
            let key = match sort {
                ProductSort::Newest => last.created_at.0,
                ProductSort::PriceAsc | ProductSort::PriceDesc => last.price.amount_minor,
            };
            listing::encode_token(&filter, sort, Cursor { key, id: last.id })
        });
        Ok(Page { products, next_page_token })
    }

    pub async fn create_product(&self, ctx: &RequestContext, input: ProductInput) -> Result<Product, Error> {
        let owner = ctx.principal.write_scope()?;
        let mut v = Violations::default();
        let name = v.check("name", product::parse_product_name(&input.name));
        let description = v.check("description", product::parse_description(&input.description));
        let price = self.check_price(&mut v, input.price.as_ref());
        let category_id = v.check("category_id", input.category_id.parse::<CategoryId>());
        let seller_id = v.check("seller_id", input.seller_id.parse::<SellerId>());
        let image_urls = v.check("image_urls", product::parse_image_urls(&input.image_urls));
        let embedding = v.check("embedding", product::parse_embedding(&input.embedding, self.embedding_dim));
        let status = match input.status.unwrap_or(StatusInput::Unspecified) {
            StatusInput::Unspecified => Some(ProductStatus::Draft),
            StatusInput::Known(s) => Some(s),
            StatusInput::Unknown(n) => v.check("status", Err(format!("unknown status {n}"))),
        };
        v.finish()?;
        let (
            Some(name),
            Some(description),
            Some(price),
            Some(category_id),
            Some(seller_id),
            Some(image_urls),
            Some(embedding),
            Some(status),
        ) = (name, description, price, category_id, seller_id, image_urls, embedding, status)
        else {
            unreachable!("every field was checked above")
        };
        let now = Timestamp::now();
        let product = Product {
            id: ProductId::generate(),
            seller_id,
            category_id,
            name,
            description,
            price,
            image_urls,
            embedding,
            status,
            created_at: now,
            updated_at: now,
        };
        self.db
            .insert_product(&product, owner)
            .await
            .map_err(|e| write_error(e, || product.id.to_string(), || product.category_id.to_string()))?;
        Ok(product)
    }

    /// Replaces the fields named in `paths`. Another seller's product is NOT_FOUND.
    pub async fn update_product(
        &self,
        ctx: &RequestContext,
        id: &str,
        paths: &[String],
        input: ProductInput,
    ) -> Result<Product, Error> {
        let owner = ctx.principal.write_scope()?;
        let id: ProductId = parse_id("id", id)?;
        if paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                format!("is required; allowed paths: {}", UPDATABLE_FIELDS.join(", ")),
            ));
        }
        let mut v = Violations::default();
        let mut patch = ProductPatch::default();
        for path in paths {
            match path.as_str() {
                "name" => patch.name = v.check("name", product::parse_product_name(&input.name)),
                "description" => {
                    patch.description = v.check("description", product::parse_description(&input.description))
                }
                "price" | "price.amount_minor" | "price.currency_code" => {
                    patch.price = self.check_price(&mut v, input.price.as_ref());
                }
                "category_id" => patch.category_id = v.check("category_id", input.category_id.parse()),
                "image_urls" => patch.image_urls = v.check("image_urls", product::parse_image_urls(&input.image_urls)),
                "embedding" => {
                    patch.embedding =
                        v.check("embedding", product::parse_embedding(&input.embedding, self.embedding_dim));
                }
                "status" => {
                    patch.status = match input.status.unwrap_or(StatusInput::Unspecified) {
                        StatusInput::Known(s) => Some(s),
                        StatusInput::Unspecified => {
                            v.check("status", Err("must be set when named in update_mask".into()))
                        }
                        StatusInput::Unknown(n) => v.check("status", Err(format!("unknown status {n}"))),
                    };
                }
                other => {
                    v.check::<()>(
                        "update_mask",
                        Err(format!("unknown or read-only path `{other}`; allowed: {}", UPDATABLE_FIELDS.join(", "))),
                    );
                }
            }
        }
        v.finish()?;
        let category = patch.category_id.as_ref().map(ToString::to_string).unwrap_or_default();
        self.db.update_product(id, patch, owner).await.map_err(|e| write_error(e, || id.to_string(), || category))
    }

    /// Soft-deletes a product, returning its id. Another seller's product is NOT_FOUND.
    pub async fn delete_product(&self, ctx: &RequestContext, id: &str) -> Result<ProductId, Error> {
        let owner = ctx.principal.write_scope()?;
        let id: ProductId = parse_id("id", id)?;
        self.db.delete_product(id, owner).await.map_err(|e| write_error(e, || id.to_string(), String::new))?;
        Ok(id)
    }

    fn check_price(&self, v: &mut Violations, price: Option<&(i64, String)>) -> Option<Money> {
        let Some((amount, currency)) = price else {
            return v.check("price", Err("is required".into()));
        };
        let amount = v.check("price.amount_minor", product::parse_amount(*amount));
        let currency = v.check("price.currency_code", currency.parse());
        Some(Money { amount_minor: amount?, currency: currency? })
    }
}
