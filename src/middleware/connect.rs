//! The Connect protocol's unary calls (https://connectrpc.com/docs/protocol), so any HTTP client
//! can call Soko: `curl -H 'content-type: application/json' -d '{...}' .../pkg.Service/Method`,
//! `buf curl --protocol connect`, connect-es. A Connect call is turned into the gRPC call it
//! stands for and sent through the same layers and services as every other call (limits,
//! authentication, logs), and the gRPC answer is turned back: the message as JSON or binary, or
//! a Connect error with the status's details. JSON is mapped with the contract's descriptors
//! (protobuf's canonical JSON mapping), so there is nothing per method to keep in step.
//! Streaming rpcs are not offered over Connect.

use std::{
    future::Future,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll},
};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use prost::bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use tonic::{Code, body::Body};
use tower::{Layer, Service};

static POOL: LazyLock<DescriptorPool> =
    LazyLock::new(|| DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).expect("the contract's descriptors"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
}

/// A Connect unary request: a POST whose content type is `application/json` or
/// `application/proto` (gRPC and grpc-web use `application/grpc*`).
fn connect_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next()?.trim();
    match essence {
        "application/json" => Some(Encoding::Json),
        "application/proto" => Some(Encoding::Proto),
        _ => None,
    }
}

fn method(path: &str) -> Option<MethodDescriptor> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let method = POOL.get_service_by_name(service)?.methods().find(|m| m.name() == method)?;
    (!method.is_client_streaming() && !method.is_server_streaming()).then_some(method)
}

#[derive(Clone)]
pub struct ConnectLayer {
    max_message_bytes: usize,
}

impl ConnectLayer {
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Connect { inner, max_message_bytes: self.max_message_bytes }
    }
}

#[derive(Clone)]
pub struct Connect<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S> Service<Request<Body>> for Connect<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let encoding = (request.method() == http::Method::POST).then(|| connect_encoding(request.headers())).flatten();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(encoding) = encoding else {
            return Box::pin(inner.call(request));
        };
        let limit = self.max_message_bytes;
        Box::pin(async move {
            let Some(method) = method(request.uri().path()) else {
                return Ok(error(Code::Unimplemented, "no such unary method for the Connect protocol", None));
            };
            let (parts, body) = request.into_parts();
            let bytes = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return Ok(error(
                        Code::ResourceExhausted,
                        &format!("the request is larger than {limit} bytes, or could not be read"),
                        None,
                    ));
                }
            };
            let message = match to_binary(encoding, &method, &bytes) {
                Ok(message) => message,
                Err(why) => return Ok(error(Code::InvalidArgument, &why, None)),
            };
            let mut framed = Vec::with_capacity(message.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
            framed.extend_from_slice(&message);
            let mut grpc = Request::from_parts(parts, Body::new(Full::new(Bytes::from(framed))));
            // gRPC is HTTP/2 only, and the grpc-web layer refuses plain gRPC over HTTP/1.1; the
            // connection's version means nothing to a call that never leaves the process.
            *grpc.version_mut() = http::Version::HTTP_2;
            let headers = grpc.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
            headers.remove(header::CONTENT_LENGTH);
            // Connect's deadline header, in milliseconds, becomes gRPC's.
            if let Some(ms) = headers.remove("connect-timeout-ms").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                && let Ok(value) = HeaderValue::from_str(&format!("{}m", ms.min(99_999_999)))
            {
                headers.insert("grpc-timeout", value);
            }
            let response = inner.call(grpc).await?;
            Ok(from_grpc(encoding, &method, response).await)
        })
    }
}

fn to_binary(encoding: Encoding, method: &MethodDescriptor, body: &[u8]) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Proto => Ok(body.to_vec()),
        Encoding::Json => {
            let body = if body.is_empty() { b"{}".as_slice() } else { body };
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            let message = DynamicMessage::deserialize(method.input(), &mut deserializer)
                .map_err(|e| format!("the request is not a valid {} in JSON: {e}", method.input().full_name()))?;
            deserializer.end().map_err(|e| format!("trailing data after the JSON request: {e}"))?;
            Ok(message.encode_to_vec())
        }
    }
}

/// The gRPC answer as a Connect answer.
async fn from_grpc(encoding: Encoding, method: &MethodDescriptor, response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(e) => return error(Code::Internal, &format!("reading the answer failed: {e}"), None),
    };
    // Trailers-only answers (most errors) carry the status in the headers.
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status_headers = if trailers.contains_key("grpc-status") { &trailers } else { &parts.headers };
    let status = tonic::Status::from_header_map(status_headers)
        .unwrap_or_else(|| tonic::Status::internal("the answer carried no gRPC status"));
    let mut passed = HeaderMap::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if !(n.starts_with("grpc-") || n == "content-type" || n == "content-length" || n == "trailer") {
            passed.append(name.clone(), value.clone());
        }
    }
    if status.code() != Code::Ok {
        let mut response = error(status.code(), status.message(), Some(status.details()));
        response.headers_mut().extend(passed);
        return response;
    }
    let data = collected.to_bytes();
    if data.len() < 5 {
        return error(Code::Internal, "the answer carried no message", None);
    }
    let data = data.slice(5..);
    let (content_type, body) = match encoding {
        Encoding::Proto => ("application/proto", data.to_vec()),
        Encoding::Json => match DynamicMessage::decode(method.output(), data).map(|m| serde_json::to_vec(&m)) {
            Ok(Ok(json)) => ("application/json", json),
            _ => return error(Code::Internal, "the answer could not be written as JSON", None),
        },
    };
    let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
    response.headers_mut().extend(passed);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A Connect error: the HTTP status the protocol assigns to the code, and a JSON body with the
/// code, the message and the status's `google.rpc` details, each as `{type, value}` with the value
/// in unpadded base64 as the protocol asks.
fn error(code: Code, message: &str, details: Option<&[u8]>) -> Response<Body> {
    let (http, name) = connect_code(code);
    let mut body = serde_json::json!({ "code": name, "message": message });
    if let Some(status) = details.and_then(|d| tonic_types::pb::Status::decode(d).ok()) {
        let details: Vec<_> = status
            .details
            .iter()
            .map(|any| {
                serde_json::json!({
                    "type": any.type_url.rsplit('/').next().unwrap_or_default(),
                    "value": STANDARD_NO_PAD.encode(&any.value),
                })
            })
            .collect();
        if !details.is_empty() {
            body["details"] = serde_json::Value::Array(details);
        }
    }
    let mut response = Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = http;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The Connect protocol's name and HTTP status for each code.
fn connect_code(code: Code) -> (StatusCode, &'static str) {
    let (status, name) = match code {
        Code::Ok => (200, "ok"),
        Code::Cancelled => (499, "canceled"),
        Code::Unknown => (500, "unknown"),
        Code::InvalidArgument => (400, "invalid_argument"),
        Code::DeadlineExceeded => (504, "deadline_exceeded"),
        Code::NotFound => (404, "not_found"),
        Code::AlreadyExists => (409, "already_exists"),
        Code::PermissionDenied => (403, "permission_denied"),
        Code::ResourceExhausted => (429, "resource_exhausted"),
        Code::FailedPrecondition => (400, "failed_precondition"),
        Code::Aborted => (409, "aborted"),
        Code::OutOfRange => (400, "out_of_range"),
        Code::Unimplemented => (501, "unimplemented"),
        Code::Internal => (500, "internal"),
        Code::Unavailable => (503, "unavailable"),
        Code::DataLoss => (500, "data_loss"),
        Code::Unauthenticated => (401, "unauthenticated"),
    };
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), name)
}
