//! The storefront page (clients/web) on a port of its own, `SOKO_WEB_ADDR`: the files that
//! `npm run build:web` writes to `SOKO_WEB_DIR`, and `/config.json`, which tells the page where
//! the gRPC port is. The page calls Soko over grpc-web from the browser, so the page's origin must
//! be in `SOKO_CORS_ORIGINS` like any other web client's.

use std::path::PathBuf;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// `SOKO_WEB_ADDR`, `SOKO_WEB_DIR` and `SOKO_WEB_GRPC_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub addr: std::net::SocketAddr,
    pub dir: PathBuf,
    /// The gRPC port as the browser reaches it; by default the page's own host name with the
    /// gRPC port.
    pub grpc_url: Option<String>,
}

#[derive(Clone)]
struct Site {
    dir: PathBuf,
    grpc_url: Option<String>,
    grpc_port: u16,
}

pub fn router(config: &WebConfig, grpc_port: u16) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/config.json", get(site_config))
        .route("/{file}", get(file))
        .with_state(Site { dir: config.dir.clone(), grpc_url: config.grpc_url.clone(), grpc_port })
}

async fn index(State(site): State<Site>) -> Response {
    serve(&site, "index.html").await
}

async fn file(State(site): State<Site>, Path(name): Path<String>) -> Response {
    serve(&site, &name).await
}

async fn site_config(State(site): State<Site>, headers: HeaderMap) -> Response {
    let grpc_url = site.grpc_url.clone().unwrap_or_else(|| {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        format!("http://{name}:{}", site.grpc_port)
    });
    Json(serde_json::json!({ "grpcUrl": grpc_url })).into_response()
}

/// Files directly in the site's folder, by a plain name: no paths, so nothing outside it.
async fn serve(site: &Site, name: &str) -> Response {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    if !plain {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match tokio::fs::read(site.dir.join(name)).await {
        Ok(bytes) => {
            ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], bytes).into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, file = name, "storefront file unreadable");
            (StatusCode::INTERNAL_SERVER_ERROR, "unreadable\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, path: &str, host: &str) -> (StatusCode, String) {
        let request = http::Request::get(path).header(header::HOST, host).body(axum::body::Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_only_plain_files_of_its_folder_and_points_the_page_at_the_grpc_port() {
        let dir = std::env::temp_dir().join(format!("soko_web_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<h1>shop</h1>").unwrap();
        std::fs::write(dir.join("secret.env"), "JWT_SECRET=x").unwrap();
        let config = WebConfig { addr: "127.0.0.1:0".parse().unwrap(), dir: dir.clone(), grpc_url: None };
        let router = router(&config, 50051);
        assert_eq!(get(&router, "/", "shop.test:8080").await, (StatusCode::OK, "<h1>shop</h1>".into()));
        for refused in ["/secret.env", "/..%2FCargo.toml", "/.hidden.html", "/missing.js", "/a/b.js"] {
            assert_eq!(get(&router, refused, "shop.test").await.0, StatusCode::NOT_FOUND, "{refused}");
        }
        let (status, body) = get(&router, "/config.json", "shop.test:8080").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"grpcUrl":"http://shop.test:50051"}"#));
        let fixed = WebConfig { grpc_url: Some("https://api.shop.test".into()), ..config };
        let (_, body) = get(&super::router(&fixed, 50051), "/config.json", "shop.test").await;
        assert_eq!(body, r#"{"grpcUrl":"https://api.shop.test"}"#);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
