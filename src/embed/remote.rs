//! The remote embedder: a model server implementing `soko.embedder.v1.EmbedderService`
//! (proto/soko/embedder/v1/embedder.proto), e.g. a SigLIP image tower.
//!
//! Whatever goes wrong on the far side (down, slow, overloaded, or answering a vector that is not
//! one) is the model server's problem, not the caller's: it becomes [`EmbedError::Unavailable`],
//! which callers see as UNAVAILABLE with retry advice and which is logged with the cause. Only
//! the model server saying INVALID_ARGUMENT about the image reaches the caller as a bad image.

use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use tonic::{Code, transport::Channel};

use super::{EmbedError, Embedder, open};
use crate::breaker::CircuitBreaker;
use crate::proto::soko::embedder::v1::{EmbedImageRequest, embedder_service_client::EmbedderServiceClient};

pub struct RemoteEmbedder {
    client: EmbedderServiceClient<Channel>,
    dim: usize,
    /// After repeated failures, image searches fail fast for a while instead of each waiting
    /// out the timeout on a model server that is down.
    breaker: CircuitBreaker,
}

/// Failures in a row that open the embedder's breaker, and how long it then stays open.
const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(5);

impl RemoteEmbedder {
    /// Connects lazily: a model server that is down at start-up only fails the image searches
    /// made while it is down, never the start.
    pub fn new(url: &str, timeout: Duration, dim: usize) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())
            .with_context(|| "SOKO_EMBEDDER_URL is not a valid URL".to_owned())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        let client = EmbedderServiceClient::new(channel).max_encoding_message_size(super::MAX_IMAGE_BYTES + 1024);
        Ok(Self { client, dim, breaker: CircuitBreaker::new("embedder", BREAKER_THRESHOLD, BREAKER_OPEN_FOR) })
    }
}

impl Embedder for RemoteEmbedder {
    fn name(&self) -> &'static str {
        "remote"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_image(&self, image: Vec<u8>) -> BoxFuture<'_, Result<Vec<f32>, EmbedError>> {
        Box::pin(async move {
            // The same refusals as the built-in embedder, before the model server sees anything.
            open(&image)?;
            if !self.breaker.allows() {
                return Err(EmbedError::Unavailable(anyhow::anyhow!(
                    "the image embedder's circuit breaker is open after repeated failures"
                )));
            }
            let mut request = tonic::Request::new(EmbedImageRequest { image });
            crate::telemetry::propagate(request.metadata_mut());
            let response = self.client.clone().embed_image(request).await;
            // A refused image is the image's fault, not the model server's.
            match &response {
                Err(status) if status.code() != Code::InvalidArgument => {
                    self.breaker.failed(status);
                }
                _ => {
                    self.breaker.succeeded();
                }
            }
            let vector = match response {
                Ok(response) => response.into_inner().vector,
                Err(status) if status.code() == Code::InvalidArgument => {
                    tracing::debug!(message = status.message(), "the image embedder refused an image");
                    return Err(EmbedError::InvalidImage("could not be decoded by the image model".into()));
                }
                Err(status) => {
                    return Err(EmbedError::Unavailable(anyhow::anyhow!(
                        "the image embedder answered {:?}: {}",
                        status.code(),
                        status.message()
                    )));
                }
            };
            // A vector the index can use: the configured dimension, finite, not all zero.
            let verdict = match crate::domain::product::parse_embedding(&vector, self.dim) {
                Ok(Some(_)) if vector.iter().any(|x| *x != 0.0) => Ok(vector),
                Ok(_) => Err("it is empty or all zeros".to_owned()),
                Err(why) => Err(why),
            };
            verdict.map_err(|why| {
                EmbedError::Unavailable(anyhow::anyhow!("the image embedder returned an invalid vector: {why}"))
            })
        })
    }
}
