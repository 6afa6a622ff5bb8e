//! The built-in image embedder: colour and texture features, computed in-process, so
//! SearchByImage works out of the box with no model to download or serve.
//!
//! It is not semantic. Two photos are close when their colours (an HSV histogram), the layout
//! of those colours (a coarse grid) and their edges (gradient orientations) are alike: a red
//! dress finds other red things before a blue dress. Production should use a remote SigLIP
//! embedder (`SOKO_EMBEDDER=remote`).
//!
//! The feature vector has [`FEATURES`] values. When the configured dimension is at least that,
//! the vector is zero-padded (lossless); when it is smaller (tests use 8), a fixed, seeded random
//! ±1 projection maps it down, which keeps cosine similarities approximately (Johnson–
//! Lindenstrauss). Either way the map is deterministic: product embeddings computed with this
//! embedder on one machine match queries on another.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use image::{DynamicImage, RgbaImage};

use super::{EmbedError, Embedder, open};
use crate::admission::Admission;

/// Images are reduced to fit this square before features are taken: enough for colour layout
/// and coarse texture, and cheap whatever the original size.
const THUMB: u32 = 96;

const HUE_BINS: usize = 12;
const SAT_BINS: usize = 2;
const VAL_BINS: usize = 3;
const GRAY_BINS: usize = 5;
const COLOUR: usize = HUE_BINS * SAT_BINS * VAL_BINS + GRAY_BINS;
const LAYOUT_GRID: usize = 4;
const LAYOUT: usize = LAYOUT_GRID * LAYOUT_GRID * 3;
const TEXTURE_GRID: usize = 2;
const ORIENTATIONS: usize = 8;
/// Per texture cell: one bin per edge orientation plus one for flat pixels.
const TEXTURE: usize = TEXTURE_GRID * TEXTURE_GRID * (ORIENTATIONS + 1);
/// Length of the raw feature vector.
pub const FEATURES: usize = COLOUR + LAYOUT + TEXTURE;

/// How much each block counts in the cosine: colour matters most, then where it is, then texture.
const WEIGHTS: [f32; 3] = [1.0, 0.8, 0.6];
/// A chroma (max − min of RGB) at or above this counts as fully coloured; below it the pixel
/// leans towards the gray bins, where hue means nothing.
const FULL_CHROMA: f32 = 0.2;
/// Gradient magnitude (Sobel on 0–1 luminance) above which a pixel is an edge.
const EDGE: f32 = 0.25;
/// Seed of the projection to small dimensions. Changing it changes every builtin embedding, so
/// product embeddings made with the old one would have to be recomputed.
const PROJECTION_SEED: u64 = 0x5083_0e3b_ed1e_2024;

/// Colour and texture features of images, at most a few decoding at once.
#[derive(Clone)]
pub struct BuiltinEmbedder {
    dim: usize,
    /// `dim × FEATURES`, row-major, when `dim < FEATURES`.
    projection: Option<Arc<[f32]>>,
    /// Decoding a 40-megapixel image takes a CPU for a while and up to 160 MB: bound how many
    /// run at once so big images can't take every blocking thread or the memory, and refuse at
    /// once what the queue could not decode in time ([`crate::admission`]).
    admission: Admission,
}

/// What a decode is assumed to take until one has been measured.
const EXPECTED_DECODE_TIME: Duration = Duration::from_millis(200);
/// The longest a call waits for a decoding slot when nothing else is configured.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);

impl BuiltinEmbedder {
    pub fn new(dim: usize) -> Self {
        Self::with_max_wait(dim, DEFAULT_MAX_WAIT)
    }

    /// A call waits at most `max_wait` (less when its deadline is nearer) for a decoding slot.
    pub fn with_max_wait(dim: usize, max_wait: Duration) -> Self {
        let projection = (dim < FEATURES).then(|| projection(dim));
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        let admission = Admission::new("image_embed", cores.clamp(1, 4), max_wait, EXPECTED_DECODE_TIME);
        Self { dim, projection, admission }
    }

    /// The embedding of an image, computed on the calling thread (blocking; tests and tools use
    /// it to make product embeddings that match SearchByImage).
    pub fn embed_blocking(&self, image: &[u8]) -> Result<Vec<f32>, EmbedError> {
        let decoder = open(image)?;
        let decoded = DynamicImage::from_decoder(decoder).map_err(super::refusal)?;
        Ok(self.project(features(&decoded)))
    }

    fn project(&self, features: Vec<f32>) -> Vec<f32> {
        let mut out = match &self.projection {
            None => {
                let mut v = features;
                v.resize(self.dim, 0.0);
                v
            }
            Some(matrix) => matrix.chunks_exact(FEATURES).map(|row| dot(row, &features)).collect(),
        };
        normalize(&mut out);
        if out.iter().all(|x| *x == 0.0) {
            // Only possible if a projection row cancels exactly; any fixed unit vector will do.
            out[0] = 1.0;
        }
        out
    }
}

impl Embedder for BuiltinEmbedder {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_image(&self, image: Vec<u8>) -> BoxFuture<'_, Result<Vec<f32>, EmbedError>> {
        Box::pin(async move {
            // The slot goes with the work: a caller that gives up does not free it early.
            let admitted = self
                .admission
                .admit()
                .await
                .map_err(|refused| EmbedError::Overloaded { retry_after: refused.retry_after })?;
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                let _admitted = admitted;
                this.embed_blocking(&image)
            })
            .await
            .map_err(|e| EmbedError::Internal(anyhow::anyhow!("image embedding task failed: {e}")))?
        })
    }
}

/// The raw feature vector of an image: colour histogram, colour layout and edge orientations,
/// each block L2-normalised and weighted, the whole normalised.
pub fn features(image: &DynamicImage) -> Vec<f32> {
    let small = if image.width() > THUMB || image.height() > THUMB {
        image.thumbnail(THUMB, THUMB).to_rgba8()
    } else {
        image.to_rgba8()
    };
    let pixels = on_white(&small);
    let (w, h) = (small.width() as usize, small.height() as usize);
    let mut blocks = [colour_histogram(&pixels), colour_layout(&pixels, w, h), texture(&pixels, w, h)];
    let mut out = Vec::with_capacity(FEATURES);
    for (block, weight) in blocks.iter_mut().zip(WEIGHTS) {
        normalize(block);
        out.extend(block.iter().map(|x| x * weight));
    }
    normalize(&mut out);
    out
}

/// RGB in 0–1, with transparent pixels composited onto white (how shops show cut-out photos).
fn on_white(image: &RgbaImage) -> Vec<[f32; 3]> {
    image
        .pixels()
        .map(|p| {
            let alpha = f32::from(p[3]) / 255.0;
            std::array::from_fn(|c| f32::from(p[c]) / 255.0 * alpha + (1.0 - alpha))
        })
        .collect()
}

/// Hue × saturation × value for coloured pixels, value alone for grays. Bins are soft (each value
/// splits between its two nearest bins, hue around the circle), so a red at hue 359° and one at
/// 1° land in the same bins rather than in unrelated ones. Square-rooted (Hellinger), so one
/// dominant colour does not drown the rest.
fn colour_histogram(pixels: &[[f32; 3]]) -> Vec<f32> {
    let mut hist = vec![0.0f32; COLOUR];
    for &[r, g, b] in pixels {
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let chroma = max - min;
        let coloured = (chroma / FULL_CHROMA).min(1.0);
        let value = max;
        if coloured > 0.0 {
            let hue = if max == r {
                ((g - b) / chroma).rem_euclid(6.0)
            } else if max == g {
                (b - r) / chroma + 2.0
            } else {
                (r - g) / chroma + 4.0
            } / 6.0;
            let saturation = if max > 0.0 { chroma / max } else { 0.0 };
            for (hb, hw) in soft_bin(hue, HUE_BINS, true) {
                for (sb, sw) in soft_bin(saturation, SAT_BINS, false) {
                    for (vb, vw) in soft_bin(value, VAL_BINS, false) {
                        hist[(hb * SAT_BINS + sb) * VAL_BINS + vb] += coloured * hw * sw * vw;
                    }
                }
            }
        }
        for (vb, vw) in soft_bin(value, GRAY_BINS, false) {
            hist[HUE_BINS * SAT_BINS * VAL_BINS + vb] += (1.0 - coloured) * vw;
        }
    }
    let n = pixels.len().max(1) as f32;
    hist.iter_mut().for_each(|x| *x = (*x / n).sqrt());
    hist
}

/// Mean colour of each cell of a coarse grid, in an opponent colour space (red–green,
/// yellow–blue, brightness centred on mid-gray), so "red on top, white below" differs from the
/// reverse and a dark image differs from a light one.
fn colour_layout(pixels: &[[f32; 3]], w: usize, h: usize) -> Vec<f32> {
    let mut sums = vec![[0.0f32; 4]; LAYOUT_GRID * LAYOUT_GRID];
    for (i, &[r, g, b]) in pixels.iter().enumerate() {
        let cell = cell_of(i % w, i / w, w, h, LAYOUT_GRID);
        let s = &mut sums[cell];
        s[0] += (r - g) / std::f32::consts::SQRT_2;
        s[1] += (r + g - 2.0 * b) / 6f32.sqrt();
        s[2] += (r + g + b - 1.5) / 3f32.sqrt();
        s[3] += 1.0;
    }
    sums.iter().flat_map(|s| (0..3).map(move |c| if s[3] > 0.0 { s[c] / s[3] } else { 0.0 })).collect()
}

/// Per cell of a 2×2 grid: the share of pixels that are edges, by edge orientation (unsigned,
/// soft-binned), and the share that are flat. Square-rooted like the colour histogram.
fn texture(pixels: &[[f32; 3]], w: usize, h: usize) -> Vec<f32> {
    let luma: Vec<f32> = pixels.iter().map(|&[r, g, b]| 0.299 * r + 0.587 * g + 0.114 * b).collect();
    let at = |x: isize, y: isize| luma[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize];
    let mut hist = vec![0.0f32; TEXTURE];
    let mut counts = [0.0f32; TEXTURE_GRID * TEXTURE_GRID];
    for y in 0..h {
        for x in 0..w {
            let (xi, yi) = (x as isize, y as isize);
            let gx = (at(xi + 1, yi - 1) + 2.0 * at(xi + 1, yi) + at(xi + 1, yi + 1))
                - (at(xi - 1, yi - 1) + 2.0 * at(xi - 1, yi) + at(xi - 1, yi + 1));
            let gy = (at(xi - 1, yi + 1) + 2.0 * at(xi, yi + 1) + at(xi + 1, yi + 1))
                - (at(xi - 1, yi - 1) + 2.0 * at(xi, yi - 1) + at(xi + 1, yi - 1));
            let cell = cell_of(x, y, w, h, TEXTURE_GRID);
            let base = cell * (ORIENTATIONS + 1);
            counts[cell] += 1.0;
            if gx.hypot(gy) > EDGE {
                let angle = gy.atan2(gx).rem_euclid(std::f32::consts::PI) / std::f32::consts::PI;
                for (bin, weight) in soft_bin(angle, ORIENTATIONS, true) {
                    hist[base + bin] += weight;
                }
            } else {
                hist[base + ORIENTATIONS] += 1.0;
            }
        }
    }
    for (cell, count) in counts.iter().enumerate() {
        let base = cell * (ORIENTATIONS + 1);
        for x in &mut hist[base..base + ORIENTATIONS + 1] {
            *x = (*x / count.max(1.0)).sqrt();
        }
    }
    hist
}

/// Which cell of a `grid × grid` division of a `w × h` image holds pixel (x, y).
fn cell_of(x: usize, y: usize, w: usize, h: usize, grid: usize) -> usize {
    (y * grid / h) * grid + x * grid / w
}

/// Splits a value in 0–1 between its two nearest of `bins` bins (bin centres at (i + ½) / bins),
/// linearly; circular values wrap around, others clamp at the ends.
fn soft_bin(value: f32, bins: usize, circular: bool) -> [(usize, f32); 2] {
    let pos = value.clamp(0.0, 1.0) * bins as f32 - 0.5;
    let lower = pos.floor();
    let frac = pos - lower;
    let lower = lower as isize;
    let index = |i: isize| {
        if circular { i.rem_euclid(bins as isize) as usize } else { i.clamp(0, bins as isize - 1) as usize }
    };
    [(index(lower), 1.0 - frac), (index(lower + 1), frac)]
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A `dim × FEATURES` matrix of ±1/√dim from a fixed seed (splitmix64).
fn projection(dim: usize) -> Arc<[f32]> {
    let scale = 1.0 / (dim as f32).sqrt();
    let mut state = PROJECTION_SEED;
    let mut bits = 0u64;
    (0..dim * FEATURES)
        .map(|i| {
            if i % 64 == 0 {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                bits = z ^ (z >> 31);
            }
            if bits >> (i % 64) & 1 == 1 { scale } else { -scale }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{ImageFormat, Rgb, RgbImage};

    use super::*;
    use crate::embed::{MAX_IMAGE_BYTES, MAX_PIXELS, MAX_SIDE};

    fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A 160×120 photo-like image: a background colour with a darker stripe and some noise.
    fn photo(base: [u8; 3], seed: u32) -> RgbImage {
        RgbImage::from_fn(160, 120, |x, y| {
            let noise = ((x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(101)) % 23) as u8;
            let stripe = if (40..60).contains(&y) { 60 } else { 0 };
            Rgb(base.map(|c| c.saturating_sub(stripe).saturating_add(noise)))
        })
    }

    /// A decompression bomb: a PNG of a few kilobytes declaring `width × height` RGB pixels,
    /// whose data is a zlib stream of zeros (it would inflate to width × height × 3 bytes).
    fn png_bomb(width: u32, height: u32) -> Vec<u8> {
        use std::io::Write;
        fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            png.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            png.extend(kind);
            png.extend(data);
            png.extend(crc.sum().to_be_bytes());
        }
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut zeros = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        zeros.write_all(&vec![0u8; 1 << 20]).unwrap();
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"IDAT", &zeros.finish().unwrap());
        chunk(&mut png, b"IEND", &[]);
        png
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors_of_the_configured_dimension() {
        let png = encode(&photo([200, 30, 40], 1), ImageFormat::Png);
        for dim in [2, 8, 64, FEATURES, 768] {
            let embedder = BuiltinEmbedder::new(dim);
            let a = embedder.embed_blocking(&png).unwrap();
            let b = BuiltinEmbedder::new(dim).embed_blocking(&png).unwrap();
            assert_eq!(a, b, "dim {dim}");
            assert_eq!(a.len(), dim);
            assert!(a.iter().all(|x| x.is_finite()));
            assert!((dot(&a, &a) - 1.0).abs() < 1e-4, "dim {dim}");
        }
    }

    #[test]
    fn similar_colours_are_closer_than_different_ones_in_every_dimension() {
        let red = encode(&photo([200, 30, 40], 1), ImageFormat::Png);
        let other_red = encode(&photo([215, 45, 35], 2), ImageFormat::Jpeg);
        let blue = encode(&photo([30, 50, 200], 3), ImageFormat::Png);
        for dim in [8, 768] {
            let e = BuiltinEmbedder::new(dim);
            let (red, other_red, blue) = (
                e.embed_blocking(&red).unwrap(),
                e.embed_blocking(&other_red).unwrap(),
                e.embed_blocking(&blue).unwrap(),
            );
            let (same, different) = (cosine(&red, &other_red), cosine(&red, &blue));
            assert!(same > different + 0.1, "dim {dim}: red~red {same}, red~blue {different}");
        }
    }

    #[test]
    fn hue_wraps_around_so_reds_on_both_sides_of_zero_match() {
        let below = features(&DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([220, 20, 35]))));
        let above = features(&DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([220, 35, 20]))));
        let green = features(&DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([20, 220, 35]))));
        assert!(cosine(&below, &above) > 0.95, "{}", cosine(&below, &above));
        assert!(cosine(&below, &green) < 0.8);
    }

    #[test]
    fn formats_are_detected_by_content() {
        let e = BuiltinEmbedder::new(8);
        let image = photo([10, 120, 60], 4);
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP] {
            assert!(e.embed_blocking(&encode(&image, format)).is_ok(), "{format:?}");
        }
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
        let err = e.embed_blocking(&gif).unwrap_err().to_string();
        assert!(err.contains("GIF") && err.contains("only JPEG, PNG and WebP"), "{err}");
        let err = e.embed_blocking(b"hello, this is not an image at all").unwrap_err().to_string();
        assert!(err.contains("not a JPEG, PNG or WebP"), "{err}");
    }

    #[test]
    fn size_dimension_and_pixel_limits_are_enforced_before_decoding() {
        let e = BuiltinEmbedder::new(8);
        let invalid = |bytes: &[u8]| match e.embed_blocking(bytes) {
            Err(EmbedError::InvalidImage(why)) => why,
            other => panic!("expected an invalid image, got {other:?}"),
        };
        assert!(invalid(&[]).contains("required"));
        assert!(invalid(&vec![0u8; MAX_IMAGE_BYTES + 1]).contains("at most 10485760 bytes"));
        // A few dozen bytes declaring ten billion pixels: refused from the header, at once.
        let started = std::time::Instant::now();
        let bomb = png_bomb(100_000, 100_000);
        assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
        let why = invalid(&bomb);
        assert!(why.contains("at most 8192 px per side"), "{why}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        // Within the per-side limit but over the pixel limit.
        assert!(MAX_SIDE * MAX_SIDE > MAX_PIXELS as u32);
        let why = invalid(&png_bomb(8000, 6000));
        assert!(why.contains("8000×6000") && why.contains("40 megapixels"), "{why}");
        // A real image cut short.
        let png = encode(&photo([1, 2, 3], 5), ImageFormat::Png);
        assert!(invalid(&png[..png.len() / 2]).contains("corrupt or truncated"));
    }

    #[test]
    fn transparent_pixels_count_as_white() {
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(8, 8, image::Rgba([0, 0, 0, 0])));
        let white = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([255, 255, 255])));
        assert!(cosine(&features(&clear), &features(&white)) > 0.999);
    }
}
