//! Demo data for `soko serve --demo`: a few sellers and products so a newcomer has something to
//! list and search. Written through the domain, so the outbox sees it like any other write.
//!
//! Each demo product has a picture, drawn here (a colour pair and a pattern of its own) and
//! embedded with the configured image embedder, so visual search works on the demo: a photo of a
//! demo product (`soko demo photos DIR` writes them) finds that product first.

// Prices are written as major units then two minor digits: 2_500_00 is 2,500.00.
#![allow(clippy::inconsistent_digit_grouping)]

use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};

use crate::{
    domain::{
        Error,
        auth::RequestContext,
        catalog::Catalog,
        product::{ProductInput, ProductStatus, StatusInput},
    },
    embed::Embedder,
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

#[derive(Debug, Clone, Copy)]
enum Pattern {
    Horizontal,
    Vertical,
    Diagonal,
    Checks,
    Dots,
    Band,
}

use Pattern::{Band, Checks, Diagonal, Dots, Horizontal, Vertical};

/// Each product's picture: background, foreground and pattern, in the order of [`PRODUCTS`]. The
/// colours follow the product (brown leather, kente gold and green); every pair differs.
const LOOKS: &[([u8; 3], [u8; 3], Pattern)] = &[
    ([120, 72, 36], [200, 160, 110], Band),         // leather sandals
    ([235, 235, 225], [40, 70, 150], Horizontal),   // canvas sneakers
    ([200, 30, 40], [250, 250, 250], Dots),         // beaded sandals
    ([30, 30, 35], [60, 200, 120], Diagonal),       // running shoes
    ([240, 140, 20], [20, 60, 160], Checks),        // ankara
    ([230, 180, 20], [20, 120, 50], Vertical),      // kente gown
    ([30, 40, 110], [180, 200, 240], Dots),         // adire
    ([220, 210, 190], [160, 150, 130], Horizontal), // linen
    ([90, 30, 20], [140, 60, 40], Vertical),        // mahogany
    ([190, 160, 100], [120, 90, 50], Checks),       // rattan
    ([150, 100, 60], [60, 40, 25], Dots),           // carved stool
    ([170, 120, 70], [230, 200, 150], Horizontal),  // teak
    ([200, 200, 210], [110, 110, 130], Diagonal),   // silver
    ([250, 250, 250], [220, 40, 120], Checks),      // beaded necklace
    ([180, 140, 40], [90, 60, 10], Diagonal),       // brass
    ([250, 170, 30], [120, 60, 0], Band),           // amber
    ([60, 120, 60], [220, 190, 120], Vertical),     // kiondo
    ([20, 120, 50], [230, 180, 20], Horizontal),    // kente scarf
    ([50, 30, 20], [200, 170, 60], Band),           // belt
    ([240, 220, 150], [200, 40, 40], Band),         // sun hat
];

/// Side of the square demo pictures, in pixels.
pub const PICTURE_SIZE: u32 = 256;

/// The picture of demo product `index`; `None` past the last product.
pub fn picture(index: usize) -> Option<RgbImage> {
    let (background, foreground, pattern) = *LOOKS.get(index)?;
    Some(RgbImage::from_fn(PICTURE_SIZE, PICTURE_SIZE, |x, y| {
        let on = match pattern {
            Horizontal => (y / 32) % 2 == 0,
            Vertical => (x / 32) % 2 == 0,
            Diagonal => ((x + y) / 40) % 2 == 0,
            Checks => (x / 64 + y / 64) % 2 == 0,
            Dots => {
                let (dx, dy) = (i64::from(x % 64) - 32, i64::from(y % 64) - 32);
                dx * dx + dy * dy < 400
            }
            Band => (96..160).contains(&y),
        };
        Rgb(if on { foreground } else { background })
    }))
}

/// The picture of demo product `index` as PNG bytes.
pub fn picture_png(index: usize) -> Option<Vec<u8>> {
    let mut png = std::io::Cursor::new(Vec::new());
    picture(index)?.write_to(&mut png, ImageFormat::Png).ok()?;
    Some(png.into_inner())
}

/// Writes every demo product's picture into `dir` as `NN-name.png`; returns the paths.
pub fn write_pictures(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (i, (name, ..)) in PRODUCTS.iter().enumerate() {
        let slug: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let path = dir.join(format!("{i:02}-{slug}.png"));
        std::fs::write(&path, picture_png(i).expect("every product has a picture"))?;
        written.push(path);
    }
    Ok(written)
}

/// Adds the demo sellers and products unless the catalog already has products. Their embeddings
/// come from `embedder`, the one SearchByImage uses, so a photo finds its product.
/// Returns how many products were created.
pub async fn seed(catalog: &Catalog, embedder: &dyn Embedder) -> Result<usize, Error> {
    if catalog.db().count_products().await? > 0 {
        return Ok(0);
    }
    let ctx = RequestContext::system();
    let mut sellers = Vec::new();
    for name in SELLERS {
        sellers.push(catalog.create_seller(&ctx, name).await?);
    }
    for (i, (name, category, price, currency)) in PRODUCTS.iter().enumerate() {
        let photo = picture_png(i).expect("every product has a picture");
        let embedding = embedder
            .embed_image(photo)
            .await
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("embedding the demo picture of {name}: {e}")))?;
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
                    embedding,
                    status: Some(StatusInput::Known(ProductStatus::Active)),
                },
            )
            .await?;
    }
    Ok(PRODUCTS.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::builtin::BuiltinEmbedder;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// What a user sends is a photo of the picture, not the picture: JPEG, at another size.
    fn as_a_photo(index: usize) -> Vec<u8> {
        let resized =
            image::imageops::resize(&picture(index).unwrap(), 180, 180, image::imageops::FilterType::Triangle);
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 70).encode_image(&resized).unwrap();
        jpeg.into_inner()
    }

    #[test]
    fn every_demo_product_has_a_picture_and_its_photo_finds_it_first() {
        assert_eq!(LOOKS.len(), PRODUCTS.len());
        let embedder = BuiltinEmbedder::new(768);
        let catalog: Vec<Vec<f32>> =
            (0..PRODUCTS.len()).map(|i| embedder.embed_blocking(&picture_png(i).unwrap()).unwrap()).collect();
        for (i, (name, ..)) in PRODUCTS.iter().enumerate() {
            let query = embedder.embed_blocking(&as_a_photo(i)).unwrap();
            let mut ranked: Vec<(usize, f32)> = catalog.iter().map(|e| cosine(&query, e)).enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let found = PRODUCTS[ranked[0].0].0;
            assert_eq!(ranked[0].0, i, "a photo of {name} found {found} first: {ranked:?}");
        }
    }
}
