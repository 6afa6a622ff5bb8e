//! SearchByImage: the photo becomes a vector through the configured embedder, then the search is
//! exactly SearchByVector's (same filters, `top_k` and results).

use std::time::Instant;

use tracing::Instrument;

use super::{SearchEngine, VectorRequest, parse_filter, parse_top_k};
use crate::{
    domain::{Error, error::Violations, listing::FilterInput, product::Product},
    embed::{self, EmbedError, Embedder},
};

/// An image query as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct ImageRequest {
    pub image: Vec<u8>,
    pub top_k: i32,
    pub filter: FilterInput,
}

impl SearchEngine {
    /// The `top_k` active products whose embeddings are nearest to the image's, best first.
    pub async fn search_by_image(
        &self,
        embedder: &dyn Embedder,
        request: ImageRequest,
    ) -> Result<Vec<(Product, f32)>, Error> {
        self.require_ready()?;
        // Everything cheap first, so one answer names every bad field and no bad request costs
        // a decode.
        let mut v = Violations::default();
        v.check("image", embed::check_size(request.image.len()));
        parse_top_k(&mut v, request.top_k);
        parse_filter(&mut v, &request.filter);
        v.finish()?;

        let started = Instant::now();
        let span = tracing::info_span!("embed", otel.kind = "client", embedder = embedder.name());
        let embedded = embedder.embed_image(request.image).instrument(span).await;
        let outcome = match &embedded {
            Ok(_) => "ok",
            Err(EmbedError::InvalidImage(_)) => "invalid_image",
            Err(EmbedError::Unavailable(_)) => "unavailable",
            Err(EmbedError::Internal(_)) => "error",
            Err(EmbedError::Overloaded { .. }) => "overloaded",
        };
        metrics::histogram!("soko_image_embed_seconds", "embedder" => embedder.name(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let vector = embedded.map_err(|e| match e {
            EmbedError::InvalidImage(why) => Error::invalid("image", why),
            EmbedError::Unavailable(source) => Error::DependencyUnavailable { dependency: "image embedder", source },
            EmbedError::Internal(source) => Error::Unexpected(source),
            EmbedError::Overloaded { retry_after } => Error::Overloaded { work: "image searches", retry_after },
        })?;
        self.search_by_vector(&VectorRequest { vector, top_k: request.top_k, filter: request.filter }).await
    }
}
