//! The codec of Soko's own services: prost's, except that a request whose bytes are not a valid
//! message (invalid UTF-8 in a string field, nesting past prost's recursion limit, a truncated
//! field) answers INVALID_ARGUMENT rather than prost's INTERNAL. The bytes came from the client,
//! so dashboards and error tracking must not count them as our failure (issue 24).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct SokoCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for SokoCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for SokoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { inner: ProstDecoder::new(BufferSettings::default()), inbound: is_request::<U>() }
    }
}

/// Whether `U` is a request message, so that the decoder runs on the server. The generated code
/// uses one codec path for servers and clients; a Rust client of these services decoding a
/// broken *response* must keep reporting INTERNAL. Every request message is named `…Request`
/// (buf's RPC_REQUEST_STANDARD_NAME rule, which `proto/` follows) and no response is.
fn is_request<U>() -> bool {
    std::any::type_name::<U>().ends_with("Request")
}

#[derive(Debug)]
pub struct RequestDecoder<U> {
    inner: ProstDecoder<U>,
    inbound: bool,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let inbound = self.inbound;
        self.inner.decode(buf).map_err(|status| {
            if inbound {
                Status::invalid_argument(format!("the request is not a valid protobuf message: {}", status.message()))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::catalog::{GetProductRequest, GetProductResponse};

    #[test]
    fn only_request_messages_count_as_inbound() {
        assert!(is_request::<GetProductRequest>());
        assert!(is_request::<crate::proto::grpc::health::v1::HealthCheckRequest>());
        assert!(!is_request::<GetProductResponse>());
    }
}
