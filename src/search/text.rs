//! An in-process inverted index with BM25 ranking over product names, categories and
//! descriptions. Fed only by the catalog outbox, so every replica builds the same index from the
//! same database, and ranking is identical whichever SQL backend holds the data (each backend's
//! own full-text search ranks differently, and SQLite's needs an extension).

use std::collections::HashMap;

use crate::domain::{
    listing::ProductFilter,
    product::{Product, ProductId},
};

/// BM25 parameters: the usual defaults.
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// A name counts more than a category, which counts more than a description.
const NAME_WEIGHT: f32 = 3.0;
const CATEGORY_WEIGHT: f32 = 2.0;
const DESCRIPTION_WEIGHT: f32 = 1.0;
/// Added to the score of a product whose whole name is the query, so an exact name ranks first.
const EXACT_NAME_BONUS: f32 = 1000.0;

/// Lower-cased alphanumeric words; everything else separates them.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase)
}

fn normalized(text: &str) -> String {
    tokens(text).collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone)]
struct Doc {
    product: Product,
    /// Weighted length of the document, for BM25's length normalisation.
    length: f32,
    normalized_name: String,
    terms: Vec<String>,
}

#[derive(Default)]
pub struct TextIndex {
    docs: HashMap<ProductId, Doc>,
    /// term → product → weighted term frequency.
    postings: HashMap<String, HashMap<ProductId, f32>>,
    total_length: f32,
}

/// One hit: the product and its relevance.
#[derive(Debug, Clone)]
pub struct Hit {
    pub product: Product,
    pub score: f32,
}

impl TextIndex {
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn contains(&self, id: ProductId) -> bool {
        self.docs.contains_key(&id)
    }

    /// Adds or replaces a product.
    pub fn upsert(&mut self, product: Product) {
        self.remove(product.id);
        let mut weights: HashMap<String, f32> = HashMap::new();
        for (text, weight) in [
            (product.name.as_str(), NAME_WEIGHT),
            (product.category_id.as_str(), CATEGORY_WEIGHT),
            (product.description.as_str(), DESCRIPTION_WEIGHT),
        ] {
            for token in tokens(text) {
                *weights.entry(token).or_default() += weight;
            }
        }
        let length: f32 = weights.values().sum();
        for (term, weight) in &weights {
            self.postings.entry(term.clone()).or_default().insert(product.id, *weight);
        }
        self.total_length += length;
        let doc =
            Doc { normalized_name: normalized(&product.name), terms: weights.into_keys().collect(), length, product };
        self.docs.insert(doc.product.id, doc);
    }

    pub fn remove(&mut self, id: ProductId) {
        let Some(doc) = self.docs.remove(&id) else { return };
        self.total_length -= doc.length;
        for term in &doc.terms {
            if let Some(posting) = self.postings.get_mut(term) {
                posting.remove(&id);
                if posting.is_empty() {
                    self.postings.remove(term);
                }
            }
        }
    }

    pub fn get(&self, id: ProductId) -> Option<&Product> {
        self.docs.get(&id).map(|d| &d.product)
    }

    /// Every indexed product the filter accepts.
    pub fn matching(&self, filter: &ProductFilter) -> Vec<ProductId> {
        self.docs.values().filter(|d| matches(filter, &d.product)).map(|d| d.product.id).collect()
    }

    /// Products matching any query word and the filter, best first.
    pub fn search(&self, query: &str, filter: &ProductFilter) -> Vec<Hit> {
        let n = self.docs.len() as f32;
        if n == 0.0 {
            return Vec::new();
        }
        let average = (self.total_length / n).max(1.0);
        let mut scores: HashMap<ProductId, f32> = HashMap::new();
        let mut seen_terms = std::collections::HashSet::new();
        for term in tokens(query) {
            if !seen_terms.insert(term.clone()) {
                continue;
            }
            let Some(posting) = self.postings.get(&term) else { continue };
            let df = posting.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (id, tf) in posting {
                let length = self.docs[id].length;
                let score = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / average));
                *scores.entry(*id).or_default() += score;
            }
        }
        let exact = normalized(query);
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .filter_map(|(id, score)| {
                let doc = &self.docs[&id];
                matches(filter, &doc.product).then(|| Hit {
                    score: score + if doc.normalized_name == exact { EXACT_NAME_BONUS } else { 0.0 },
                    product: doc.product.clone(),
                })
            })
            .collect();
        // Ties broken by id so every replica returns the same order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.product.id.cmp(&b.product.id)));
        hits
    }
}

/// Whether a product passes a listing filter.
pub fn matches(filter: &ProductFilter, p: &Product) -> bool {
    filter.category_id.as_ref().is_none_or(|c| *c == p.category_id)
        && filter.seller_id.is_none_or(|s| s == p.seller_id)
        && filter.currency.is_none_or(|c| c == p.price.currency)
        && filter.status.is_none_or(|s| s == p.status)
        && filter.min_price_minor.is_none_or(|m| p.price.amount_minor >= m)
        && filter.max_price_minor.is_none_or(|m| p.price.amount_minor <= m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{CategoryId, Money, ProductStatus, SellerId, Timestamp};

    fn product(name: &str, description: &str, category: &str) -> Product {
        Product {
            id: ProductId::generate(),
            seller_id: SellerId::generate(),
            category_id: category.parse::<CategoryId>().unwrap(),
            name: name.into(),
            description: description.into(),
            price: Money { amount_minor: 100, currency: "KES".parse().unwrap() },
            image_urls: vec![],
            embedding: None,
            status: ProductStatus::Active,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn names_outrank_descriptions_and_exact_names_come_first() {
        let mut index = TextIndex::default();
        let exact = product("Leather Sandals", "", "shoes");
        let in_name = product("Brown leather sandals for men", "comfortable", "shoes");
        let in_description = product("Summer shoe", "made of leather, like sandals", "shoes");
        let unrelated = product("Teak table", "solid wood", "furniture");
        for p in [&in_description, &unrelated, &in_name, &exact] {
            index.upsert(p.clone());
        }
        let hits = index.search("leather sandals", &ProductFilter::default());
        let ids: Vec<_> = hits.iter().map(|h| h.product.id).collect();
        assert_eq!(ids, [exact.id, in_name.id, in_description.id]);

        index.remove(exact.id);
        assert_eq!(index.search("leather sandals", &ProductFilter::default())[0].product.id, in_name.id);
        let mut renamed = in_name.clone();
        renamed.name = "Wool socks".into();
        index.upsert(renamed);
        assert_eq!(index.search("sandals", &ProductFilter::default()).len(), 1, "the old name is gone");
    }
}
