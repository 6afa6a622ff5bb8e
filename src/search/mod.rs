//! Product search. The index lives in this process and is fed only by the catalog outbox, in id
//! order, so every replica converges on the database: a product written through any replica
//! appears here within one poll interval.

pub mod text;

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use text::{Hit, TextIndex};

use crate::{
    domain::{
        Error,
        error::Violations,
        listing::{self, ProductFilter, scope_digest},
        product::{ProductId, ProductStatus, StatusInput},
    },
    store::{Db, StoreError},
};

/// How often the follower looks for new outbox events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Outbox ids are allocated when a transaction inserts, not when it commits, so a lower id can
/// become visible after a higher one. A hole in the ids is waited for this long before it is
/// taken to be a rolled-back transaction and skipped.
const GAP_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: i64 = 500;
pub const QUERY_MAX_CHARS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

/// A search request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub category_id: String,
    pub seller_id: String,
    pub min_price_minor: i64,
    pub max_price_minor: i64,
    pub currency_code: String,
    pub status: Option<StatusInput>,
    pub sort: Option<SearchSort>,
    pub page_size: i32,
    pub page_token: String,
}

/// The search index and the state of its outbox follower.
pub struct SearchEngine {
    db: Db,
    text: RwLock<TextIndex>,
    follow: tokio::sync::Mutex<FollowState>,
    ready: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct FollowState {
    /// Every event with an id up to here has been applied.
    watermark: i64,
    /// Applied events above the watermark, waiting for the holes below them to fill.
    applied_above: BTreeSet<i64>,
    gap_since: Option<Instant>,
}

impl SearchEngine {
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            text: RwLock::new(TextIndex::default()),
            follow: tokio::sync::Mutex::new(FollowState::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the initial catch-up with the outbox has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.text.read().expect("index lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies every outbox event available now. Events are applied by re-reading the product's
    /// current row, so applying one twice, or out of order, leaves the same index.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut state = self.follow.lock().await;
        let mut applied = 0;
        loop {
            let events = self.db.outbox_after(state.watermark, BATCH).await?;
            let fresh: Vec<_> = events.iter().filter(|e| !state.applied_above.contains(&e.id)).collect();
            let mut ids: Vec<ProductId> = fresh.iter().filter_map(|e| e.product_id.parse().ok()).collect();
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let live = self.db.get_products(&ids).await?;
                let mut index = self.text.write().expect("index lock");
                for id in &ids {
                    index.remove(*id);
                }
                for product in live.into_iter().filter(|p| p.status == ProductStatus::Active) {
                    index.upsert(product);
                }
            }
            applied += fresh.len();
            state.applied_above.extend(fresh.iter().map(|e| e.id));
            advance(&mut state);
            if (events.len() as i64) < BATCH || fresh.is_empty() {
                return Ok(applied);
            }
        }
    }

    /// Follows the outbox until `stop` resolves. The first catch-up marks the engine ready.
    pub async fn follow(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.catch_up().await {
                Ok(_) => {
                    if !self.ready.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        tracing::info!(products = self.len(), "search index caught up with the outbox");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "search index: reading the outbox failed; retrying"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Full-text search: one page of active products matching the query and filter.
    pub fn search(&self, request: &SearchRequest) -> Result<(Vec<Hit>, Option<String>), Error> {
        if !self.is_ready() {
            return Err(Error::Busy("the search index is still loading; retry shortly"));
        }
        let mut v = Violations::default();
        let query = request.query.trim();
        let chars = query.chars().count();
        if chars == 0 || chars > QUERY_MAX_CHARS {
            v.check::<()>("query", Err(format!("must have 1–{QUERY_MAX_CHARS} characters")));
        }
        fn non_empty(raw: &str) -> Option<&str> {
            (!raw.is_empty()).then_some(raw)
        }
        let non_negative = |n: i64| if n < 0 { Err("must not be negative".to_owned()) } else { Ok(n) };
        let filter = ProductFilter {
            category_id: non_empty(&request.category_id).and_then(|r| v.check("filter.category_id", r.parse())),
            seller_id: non_empty(&request.seller_id).and_then(|r| v.check("filter.seller_id", r.parse())),
            min_price_minor: (request.min_price_minor != 0)
                .then(|| v.check("filter.min_price_minor", non_negative(request.min_price_minor)))
                .flatten(),
            max_price_minor: (request.max_price_minor != 0)
                .then(|| v.check("filter.max_price_minor", non_negative(request.max_price_minor)))
                .flatten(),
            currency: non_empty(&request.currency_code).and_then(|r| v.check("filter.currency_code", r.parse())),
            // Search only ever shows what is on sale.
            status: match request.status {
                None | Some(StatusInput::Unspecified) | Some(StatusInput::Known(ProductStatus::Active)) => {
                    Some(ProductStatus::Active)
                }
                Some(_) => v.check("filter.status", Err("search covers active products only".into())),
            },
        };
        if let (Some(min), Some(max)) = (filter.min_price_minor, filter.max_price_minor)
            && min > max
        {
            v.check::<()>("filter.max_price_minor", Err("must not be below min_price_minor".into()));
        }
        let limit = v.check("page_size", listing::page_size(request.page_size));
        v.finish()?;
        let limit = limit.expect("checked above");
        let sort = request.sort.unwrap_or(SearchSort::Relevance);
        let scope = scope_digest(&format!("search|{query}|{filter:?}|{sort:?}"));
        let offset = match request.page_token.as_str() {
            "" => 0,
            token => {
                let (offset, _) =
                    listing::decode_cursor(token, &scope).map_err(|why| Error::invalid("page_token", why))?;
                usize::try_from(offset).map_err(|_| Error::invalid("page_token", "is not valid"))?
            }
        };
        let mut hits = self.text.read().expect("index lock").search(query, &filter);
        match sort {
            SearchSort::Relevance => {}
            SearchSort::PriceAsc => hits.sort_by_key(|h| (h.product.price.amount_minor, h.product.id)),
            SearchSort::PriceDesc => {
                hits.sort_by_key(|h| (std::cmp::Reverse(h.product.price.amount_minor), std::cmp::Reverse(h.product.id)))
            }
            SearchSort::Newest => {
                hits.sort_by_key(|h| (std::cmp::Reverse(h.product.created_at), std::cmp::Reverse(h.product.id)))
            }
        }
        let total = hits.len();
        let page: Vec<Hit> = hits.into_iter().skip(offset).take(limit).collect();
        let next = (offset + page.len() < total).then(|| listing::encode_cursor(&scope, (offset + limit) as i64, ""));
        Ok((page, next))
    }
}

/// Moves the watermark over contiguous applied ids, and over a hole that has stayed open past
/// [`GAP_TIMEOUT`] (a transaction that rolled back after taking its id).
fn advance(state: &mut FollowState) {
    loop {
        while state.applied_above.remove(&(state.watermark + 1)) {
            state.watermark += 1;
        }
        let Some(&next) = state.applied_above.first() else {
            state.gap_since = None;
            return;
        };
        let since = *state.gap_since.get_or_insert_with(Instant::now);
        if since.elapsed() < GAP_TIMEOUT {
            return;
        }
        tracing::debug!(from = state.watermark + 1, to = next - 1, "skipping outbox ids that never committed");
        state.watermark = next - 1;
        state.gap_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_waits_for_holes_then_skips_them() {
        let mut state = FollowState::default();
        state.applied_above.extend([1, 2, 4, 5]);
        advance(&mut state);
        assert_eq!(state.watermark, 2, "3 may still commit");
        state.applied_above.insert(3);
        advance(&mut state);
        assert_eq!(state.watermark, 5);
        state.applied_above.insert(7);
        advance(&mut state);
        assert_eq!(state.watermark, 5);
        state.gap_since = Some(Instant::now() - GAP_TIMEOUT - Duration::from_secs(1));
        advance(&mut state);
        assert_eq!(state.watermark, 7, "a hole open past the timeout is skipped");
    }
}
