//! `read_mask` on product reads (catalog and search alike): which fields of a Product to fill.
//! Unset or empty means every field but `embedding`, which is most of a product's bytes (768
//! floats, about 3 KB) and which browsing clients never use; naming it returns it.

use tonic::Status;

use crate::{domain::Error, proto::catalog::Product};

const MASKABLE: &[&str] = &[
    "id",
    "name",
    "description",
    "price",
    "category_id",
    "seller_id",
    "image_urls",
    "embedding",
    "status",
    "create_time",
    "update_time",
];

/// Unknown paths answer INVALID_ARGUMENT on `read_mask`.
pub fn check_mask(mask: Option<&prost_types::FieldMask>) -> Result<(), Status> {
    match mask.and_then(|m| m.paths.iter().find(|p| !MASKABLE.contains(&p.as_str()))) {
        Some(bad) => Err(Error::invalid("read_mask", format!("unknown field `{bad}`")).into()),
        None => Ok(()),
    }
}

/// Whether `mask` asks for the embedding, which cached products do not carry.
pub fn names_embedding(mask: Option<&prost_types::FieldMask>) -> bool {
    mask.is_some_and(|m| m.paths.iter().any(|p| p == "embedding"))
}

/// Keeps the fields `mask` names (all but the embedding when it names none). `id` always stays:
/// a result must say which product it is.
pub fn masked(mut product: Product, mask: Option<&prost_types::FieldMask>) -> Product {
    let mask = mask.filter(|m| !m.paths.is_empty());
    let keep = |field: &str| mask.map_or(field != "embedding", |m| m.paths.iter().any(|p| p == field));
    if !keep("name") {
        product.name.clear();
    }
    if !keep("description") {
        product.description.clear();
    }
    if !keep("price") {
        product.price = None;
    }
    if !keep("category_id") {
        product.category_id.clear();
    }
    if !keep("seller_id") {
        product.seller_id.clear();
    }
    if !keep("image_urls") {
        product.image_urls.clear();
    }
    if !keep("embedding") {
        product.embedding = Vec::new();
    }
    if !keep("status") {
        product.status = 0;
    }
    if !keep("create_time") {
        product.create_time = None;
    }
    if !keep("update_time") {
        product.update_time = None;
    }
    product
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product { id: "p".into(), name: "n".into(), embedding: vec![0.5; 4], status: 2, ..Default::default() }
    }

    #[test]
    fn no_mask_or_an_empty_one_leaves_out_only_the_embedding() {
        for mask in [None, Some(prost_types::FieldMask { paths: vec![] })] {
            let p = masked(product(), mask.as_ref());
            assert_eq!((p.id.as_str(), p.name.as_str(), p.embedding.len(), p.status), ("p", "n", 0, 2));
        }
        let full = prost_types::FieldMask { paths: vec!["name".into(), "embedding".into()] };
        let p = masked(product(), Some(&full));
        assert_eq!((p.id.as_str(), p.name.as_str(), p.embedding.len(), p.status), ("p", "n", 4, 0));
        assert!(check_mask(Some(&prost_types::FieldMask { paths: vec!["price".into(), "sku".into()] })).is_err());
    }
}
