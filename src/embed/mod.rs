//! Image embedders: turn a photo into a vector in the same space as product embeddings, so
//! SearchByImage can run the vector search SearchByVector runs.
//!
//! Two are built in, chosen by `SOKO_EMBEDDER`:
//! - [`builtin::BuiltinEmbedder`] (default): colour and texture features computed in-process, no
//!   model and no download. It is *not* semantic: it finds products whose photos have similar
//!   colours and textures, not "the same kind of thing".
//! - [`remote::RemoteEmbedder`]: calls a model server (`soko.embedder.v1.EmbedderService`), e.g. a
//!   SigLIP image tower; what production should use.
//!
//! Every image is checked here before any embedder sees its pixels: size, format by content,
//! and the dimensions its header declares, so a decompression bomb is refused before anything
//! is allocated for it.

pub mod builtin;
pub mod remote;

use std::{io::Cursor, sync::Arc};

use futures_util::future::BoxFuture;
use image::{ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::configuration::EmbedderConfig;

/// Largest accepted image, in bytes (10 MiB), as the SearchByImage contract states.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Largest accepted width or height, in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Largest accepted pixel count (40 megapixels: a 7300×5500 photo).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Largest decoded image in memory: 40 MP of 8-bit RGBA. A 16-bit image reaches it at 20 MP.
const MAX_DECODED_BYTES: u64 = MAX_PIXELS * 4;

/// Why an image could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The image is at fault (empty, too large, not JPEG/PNG/WebP, corrupt). The text is safe to
    /// show the caller and completes "the image …".
    #[error("the image {0}")]
    InvalidImage(String),
    /// The embedder can't answer now (model server down, slow or answering nonsense); the call
    /// may be retried later. The source is for the log, not the caller.
    #[error("the image embedder is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Too many images are queued for decoding to be done in time; retrying after
    /// `retry_after` is likely to be admitted.
    #[error("too many images are being decoded")]
    Overloaded { retry_after: std::time::Duration },
    /// A bug on our side, e.g. a panic while decoding.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// Turns images into embeddings of a fixed dimension.
///
/// Only images need one. Vectors that callers compute themselves (SearchByVector, HybridSearch,
/// product embeddings set through the catalog) go into the index as they are; they must come
/// from the same embedder as the images searched with, or the similarities mean nothing.
pub trait Embedder: Send + Sync {
    /// Short name for logs and metrics, e.g. `builtin` or `remote`.
    fn name(&self) -> &'static str;

    /// Length of every vector returned.
    fn dim(&self) -> usize;

    /// The embedding of an image: exactly [`dim`](Self::dim) finite values, not all zero.
    /// Images are checked with [`open`] first, whatever the implementation.
    fn embed_image(&self, image: Vec<u8>) -> BoxFuture<'_, Result<Vec<f32>, EmbedError>>;
}

/// The embedder the configuration asks for.
/// `max_wait` bounds how long a call waits for the builtin embedder's decoding slots.
pub fn from_config(
    config: &EmbedderConfig,
    dim: usize,
    max_wait: std::time::Duration,
) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(match config {
        EmbedderConfig::Builtin => Arc::new(builtin::BuiltinEmbedder::with_max_wait(dim, max_wait)),
        EmbedderConfig::Remote { url, timeout } => Arc::new(remote::RemoteEmbedder::new(&url.0, *timeout, dim)?),
    })
}

/// The size rule alone, cheap enough to check with the rest of a request before any decoding.
pub fn check_size(len: usize) -> Result<(), String> {
    match len {
        0 => Err("is required: the bytes of a JPEG, PNG or WebP file".into()),
        n if n > MAX_IMAGE_BYTES => Err(format!("is {n} bytes; at most {MAX_IMAGE_BYTES} bytes (10 MiB) are accepted")),
        _ => Ok(()),
    }
}

/// A decoder for `image` whose header has been read and found acceptable: the size rule, a
/// JPEG, PNG or WebP signature, and declared dimensions within [`MAX_SIDE`] and [`MAX_PIXELS`].
/// No pixel has been decoded yet, so a tiny file declaring 100000×100000 costs nothing.
pub fn open(image: &[u8]) -> Result<impl ImageDecoder + '_, EmbedError> {
    let invalid = |why: String| EmbedError::InvalidImage(why);
    check_size(image.len()).map_err(invalid)?;
    let mut reader = ImageReader::new(Cursor::new(image))
        .with_guessed_format()
        .map_err(|e| EmbedError::Internal(anyhow::Error::new(e).context("reading an in-memory image")))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(invalid(format!("is a {} file; only JPEG, PNG and WebP are accepted", format_name(other))));
        }
        None => return Err(invalid("is not a JPEG, PNG or WebP file".into())),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(refusal)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(invalid("has no pixels".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(invalid(format!("is {width}×{height} px; {}", too_large())));
    }
    if decoder.total_bytes() > MAX_DECODED_BYTES {
        return Err(invalid(format!("is {width}×{height} px at 16 bits per channel; {}", too_large())));
    }
    Ok(decoder)
}

fn too_large() -> String {
    format!("at most {MAX_SIDE} px per side and {} megapixels are accepted", MAX_PIXELS / 1_000_000)
}

/// What a decoding failure means for the caller.
fn refusal(e: ImageError) -> EmbedError {
    EmbedError::InvalidImage(match e {
        ImageError::Limits(_) => format!("declares dimensions that are too large; {}", too_large()),
        ImageError::Unsupported(_) => "uses a variant of its format that is not supported".into(),
        ImageError::Decoding(_) | ImageError::Parameter(_) | ImageError::IoError(_) => {
            "could not be decoded: it is corrupt or truncated".into()
        }
        other => {
            tracing::debug!(error = %other, "image refused");
            "could not be decoded".into()
        }
    })
}

fn format_name(format: ImageFormat) -> String {
    format.extensions_str().first().map_or_else(|| format!("{format:?}"), |ext| ext.to_ascii_uppercase())
}
