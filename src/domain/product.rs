//! Catalog types. Each is parsed once from untrusted input and is valid from then on.

use std::{fmt, str::FromStr};

/// ISO-4217 active alphabetic codes (2024 list). Prices in anything else are refused.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP \
BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS \
GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR \
LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR \
PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD \
TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU \
XTS XUA XXX YER ZAR ZMW ZWG ZWL";

/// The largest price accepted, in minor units: far above any real listing, far below `i64::MAX`
/// so sums of a few prices never overflow.
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000_000;
pub const NAME_MIN_CHARS: usize = 3;
pub const NAME_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 2000;
pub const MAX_IMAGES: usize = 10;
pub const IMAGE_URL_MAX_CHARS: usize = 2048;

uuid_id!(ProductId, "product");
uuid_id!(SellerId, "seller");

/// A category slug: 2–40 of `a-z`, `0-9`, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CategoryId(String);

impl CategoryId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CategoryId {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        let ok = (2..=40).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| Self(raw.to_owned())).ok_or_else(|| "must be 2–40 characters of a-z, 0-9 and '-'".into())
    }
}

impl fmt::Display for CategoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a display string: length in characters (not bytes) and no control characters, which
/// some backends refuse (NUL in PostgreSQL) and which no shop name needs.
fn display_text(raw: &str, min: usize, max: usize, allow_newlines: bool) -> Result<String, String> {
    let chars = raw.chars().count();
    if raw.trim().chars().count() < min {
        return Err(if min <= 1 { "is required".into() } else { format!("must have at least {min} characters") });
    }
    if chars > max {
        return Err(format!("must have at most {max} characters (has {chars})"));
    }
    let allowed = |c: char| !c.is_control() || (allow_newlines && matches!(c, '\n' | '\r' | '\t'));
    if !raw.chars().all(allowed) {
        return Err("must not contain control characters".into());
    }
    Ok(raw.to_owned())
}

pub fn parse_product_name(raw: &str) -> Result<String, String> {
    display_text(raw, NAME_MIN_CHARS, NAME_MAX_CHARS, false)
}

pub fn parse_description(raw: &str) -> Result<String, String> {
    display_text(raw, 0, DESCRIPTION_MAX_CHARS, true)
}

pub fn parse_seller_name(raw: &str) -> Result<String, String> {
    display_text(raw, 2, 100, false)
}

pub fn parse_category_name(raw: &str) -> Result<String, String> {
    display_text(raw, 1, 80, false)
}

/// An ISO-4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn as_str(&self) -> &str {
        // Only ever built from three ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        let bytes = raw.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) && ISO_4217.split(' ').any(|c| c == raw) {
            Ok(Self([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err("must be an ISO-4217 code in upper case, e.g. KES".into())
        }
    }
}

/// A price: a positive amount of a currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

pub fn parse_amount(amount_minor: i64) -> Result<i64, String> {
    if amount_minor <= 0 {
        Err("must be greater than 0".into())
    } else if amount_minor > MAX_PRICE_MINOR {
        Err(format!("must be at most {MAX_PRICE_MINOR}"))
    } else {
        Ok(amount_minor)
    }
}

/// Image references: at most [`MAX_IMAGES`], each a non-empty string without spaces or control
/// characters.
pub fn parse_image_urls(raw: &[String]) -> Result<Vec<String>, String> {
    if raw.len() > MAX_IMAGES {
        return Err(format!("must have at most {MAX_IMAGES} entries (has {})", raw.len()));
    }
    for (i, url) in raw.iter().enumerate() {
        let chars = url.chars().count();
        if chars == 0 || chars > IMAGE_URL_MAX_CHARS {
            return Err(format!("entry {i} must have 1–{IMAGE_URL_MAX_CHARS} characters"));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("entry {i} must not contain whitespace or control characters"));
        }
    }
    Ok(raw.to_vec())
}

/// The largest embedding value accepted: the search index keeps vectors in half precision,
/// which holds nothing larger (real embeddings stay far below it).
pub const EMBEDDING_VALUE_MAX: f32 = 65504.0;

/// An embedding must have exactly the configured dimension and finite values within
/// ±[`EMBEDDING_VALUE_MAX`]; empty means none.
pub fn parse_embedding(raw: &[f32], dim: usize) -> Result<Option<Vec<f32>>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() != dim {
        return Err(format!("must have exactly {dim} values (has {})", raw.len()));
    }
    if let Some(i) = raw.iter().position(|v| !v.is_finite()) {
        return Err(format!("value {i} is not a finite number"));
    }
    if let Some(i) = raw.iter().position(|v| v.abs() > EMBEDDING_VALUE_MAX) {
        return Err(format!("value {i} is outside ±{EMBEDDING_VALUE_MAX}"));
    }
    Ok(Some(raw.to_vec()))
}

/// A product's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProductStatus {
    Draft,
    Active,
    Archived,
}

impl ProductStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "draft" => Some(Self::Draft),
            "active" => Some(Self::Active),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }

    /// Whether anyone may read a product in this status. A draft is "being prepared by the
    /// seller; not shown to buyers". An archived product stays readable because orders refer
    /// to it ("kept for order history").
    pub fn is_public(self) -> bool {
        match self {
            Self::Draft => false,
            Self::Active | Self::Archived => true,
        }
    }

    /// The statuses only a product's seller and admins may read.
    pub fn private() -> impl Iterator<Item = Self> {
        [Self::Draft, Self::Active, Self::Archived].into_iter().filter(|s| !s.is_public())
    }
}

/// Which products a reader may see. Everything else reads as absent (NOT_FOUND, missing from
/// batches and listings), so a draft's existence doesn't leak either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Admins and the system.
    Everything,
    /// Products in a public status, plus every product of the sellers this user owns.
    PublicAndOwnedBy(Option<super::auth::UserId>),
}

impl Visibility {
    pub fn of(principal: &super::auth::Principal) -> Self {
        if principal.is_admin() { Self::Everything } else { Self::PublicAndOwnedBy(principal.user_id()) }
    }
}

/// A status as a client sent it: possibly unset, possibly a value this server doesn't know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusInput {
    Unspecified,
    Known(ProductStatus),
    Unknown(i32),
}

/// Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub id: CategoryId,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seller {
    pub id: SellerId,
    pub display_name: String,
    pub created_at: Timestamp,
    /// The user who manages this seller's products; `None` for sellers only admins manage.
    pub owner: Option<super::auth::UserId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: ProductId,
    pub seller_id: SellerId,
    pub category_id: CategoryId,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub image_urls: Vec<String>,
    pub embedding: Option<Vec<f32>>,
    pub status: ProductStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A product's fields as a client sent them, before validation.
#[derive(Debug, Clone, Default)]
pub struct ProductInput {
    pub name: String,
    pub description: String,
    pub price: Option<(i64, String)>,
    pub category_id: String,
    pub seller_id: String,
    pub image_urls: Vec<String>,
    pub embedding: Vec<f32>,
    pub status: Option<StatusInput>,
}

/// Which fields an update replaces; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<Money>,
    pub category_id: Option<CategoryId>,
    pub image_urls: Option<Vec<String>>,
    pub embedding: Option<Option<Vec<f32>>>,
    pub status: Option<ProductStatus>,
}

impl ProductPatch {
    pub fn apply(self, product: &mut Product) {
        let Self { name, description, price, category_id, image_urls, embedding, status } = self;
        if let Some(v) = name {
            product.name = v;
        }
        if let Some(v) = description {
            product.description = v;
        }
        if let Some(v) = price {
            product.price = v;
        }
        if let Some(v) = category_id {
            product.category_id = v;
        }
        if let Some(v) = image_urls {
            product.image_urls = v;
        }
        if let Some(v) = embedding {
            product.embedding = v;
        }
        if let Some(v) = status {
            product.status = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_characters_not_bytes() {
        assert!(parse_product_name("Ñoño").is_ok());
        assert!(parse_product_name(&"é".repeat(200)).is_ok());
        assert!(parse_product_name(&"é".repeat(201)).is_err());
        assert!(parse_product_name("  ab  ").is_err());
        assert!(parse_product_name("nul\0byte").is_err());
    }

    #[test]
    fn currencies_are_iso_4217() {
        assert!("KES".parse::<Currency>().is_ok());
        assert!("kes".parse::<Currency>().is_err());
        assert!("ABC".parse::<Currency>().is_err());
        assert!("KESS".parse::<Currency>().is_err());
    }

    #[test]
    fn ids_must_be_canonical_uuids() {
        let id = ProductId::generate().to_string();
        assert_eq!(id.parse::<ProductId>().unwrap().to_string(), id);
        assert!(id.to_uppercase().parse::<ProductId>().is_err());
        assert!("1 OR 1=1".parse::<ProductId>().is_err());
    }

    #[test]
    fn embeddings_must_be_finite_and_sized() {
        assert_eq!(parse_embedding(&[], 3), Ok(None));
        assert!(parse_embedding(&[1.0, 2.0], 3).is_err());
        assert!(parse_embedding(&[1.0, f32::NAN, 2.0], 3).is_err());
        assert!(parse_embedding(&[1.0, f32::INFINITY, 2.0], 3).is_err());
        assert!(parse_embedding(&[1.0, 0.0, 2.0], 3).unwrap().is_some());
        assert!(parse_embedding(&[1.0, 70_000.0, 2.0], 3).is_err());
        assert!(parse_embedding(&[1.0, -65504.0, 2.0], 3).unwrap().is_some());
    }
}
