//! Product listings: filters, sort orders and the opaque page tokens that carry a keyset cursor.
//!
//! Keyset pagination (the next page starts strictly after the last row seen, by the sort key and
//! then the id) is what keeps pages free of duplicates and gaps while rows are being inserted;
//! offsets would shift under concurrent writes.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    error::Violations,
    product::{CategoryId, Currency, ProductId, ProductStatus, SellerId, StatusInput, Visibility},
};

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductSort {
    Newest,
    PriceAsc,
    PriceDesc,
}

impl ProductSort {
    fn code(self) -> u8 {
        match self {
            Self::Newest => 1,
            Self::PriceAsc => 2,
            Self::PriceDesc => 3,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    pub category_id: Option<CategoryId>,
    pub seller_id: Option<SellerId>,
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub currency: Option<Currency>,
    pub status: Option<ProductStatus>,
}

impl ProductFilter {
    /// A digest of the filter, bound into page tokens so a token can't be replayed against
    /// another listing.
    fn fingerprint(&self, sort: ProductSort) -> String {
        let canonical = format!(
            "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            sort.code(),
            self.category_id.as_ref().map(CategoryId::as_str),
            self.seller_id.map(|s| s.to_string()),
            self.min_price_minor,
            self.max_price_minor,
            self.currency.as_ref().map(Currency::as_str),
            self.status.map(ProductStatus::as_str),
        );
        scope_digest(&canonical)
    }
}

/// A filter as a client sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct FilterInput {
    pub category_id: String,
    pub seller_id: String,
    pub min_price_minor: i64,
    pub max_price_minor: i64,
    pub currency_code: String,
    pub status: Option<StatusInput>,
}

/// Validates a filter, recording one violation per bad field under `filter.<field>`.
pub fn parse_filter(v: &mut Violations, input: &FilterInput) -> ProductFilter {
    fn non_empty(raw: &str) -> Option<&str> {
        (!raw.is_empty()).then_some(raw)
    }
    let price = |v: &mut Violations, field: &str, n: i64| match n {
        0 => None,
        n if n < 0 => v.check(field, Err("must not be negative".into())),
        n => Some(n),
    };
    let filter = ProductFilter {
        category_id: non_empty(&input.category_id).and_then(|raw| v.check("filter.category_id", raw.parse())),
        seller_id: non_empty(&input.seller_id).and_then(|raw| v.check("filter.seller_id", raw.parse())),
        min_price_minor: price(v, "filter.min_price_minor", input.min_price_minor),
        max_price_minor: price(v, "filter.max_price_minor", input.max_price_minor),
        currency: non_empty(&input.currency_code).and_then(|raw| v.check("filter.currency_code", raw.parse())),
        status: match input.status {
            None | Some(StatusInput::Unspecified) => None,
            Some(StatusInput::Known(s)) => Some(s),
            Some(StatusInput::Unknown(n)) => v.check("filter.status", Err(format!("unknown status {n}"))),
        },
    };
    if let (Some(min), Some(max)) = (filter.min_price_minor, filter.max_price_minor)
        && min > max
    {
        v.check::<()>("filter.max_price_minor", Err("must not be below min_price_minor".into()));
    }
    filter
}

/// Where the previous page ended: the sort key (creation time or price) and the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub id: ProductId,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: ProductFilter,
    pub visibility: Visibility,
    pub sort: ProductSort,
    pub after: Option<Cursor>,
    pub limit: usize,
}

#[derive(Serialize, Deserialize)]
struct TokenBody {
    f: String,
    k: i64,
    i: String,
}

/// Clamps a requested page size: 0 means the default, anything above the maximum is the maximum.
pub fn page_size(requested: i32) -> Result<usize, String> {
    match usize::try_from(requested) {
        Err(_) => Err("must not be negative".into()),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Encodes a product cursor; see [`encode_cursor`].
pub fn encode_token(filter: &ProductFilter, sort: ProductSort, cursor: Cursor) -> String {
    encode_cursor(&filter.fingerprint(sort), cursor.key, &cursor.id.to_string())
}

pub fn decode_token(token: &str, filter: &ProductFilter, sort: ProductSort) -> Result<Cursor, String> {
    let (key, id) = decode_cursor(token, &filter.fingerprint(sort))?;
    let id = id.parse().map_err(|_| INVALID_TOKEN.to_owned())?;
    Ok(Cursor { key, id })
}

const INVALID_TOKEN: &str = "is not a page token issued for this listing";

/// Encodes a keyset cursor (sort key, id) bound to `scope` — a digest of the listing's filter —
/// with a checksum, so corrupted or hand-edited tokens are refused rather than silently starting
/// somewhere else, and a token can't be replayed against another listing.
pub fn encode_cursor(scope: &str, key: i64, id: &str) -> String {
    let body = TokenBody { f: scope.to_owned(), k: key, i: id.to_owned() };
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    let check = checksum(&bytes);
    bytes.extend_from_slice(&check);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_cursor(token: &str, scope: &str) -> Result<(i64, String), String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| INVALID_TOKEN.to_owned())?;
    if bytes.len() < 9 {
        return Err(INVALID_TOKEN.into());
    }
    let (body, check) = bytes.split_at(bytes.len() - 8);
    if checksum(body) != check {
        return Err(INVALID_TOKEN.into());
    }
    let body: TokenBody = serde_json::from_slice(body).map_err(|_| INVALID_TOKEN.to_owned())?;
    if body.f != scope {
        return Err("was issued for a different filter or sort".into());
    }
    Ok((body.k, body.i))
}

/// Cuts a page out of `rows`, which were fetched with one row more than `limit`: the extra row
/// only tells that another page exists. Returns the token of that page, made from the last row's
/// sort key and id.
pub fn next_page<T>(rows: &mut Vec<T>, limit: usize, scope: &str, key: impl Fn(&T) -> (i64, String)) -> Option<String> {
    (rows.len() > limit).then(|| {
        rows.truncate(limit);
        let (sort_key, id) = key(rows.last().expect("limit is at least 1"));
        encode_cursor(scope, sort_key, &id)
    })
}

/// A short digest of a listing's parameters, to bind page tokens to them.
pub fn scope_digest(canonical: &str) -> String {
    hex8(&Sha256::digest(canonical.as_bytes()))
}

fn checksum(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::new_with_prefix(b"soko.page-token.v1").chain_update(bytes).finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn hex8(digest: &[u8]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let filter = ProductFilter::default();
        let cursor = Cursor { key: 42, id: ProductId::generate() };
        let token = encode_token(&filter, ProductSort::Newest, cursor);
        assert_eq!(decode_token(&token, &filter, ProductSort::Newest), Ok(cursor));
        assert!(decode_token(&token, &filter, ProductSort::PriceAsc).is_err());

        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[10] ^= 1;
        assert!(decode_token(&URL_SAFE_NO_PAD.encode(bytes), &filter, ProductSort::Newest).is_err());
        assert!(decode_token("garbage!", &filter, ProductSort::Newest).is_err());
    }

    #[test]
    fn page_sizes_are_clamped() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(1000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
