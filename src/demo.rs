//! Demo data for `soko serve --demo`: a few sellers and products so a newcomer has something to
//! list and search. Written through the domain, so the outbox sees it like any other write.

// Prices are written as major units then two minor digits: 2_500_00 is 2,500.00.
#![allow(clippy::inconsistent_digit_grouping)]

use crate::domain::{
    Error,
    auth::RequestContext,
    catalog::Catalog,
    product::{ProductInput, ProductStatus, StatusInput},
};

const SELLERS: &[&str] = &["Nairobi Kicks", "Lagos Looms", "Accra Woodworks", "Kigali Gems"];

/// (name, category, price in minor units, currency)
const PRODUCTS: &[(&str, &str, i64, &str)] = &[
    ("Leather sandals", "shoes", 2_500_00, "KES"),
    ("Canvas sneakers", "shoes", 4_800_00, "KES"),
    ("Maasai beaded sandals", "shoes", 3_200_00, "KES"),
    ("Running shoes", "shoes", 9_900_00, "KES"),
    ("Ankara wrap dress", "dresses", 18_000_00, "NGN"),
    ("Kente evening gown", "dresses", 65_000_00, "NGN"),
    ("Adire maxi dress", "dresses", 24_500_00, "NGN"),
    ("Linen summer dress", "dresses", 15_000_00, "NGN"),
    ("Mahogany coffee table", "furniture", 2_400_00, "GHS"),
    ("Woven rattan chair", "furniture", 950_00, "GHS"),
    ("Carved stool", "furniture", 480_00, "GHS"),
    ("Teak bookshelf", "furniture", 3_100_00, "GHS"),
    ("Silver filigree earrings", "jewelry", 45_000_00, "RWF"),
    ("Beaded necklace", "jewelry", 12_000_00, "RWF"),
    ("Brass cuff bracelet", "jewelry", 18_500_00, "RWF"),
    ("Amber pendant", "jewelry", 60_000_00, "RWF"),
    ("Kiondo basket bag", "accessories", 3_500_00, "KES"),
    ("Kente scarf", "accessories", 8_000_00, "NGN"),
    ("Leather belt", "accessories", 2_200_00, "KES"),
    ("Straw sun hat", "accessories", 1_800_00, "KES"),
];

/// Adds the demo sellers and products unless the catalog already has products.
/// Returns how many products were created.
pub async fn seed(catalog: &Catalog, embedding_dim: usize) -> Result<usize, Error> {
    if catalog.db().count_products().await? > 0 {
        return Ok(0);
    }
    let ctx = RequestContext::system();
    let mut sellers = Vec::new();
    for name in SELLERS {
        sellers.push(catalog.create_seller(&ctx, name).await?);
    }
    for (i, (name, category, price, currency)) in PRODUCTS.iter().enumerate() {
        catalog
            .create_product(
                &ctx,
                ProductInput {
                    name: (*name).to_owned(),
                    description: format!(
                        "{name}, handmade and shipped from {}.",
                        sellers[i % sellers.len()].display_name
                    ),
                    price: Some((*price, (*currency).to_owned())),
                    category_id: (*category).to_owned(),
                    seller_id: sellers[i % sellers.len()].id.to_string(),
                    image_urls: vec![format!("https://images.soko.example/demo/{i}.webp")],
                    embedding: demo_embedding(i as u64, embedding_dim),
                    status: Some(StatusInput::Known(ProductStatus::Active)),
                },
            )
            .await?;
    }
    Ok(PRODUCTS.len())
}

/// A deterministic unit vector per product (xorshift), so visual search has something to rank.
fn demo_embedding(seed: u64, dim: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}
