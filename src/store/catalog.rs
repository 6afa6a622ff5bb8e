//! Catalog queries. Every product write commits the row and its outbox event in one transaction.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::{
    Db, StoreError,
    schema::{categories, outbox, products, sellers},
    with_conn, with_transaction,
};
use crate::domain::{
    auth::UserId,
    listing::{ListQuery, ProductSort},
    product::{
        Category, Money, Product, ProductId, ProductPatch, ProductStatus, Seller, SellerId, Timestamp, Visibility,
    },
};

/// Narrows a boxed products query to what a [`Visibility`] lets the reader see: public
/// statuses, or any status for products of sellers the reader owns (one subquery, so a listing
/// stays one statement).
macro_rules! visible {
    ($q:ident, $visibility:expr, $private:expr, $owner:expr) => {
        match ($visibility, $owner) {
            (Visibility::Everything, _) => {}
            (Visibility::PublicAndOwnedBy(_), Some(owner)) => {
                let owned = sellers::table.filter(sellers::owner_user_id.eq(owner)).select(sellers::id);
                $q = $q.filter(products::status.ne_all($private).or(products::seller_id.eq_any(owned)));
            }
            (Visibility::PublicAndOwnedBy(_), None) => {
                $q = $q.filter(products::status.ne_all($private));
            }
        }
    };
}

fn private_statuses() -> Vec<&'static str> {
    ProductStatus::private().map(ProductStatus::as_str).collect()
}

fn visibility_owner(visibility: Visibility) -> Option<String> {
    match visibility {
        Visibility::PublicAndOwnedBy(Some(user)) => Some(user.to_string()),
        _ => None,
    }
}

/// Checks, inside the write's transaction, that the referenced category (and seller) exist, so
/// the caller learns which reference is wrong; a foreign-key error would not say. A macro rather
/// than a function because the connection type differs per backend.
macro_rules! require_references {
    ($conn:expr, $category_id:expr, $seller:expr) => {{
        let categories_found: i64 =
            categories::table.filter(categories::id.eq($category_id)).count().get_result($conn).await?;
        if categories_found == 0 {
            return Err(WriteError::CategoryNotFound);
        }
        if let Some((seller_id, owner)) = $seller {
            let mut query = sellers::table.filter(sellers::id.eq(seller_id)).into_boxed();
            if let Some(owner) = owner {
                query = query.filter(sellers::owner_user_id.eq(owner));
            }
            let sellers_found: i64 = query.count().get_result($conn).await?;
            if sellers_found == 0 {
                return Err(WriteError::SellerNotFound);
            }
        }
    }};
}

/// Loads a live product for a write, inside the write's transaction; with `owner`, only a product
/// of a seller that user owns. Someone else's product is reported as not found, so its existence
/// doesn't leak.
macro_rules! product_for_write {
    ($conn:expr, $id:expr, $owner:expr) => {{
        let mut query = products::table
            .inner_join(sellers::table)
            .filter(products::id.eq($id))
            .filter(products::deleted_at.is_null())
            .select(ProductRow::as_select())
            .into_boxed();
        if let Some(owner) = $owner {
            query = query.filter(sellers::owner_user_id.eq(owner));
        }
        let row: Option<ProductRow> = query.first($conn).await.optional()?;
        row.ok_or(WriteError::ProductNotFound)?
    }};
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = categories)]
struct CategoryRow {
    id: String,
    display_name: String,
    created_at: i64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = sellers)]
struct SellerRow {
    id: String,
    display_name: String,
    created_at: i64,
    owner_user_id: Option<String>,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = products, treat_none_as_null = true)]
struct ProductRow {
    id: String,
    seller_id: String,
    category_id: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    image_urls: String,
    embedding: Option<Vec<u8>>,
    status: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct OutboxRow {
    product_id: String,
    op: &'static str,
    embedding: Option<Vec<u8>>,
    created_at: i64,
}

/// What happened to a product, as followers of the outbox see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxOp {
    Upsert,
    Delete,
}

impl OutboxOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }
}

/// Where a product stood in the outbox when it was read: the id of its newest event. A cache
/// entry read at one version is stale once a replica has applied a later event of that product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version(pub i64);

/// One outbox entry, in commit-id order.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: i64,
    pub product_id: String,
    pub op: String,
    pub embedding: Option<Vec<f32>>,
}

impl From<Category> for CategoryRow {
    fn from(c: Category) -> Self {
        Self { id: c.id.to_string(), display_name: c.display_name, created_at: Timestamp::now().0 }
    }
}

impl TryFrom<CategoryRow> for Category {
    type Error = StoreError;
    fn try_from(row: CategoryRow) -> Result<Self, StoreError> {
        Ok(Self { id: row.id.parse().map_err(corrupt("categories.id"))?, display_name: row.display_name })
    }
}

impl TryFrom<SellerRow> for Seller {
    type Error = StoreError;
    fn try_from(row: SellerRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id.parse().map_err(corrupt("sellers.id"))?,
            display_name: row.display_name,
            created_at: Timestamp(row.created_at),
            owner: row.owner_user_id.map(|o| o.parse()).transpose().map_err(corrupt("sellers.owner_user_id"))?,
        })
    }
}

impl From<&Product> for ProductRow {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id.to_string(),
            seller_id: p.seller_id.to_string(),
            category_id: p.category_id.to_string(),
            name: p.name.clone(),
            description: p.description.clone(),
            price_minor: p.price.amount_minor,
            currency: p.price.currency.as_str().to_owned(),
            image_urls: serde_json::to_string(&p.image_urls).unwrap_or_else(|_| "[]".into()),
            embedding: p.embedding.as_deref().map(embedding_to_bytes),
            status: p.status.as_str().to_owned(),
            created_at: p.created_at.0,
            updated_at: p.updated_at.0,
        }
    }
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;
    fn try_from(row: ProductRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id.parse().map_err(corrupt("products.id"))?,
            seller_id: row.seller_id.parse().map_err(corrupt("products.seller_id"))?,
            category_id: row.category_id.parse().map_err(corrupt("products.category_id"))?,
            name: row.name,
            description: row.description,
            price: Money {
                amount_minor: row.price_minor,
                currency: row.currency.parse().map_err(corrupt("products.currency"))?,
            },
            image_urls: serde_json::from_str(&row.image_urls).map_err(corrupt("products.image_urls"))?,
            embedding: row.embedding.as_deref().map(embedding_from_bytes).transpose()?,
            status: ProductStatus::from_db(&row.status).ok_or_else(|| corrupt("products.status")(&row.status))?,
            created_at: Timestamp(row.created_at),
            updated_at: Timestamp(row.updated_at),
        })
    }
}

fn corrupt<E: std::fmt::Debug>(column: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Unexpected(anyhow::anyhow!("unreadable value in {column}: {e:?}"))
}

/// Embeddings are stored as little-endian f32s: compact and identical on every backend.
fn embedding_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn embedding_from_bytes(bytes: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(corrupt("embedding")(bytes.len()));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn outbox_row(product: &Product, op: OutboxOp) -> OutboxRow {
    OutboxRow {
        product_id: product.id.to_string(),
        op: op.as_str(),
        embedding: match op {
            OutboxOp::Upsert => product.embedding.as_deref().map(embedding_to_bytes),
            OutboxOp::Delete => None,
        },
        created_at: Timestamp::now().0,
    }
}

/// Why a product write was refused inside its transaction.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("product not found")]
    ProductNotFound,
    #[error("category not found")]
    CategoryNotFound,
    #[error("seller not found")]
    SellerNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for WriteError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for WriteError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        Self::Store(e.into())
    }
}

impl Db {
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn list_categories(&self) -> Result<Vec<Category>, StoreError> {
        let rows: Vec<CategoryRow> = with_conn!(self, |conn| {
            categories::table
                .order((categories::display_name.asc(), categories::id.asc()))
                .select(CategoryRow::as_select())
                .load(conn)
                .await?
        });
        rows.into_iter().map(Category::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn insert_category(&self, category: Category) -> Result<(), StoreError> {
        let row = CategoryRow::from(category);
        let _guard = self.write_guard().await;
        with_conn!(self, |conn| {
            diesel::insert_into(categories::table).values(&row).execute(conn).await?;
        });
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn insert_seller(&self, seller: &Seller) -> Result<(), StoreError> {
        let row = SellerRow {
            id: seller.id.to_string(),
            display_name: seller.display_name.clone(),
            created_at: seller.created_at.0,
            owner_user_id: seller.owner.map(|o| o.to_string()),
        };
        let _guard = self.write_guard().await;
        with_conn!(self, |conn| {
            diesel::insert_into(sellers::table).values(&row).execute(conn).await?;
        });
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn get_seller(&self, id: SellerId) -> Result<Option<Seller>, StoreError> {
        let id = id.to_string();
        let row: Option<SellerRow> = with_conn!(self, |conn| {
            sellers::table.find(&id).select(SellerRow::as_select()).first(conn).await.optional()?
        });
        row.map(Seller::try_from).transpose()
    }

    /// Live (not deleted) products with these ids, in no particular order.
    /// The live products among `ids` that `visibility` lets the reader see, in no order.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn get_products(
        &self,
        ids: &[ProductId],
        visibility: Visibility,
    ) -> Result<Vec<(Product, Version)>, StoreError> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let private = private_statuses();
        let owner = visibility_owner(visibility);
        let (versions, rows): (Vec<(String, Option<i64>)>, Vec<ProductRow>) = with_conn!(self, |conn| {
            // Versions first: a write that lands between the two reads makes a row newer than
            // its version, which caches treat as stale (safe), never the other way round. A
            // product's events are numbered in commit order, as each write holds the row's lock
            // when it appends its event.
            let versions = outbox::table
                .filter(outbox::product_id.eq_any(&ids))
                .group_by(outbox::product_id)
                .select((outbox::product_id, diesel::dsl::max(outbox::id)))
                .load(conn)
                .await?;
            let mut q =
                products::table.filter(products::id.eq_any(&ids)).filter(products::deleted_at.is_null()).into_boxed();
            visible!(q, visibility, &private, &owner);
            (versions, q.select(ProductRow::as_select()).load(conn).await?)
        });
        let versions: std::collections::HashMap<String, i64> =
            versions.into_iter().map(|(id, v)| (id, v.unwrap_or_default())).collect();
        rows.into_iter()
            .map(|row| {
                let version = Version(versions.get(&row.id).copied().unwrap_or_default());
                Ok((Product::try_from(row)?, version))
            })
            .collect()
    }

    /// Live products in id order, `limit` at a time after `after`: a full scan in pages, for
    /// loading the search index.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn products_after(&self, after: Option<ProductId>, limit: i64) -> Result<Vec<Product>, StoreError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows: Vec<ProductRow> = with_conn!(self, |conn| {
            products::table
                .filter(products::id.gt(&after))
                .filter(products::deleted_at.is_null())
                .order(products::id.asc())
                .limit(limit)
                .select(ProductRow::as_select())
                .load(conn)
                .await?
        });
        rows.into_iter().map(Product::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn list_products(&self, query: &ListQuery) -> Result<Vec<Product>, StoreError> {
        let f = &query.filter;
        let category = f.category_id.as_ref().map(|c| c.as_str().to_owned());
        let seller = f.seller_id.map(|s| s.to_string());
        let currency = f.currency.map(|c| c.as_str().to_owned());
        let status = f.status.map(ProductStatus::as_str);
        let after = query.after.map(|c| (c.key, c.id.to_string()));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let private = private_statuses();
        let owner = visibility_owner(query.visibility);

        let rows: Vec<ProductRow> = with_conn!(self, |conn| {
            let mut q = products::table.filter(products::deleted_at.is_null()).into_boxed();
            visible!(q, query.visibility, &private, &owner);
            if let Some(v) = &category {
                q = q.filter(products::category_id.eq(v));
            }
            if let Some(v) = &seller {
                q = q.filter(products::seller_id.eq(v));
            }
            if let Some(v) = &currency {
                q = q.filter(products::currency.eq(v));
            }
            if let Some(v) = status {
                q = q.filter(products::status.eq(v));
            }
            if let Some(v) = f.min_price_minor {
                q = q.filter(products::price_minor.ge(v));
            }
            if let Some(v) = f.max_price_minor {
                q = q.filter(products::price_minor.le(v));
            }
            q = match query.sort {
                ProductSort::Newest => {
                    if let Some((key, id)) = &after {
                        q = q.filter(
                            products::created_at.lt(*key).or(products::created_at.eq(*key).and(products::id.lt(id))),
                        );
                    }
                    q.order((products::created_at.desc(), products::id.desc()))
                }
                ProductSort::PriceAsc => {
                    if let Some((key, id)) = &after {
                        q = q.filter(
                            products::price_minor.gt(*key).or(products::price_minor.eq(*key).and(products::id.gt(id))),
                        );
                    }
                    q.order((products::price_minor.asc(), products::id.asc()))
                }
                ProductSort::PriceDesc => {
                    if let Some((key, id)) = &after {
                        q = q.filter(
                            products::price_minor.lt(*key).or(products::price_minor.eq(*key).and(products::id.lt(id))),
                        );
                    }
                    q.order((products::price_minor.desc(), products::id.desc()))
                }
            };
            q.limit(limit).select(ProductRow::as_select()).load(conn).await?
        });
        rows.into_iter().map(Product::try_from).collect()
    }

    /// Inserts a product and its outbox event atomically.
    /// Inserts a product and its outbox event atomically. With `owner`, the product's seller must
    /// belong to that user.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn insert_product(&self, product: &Product, owner: Option<UserId>) -> Result<(), WriteError> {
        let row = ProductRow::from(product);
        let owner = owner.map(|o| o.to_string());
        let event = outbox_row(product, OutboxOp::Upsert);
        let _guard = self.write_guard().await;
        with_transaction!(self, WriteError, |conn| {
            require_references!(conn, &row.category_id, Some((&row.seller_id, owner.as_ref())));
            diesel::insert_into(products::table).values(&row).execute(conn).await?;
            diesel::insert_into(outbox::table).values(&event).execute(conn).await?;
            Ok(())
        })
    }

    /// Applies `patch` to a live product and records the new state in the outbox, atomically.
    /// Returns the product as committed.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn update_product(
        &self,
        id: ProductId,
        patch: ProductPatch,
        owner: Option<UserId>,
    ) -> Result<Product, WriteError> {
        let id = id.to_string();
        let owner = owner.map(|o| o.to_string());
        let _guard = self.write_guard().await;
        with_transaction!(self, WriteError, |conn| {
            let current = product_for_write!(conn, &id, owner.as_ref());
            let mut product = Product::try_from(current)?;
            if let Some(category) = &patch.category_id {
                require_references!(conn, category.as_str(), None::<(&str, Option<&String>)>);
            }
            patch.apply(&mut product);
            product.updated_at = Timestamp::now().max(Timestamp(product.updated_at.0 + 1));
            let row = ProductRow::from(&product);
            diesel::update(products::table.find(&id)).set(&row).execute(conn).await?;
            let event = outbox_row(&product, OutboxOp::Upsert);
            diesel::insert_into(outbox::table).values(&event).execute(conn).await?;
            Ok(product)
        })
    }

    /// Soft-deletes a live product and records the deletion in the outbox, atomically.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn delete_product(&self, id: ProductId, owner: Option<UserId>) -> Result<(), WriteError> {
        let now = Timestamp::now().0;
        let event =
            OutboxRow { product_id: id.to_string(), op: OutboxOp::Delete.as_str(), embedding: None, created_at: now };
        let id = id.to_string();
        let owner = owner.map(|o| o.to_string());
        let _guard = self.write_guard().await;
        with_transaction!(self, WriteError, |conn| {
            product_for_write!(conn, &id, owner.as_ref());
            let changed = diesel::update(products::table.find(&id).filter(products::deleted_at.is_null()))
                .set((products::deleted_at.eq(Some(now)), products::updated_at.eq(now)))
                .execute(conn)
                .await?;
            if changed == 0 {
                return Err(WriteError::ProductNotFound);
            }
            diesel::insert_into(outbox::table).values(&event).execute(conn).await?;
            Ok(())
        })
    }

    /// Outbox events with an id greater than `after`, oldest first.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn outbox_after(&self, after: i64, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows: Vec<(i64, String, String, Option<Vec<u8>>)> = with_conn!(self, |conn| {
            outbox::table
                .filter(outbox::id.gt(after))
                .order(outbox::id.asc())
                .limit(limit)
                .select((outbox::id, outbox::product_id, outbox::op, outbox::embedding))
                .load(conn)
                .await?
        });
        rows.into_iter()
            .map(|(id, product_id, op, embedding)| {
                Ok(OutboxEvent {
                    id,
                    product_id,
                    op,
                    embedding: embedding.as_deref().map(embedding_from_bytes).transpose()?,
                })
            })
            .collect()
    }

    /// The newest outbox id (0 when empty), and when the oldest event after `after` was
    /// written: how far a follower at `after` is behind.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn outbox_lag(&self, after: i64) -> Result<(i64, Option<i64>), StoreError> {
        Ok(with_conn!(self, |conn| {
            let head: Option<i64> = outbox::table.select(diesel::dsl::max(outbox::id)).first(conn).await?;
            let oldest: Option<i64> = outbox::table
                .filter(outbox::id.gt(after))
                .order(outbox::id.asc())
                .select(outbox::created_at)
                .first(conn)
                .await
                .optional()?;
            (head.unwrap_or(0), oldest)
        }))
    }

    /// How many live products there are.
    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", db.system = self.backend()))]
    pub async fn count_products(&self) -> Result<i64, StoreError> {
        Ok(with_conn!(self, |conn| {
            products::table.filter(products::deleted_at.is_null()).count().get_result::<i64>(conn).await?
        }))
    }
}
