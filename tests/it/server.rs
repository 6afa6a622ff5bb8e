//! The server's standard surfaces: health, reflection, grpc-web with CORS, the ops port and
//! request ids. These don't depend on the SQL backend, so they run on the embedded default.

use crate::common;

use std::time::Duration;

use common::{Backend, http, spawn_app, spawn_app_with};
use futures_util::StreamExt;
use prost::Message;
use soko::proto::{
    catalog as pb,
    grpc::health::v1::{
        HealthCheckRequest, HealthListRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
};
use tonic::Code;

const SERVICES: [&str; 4] = [
    "soko.catalog.v1.CatalogService",
    "soko.search.v1.SearchService",
    "soko.auth.v1.AuthService",
    "soko.admin.v1.AdminService",
];

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = client.check(HealthCheckRequest { service: service.into() }).await?;
    Ok(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_overall_and_per_service_status() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut health = HealthClient::new(app.channel.clone());
    assert_eq!(check(&mut health, "").await.unwrap(), ServingStatus::Serving);
    for service in [SERVICES[0], SERVICES[2], SERVICES[3]] {
        assert_eq!(check(&mut health, service).await.unwrap(), ServingStatus::Serving, "{service}");
    }
    // Search serves once its index has caught up with the outbox: moments after start.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while check(&mut health, SERVICES[1]).await.unwrap() != ServingStatus::Serving {
        assert!(std::time::Instant::now() < deadline, "search never became SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = check(&mut health, "no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let listed = health.list(HealthListRequest {}).await.unwrap().into_inner().statuses;
    let mut names: Vec<&str> = listed.keys().map(String::as_str).collect();
    names.sort();
    let mut expected = vec![""];
    expected.extend(SERVICES);
    expected.sort();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_streams_service_unknown_without_ending() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut stream = health.watch(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap().into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    assert!(tokio::time::timeout(Duration::from_millis(300), stream.next()).await.is_err(), "the stream stays open");

    let mut overall = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(overall.next().await.unwrap().unwrap().status(), ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_outside_the_contract_answer_unimplemented() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in ["/soko.catalog.v1.CatalogService/NoSuchMethod", "/soko.nothing.v1.NoService/Get"] {
        let mut grpc = tonic::client::Grpc::new(app.channel.clone());
        grpc.ready().await.expect("ready");
        let codec = tonic_prost::ProstCodec::<pb::ListCategoriesRequest, pb::ListCategoriesResponse>::default();
        let err = grpc
            .unary(
                tonic::Request::new(pb::ListCategoriesRequest::default()),
                ::http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .expect_err(path);
        assert_eq!(err.code(), Code::Unimplemented, "{path}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app(Backend::Sqlite).await;
    let mut expected: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    expected.push("grpc.health.v1.Health".into());

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        client.server_reflection_info(futures_util::stream::iter([request])).await.unwrap().into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in &expected {
        assert!(names.contains(service), "v1 lists {service}: {names:?}");
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let requests = [
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        },
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "soko.catalog.v1.CatalogService".into(),
            )),
        },
    ];
    let mut responses = client.server_reflection_info(futures_util::stream::iter(requests)).await.unwrap().into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in &expected {
        assert!(names.contains(service), "v1alpha lists {service}: {names:?}");
    }
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a file descriptor")
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "soko.catalog.v1");
    let docs = file.source_code_info.unwrap().location.iter().filter(|l| l.leading_comments.is_some()).count();
    assert!(docs > 50, "reflection carries the proto's documentation ({docs} comments)");
}

const ORIGIN: &str = "https://shop.soko.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http1_succeeds_and_reports_errors_in_trailers() {
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_CORS_ORIGINS", ORIGIN)]).await;
    let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1"), ("origin", ORIGIN)];
    let body = http::grpc_frame(&pb::ListCategoriesRequest {}.encode_to_vec());
    let response =
        http::request(app.grpc_addr, "POST", "/soko.catalog.v1.CatalogService/ListCategories", &headers, &body).await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("application/grpc-web"));
    assert_eq!(response.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = response.header("access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(header), "{header} is exposed: {exposed}");
    }
    let (messages, trailers) = http::grpc_web_frames(&response.body);
    let listed = pb::ListCategoriesResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(listed.categories.len(), 5);
    assert!(trailers.contains(&("grpc-status".into(), "0".into())), "{trailers:?}");

    // An error travels as a grpc-web status with its rich details.
    let body =
        http::grpc_frame(&pb::GetProductRequest { id: "not-an-id".into(), ..Default::default() }.encode_to_vec());
    let response =
        http::request(app.grpc_addr, "POST", "/soko.catalog.v1.CatalogService/GetProduct", &headers, &body).await;
    assert_eq!(response.status, 200);
    let status = response.header("grpc-status").map(str::to_owned).or_else(|| {
        http::grpc_web_frames(&response.body).1.into_iter().find(|(k, _)| k == "grpc-status").map(|(_, v)| v)
    });
    assert_eq!(status.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_honours_the_allow_list() {
    let app =
        spawn_app_with(Backend::Sqlite, &[("SOKO_CORS_ORIGINS", &format!("{ORIGIN},http://localhost:5173"))]).await;
    let preflight = |origin: &'static str| {
        let addr = app.grpc_addr;
        async move {
            http::request(
                addr,
                "OPTIONS",
                "/soko.catalog.v1.CatalogService/ListProducts",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type,x-grpc-web,authorization"),
                ],
                b"",
            )
            .await
        }
    };
    let allowed = preflight(ORIGIN).await;
    assert!(allowed.status < 300, "{}", allowed.status);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ORIGIN));
    let methods = allowed.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"));
    let allowed_headers = allowed.header("access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(allowed_headers.contains("x-grpc-web") && allowed_headers.contains("authorization"));
    assert_eq!(
        preflight("http://localhost:5173").await.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );

    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_port_serves_liveness_and_readiness_with_latency() {
    let app = spawn_app(Backend::Sqlite).await;
    let live = http::request(app.ops_addr, "GET", "/health", &[], b"").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.header("x-content-type-options"), Some("nosniff"));

    let ready = http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    assert_eq!(ready.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["database"]["backend"], "sqlite");
    assert!(body["checks"]["database"]["latency_ms"].as_f64().unwrap() >= 0.0);

    assert_eq!(http::request(app.ops_addr, "GET", "/nope", &[], b"").await.status, 404);
}

/// Which build answers, in every place an operator looks (issue 25): `soko --version`,
/// `/health/ready` and the `soko_build_info` metric agree on version and commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_says_its_version_and_commit_everywhere() {
    let commit = soko::build_info::GIT_COMMIT;
    // A checkout without git (an exported tarball) builds as "unknown".
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if std::env::var("SOKO_GIT_COMMIT").is_err() {
        assert_eq!(commit, head, "built from this checkout's HEAD");
    }

    let version = std::process::Command::new(env!("CARGO_BIN_EXE_soko")).arg("--version").output().unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    assert_eq!(version.trim(), format!("soko {} ({commit})", env!("CARGO_PKG_VERSION")));

    let app = spawn_app(Backend::Sqlite).await;
    let ready = http::request(app.ops_addr, "GET", "/health/ready", &[], b"").await;
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["commit"], commit);

    let metrics = String::from_utf8(http::request(app.ops_addr, "GET", "/metrics", &[], b"").await.body).unwrap();
    let line = format!("soko_build_info{{version=\"{}\",commit=\"{commit}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = app.catalog.clone();
    let mut request = tonic::Request::new(pb::ListCategoriesRequest {});
    request.metadata_mut().insert("x-request-id", "trace-abc-123".parse().unwrap());
    let response = client.list_categories(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "trace-abc-123");

    let response = client.list_categories(pb::ListCategoriesRequest {}).await.unwrap();
    let generated = response.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");

    // Errors carry the id too, so a user can quote it to support.
    let mut request = tonic::Request::new(pb::GetProductRequest { id: "bad".into(), ..Default::default() });
    request.metadata_mut().insert("x-request-id", "err-req-1".parse().unwrap());
    let err = client.get_product(request).await.unwrap_err();
    assert_eq!(err.metadata().get("x-request-id").unwrap(), "err-req-1");
}

/// The per-call log line answers the on-call questions (issue 25): who called, from where, what
/// failed and why, at a level that follows the outcome, with the request id and method once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_calls_log_line_names_caller_peer_and_error_once() {
    let mut soko = common::process::SokoProcess::start(&[]).await;
    let channel = soko.channel().await;
    let registered = soko::proto::soko::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone())
        .register(soko::proto::soko::auth::v1::RegisterRequest {
            email: "logged@example.com".into(),
            password: "password-123".into(),
            role: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let user_id = registered.user.unwrap().id;
    let token = registered.tokens.unwrap().access_token;
    let mut catalog = soko::proto::catalog::catalog_service_client::CatalogServiceClient::with_interceptor(
        channel.clone(),
        common::Bearer::new(Some(&token)),
    );
    catalog.list_categories(pb::ListCategoriesRequest {}).await.unwrap();
    let bad =
        catalog.get_product(pb::GetProductRequest { id: "not-an-id".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    soko.stop();

    let lines = soko.lines();
    let finished = |method: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "rpc finished" && l["span"]["method"] == method)
            .unwrap_or_else(|| panic!("no line for {method} in {lines:#?}"))
            .clone()
    };
    let ok = finished("/soko.catalog.v1.CatalogService/ListCategories");
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["status"], "OK", "the canonical name, as in the metrics");
    assert_eq!(ok["caller"], format!("user:{user_id}"), "{ok}");
    assert!(ok["span"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{ok}");
    assert!(ok.get("error").is_none(), "no error on success: {ok}");
    // Printed once: on the span, not again on the event.
    assert!(ok.get("request_id").is_none() && ok.get("method").is_none(), "{ok}");
    assert!(ok["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    let refused = finished("/soko.catalog.v1.CatalogService/GetProduct");
    assert_eq!(refused["level"], "INFO", "a client's bad input is not our failure: {refused}");
    assert_eq!(refused["status"], "INVALID_ARGUMENT");
    assert_eq!(refused["error"], bad.message(), "{refused}");
    let line = refused.to_string();
    assert!(!line.contains(&token) && !line.contains("password-123"), "no secrets: {line}");
}

/// A client that goes away halfway through sending its request is the client's doing: counted
/// and logged as CANCELLED at INFO, not as an UNKNOWN server failure at ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_request_is_cancelled_not_a_server_error() {
    let mut soko = common::process::SokoProcess::start(&[]).await;
    let tcp = tokio::net::TcpStream::connect(soko.grpc).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = ::http::Request::post(format!("http://{}/soko.catalog.v1.CatalogService/GetProduct", soko.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (_response, mut body) = client.send_request(request, false).unwrap();
    // A frame header announcing 100 bytes, and then nothing: the server waits in the body.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2]), false).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop((client, body));
    connection.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let metrics = soko.metrics().await;
    let get = "method=\"/soko.catalog.v1.CatalogService/GetProduct\"";
    let counted = |code: &str| metrics.lines().any(|l| l.contains(get) && l.contains(&format!("code=\"{code}\"")));
    assert!(counted("CANCELLED") && !counted("UNKNOWN"), "{metrics}");
    soko.stop();
    let lines = soko.lines();
    let line = lines.iter().find(|l| l["message"] == "rpc finished").expect("the call's line");
    assert_eq!((line["level"].as_str(), line["status"].as_str()), (Some("INFO"), Some("CANCELLED")), "{line}");
}

/// A busy server may log one successful call in N; failures are always logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_calls_can_be_sampled_and_failures_never_are() {
    let mut soko = common::process::SokoProcess::start(&[("SOKO_LOG_SUCCESS_EVERY", "3")]).await;
    let mut catalog = soko::proto::catalog::catalog_service_client::CatalogServiceClient::new(soko.channel().await);
    for _ in 0..9 {
        catalog.list_categories(pb::ListCategoriesRequest {}).await.unwrap();
    }
    for _ in 0..2 {
        let request = pb::GetProductRequest { id: "not-an-id".into(), ..Default::default() };
        catalog.get_product(request).await.unwrap_err();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    soko.stop();
    let lines = soko.lines();
    let count = |status: &str| lines.iter().filter(|l| l["message"] == "rpc finished" && l["status"] == status).count();
    assert_eq!((count("OK"), count("INVALID_ARGUMENT")), (3, 2), "{lines:#?}");
}

/// Every metric the alert rules in `deploy/prometheus/soko-rules.yml` read is one the server
/// exports under that name, with the labels the rules select on; and every call is counted by
/// method and code, with its latency in buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_read_metrics_the_server_exports() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut catalog = app.catalog_as(None);
    catalog.list_categories(pb::ListCategoriesRequest::default()).await.expect("a call that succeeds");
    let missing =
        catalog.get_product(pb::GetProductRequest { id: uuid::Uuid::nil().to_string(), ..Default::default() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    // Metrics of the search follower appear after its first catch-up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = String::from_utf8(http::request(app.ops_addr, "GET", "/metrics", &[], b"").await.body).unwrap();

    let list = "/soko.catalog.v1.CatalogService/ListCategories";
    let get = "/soko.catalog.v1.CatalogService/GetProduct";
    for wanted in [
        format!("soko_grpc_server_handled_total{{method=\"{list}\",code=\"OK\"}}"),
        format!("soko_grpc_server_handled_total{{method=\"{get}\",code=\"NOT_FOUND\"}}"),
        format!("soko_grpc_server_handling_seconds_bucket{{method=\"{list}\",le=\"0.25\"}}"),
        format!("soko_grpc_server_handling_seconds_count{{method=\"{list}\"}}"),
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(&wanted)), "{wanted} in:\n{metrics}");
    }

    // Exported only once their event has happened: a dependency error, Redis configured, TLS on.
    const ON_EVENT: &[&str] = &[
        "soko_dependency_errors_total",
        "soko_redis_degraded",
        "soko_tls_certificate_expiry_timestamp_seconds",
        "soko_search_snapshot_timestamp_seconds",
    ];
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/soko-rules.yml")).unwrap();
    let mut names: Vec<&str> =
        rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("soko_")).collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "the rules read {names:?}");
    for name in names {
        let exported = metrics.lines().any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']));
        assert!(exported || ON_EVENT.contains(&name), "the rules read {name}, which the server does not export");
    }
}

/// `soko health-check` is what the container's HEALTHCHECK runs: exit 0 against a serving
/// server, non-zero against a port nobody serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_command_passes_only_against_a_serving_server() {
    let app = spawn_app(Backend::Sqlite).await;
    let run =
        |addr: String| tokio::process::Command::new(env!("CARGO_BIN_EXE_soko")).args(["health-check", &addr]).output();
    let ok = run(app.grpc_addr.to_string()).await.unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = run(closed.to_string()).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("health check"), "{down:?}");
}

/// The Connect protocol (issue 25): plain HTTP/1.1 POSTs of JSON or binary protobuf reach the
/// same methods, through the same layers, and failures come back as Connect errors with the
/// protocol's HTTP status and the `google.rpc` details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_protocol_serves_plain_http_clients() {
    use base64::Engine;
    use tonic_types::pb::BadRequest;

    let app = spawn_app(Backend::Sqlite).await;
    let json = [("content-type", "application/json")];
    let post = |path: &'static str, headers: Vec<(&'static str, String)>, body: &'static [u8]| {
        let addr = app.grpc_addr;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http::request(addr, "POST", path, &headers, body).await
        }
    };
    let json_headers = || json.iter().map(|(k, v)| (*k, (*v).to_owned())).collect::<Vec<_>>();

    let listed = post("/soko.catalog.v1.CatalogService/ListCategories", json_headers(), b"{}").await;
    assert_eq!(listed.status, 200, "{}", String::from_utf8_lossy(&listed.body));
    assert_eq!(listed.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert!(body["categories"].as_array().unwrap().iter().any(|c| c["id"] == "shoes"), "{body}");
    assert!(listed.header("x-request-id").is_some());

    // Binary protobuf, with an empty body for an empty message.
    let binary = post(
        "/soko.catalog.v1.CatalogService/ListCategories",
        vec![("content-type", "application/proto".to_owned())],
        b"",
    )
    .await;
    assert_eq!((binary.status, binary.header("content-type")), (200, Some("application/proto")));
    let decoded = pb::ListCategoriesResponse::decode(binary.body.as_slice()).unwrap();
    assert!(decoded.categories.iter().any(|c| c.id == "shoes"));

    // A field violation: 400, code and details as the Connect protocol spells them.
    let bad = post("/soko.catalog.v1.CatalogService/GetProduct", json_headers(), br#"{"id": "nope"}"#).await;
    assert_eq!(bad.status, 400);
    let error: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
    assert_eq!(error["code"], "invalid_argument", "{error}");
    let detail = &error["details"][0];
    assert_eq!(detail["type"], "google.rpc.BadRequest");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(detail["value"].as_str().unwrap()).unwrap();
    assert_eq!(BadRequest::decode(bytes.as_slice()).unwrap().field_violations[0].field, "id");

    // JSON that is not the request message, a caller without credentials, a method that
    // does not exist: each its own Connect code.
    let garbled = post("/soko.catalog.v1.CatalogService/GetProduct", json_headers(), br#"{"id": 7"#).await;
    assert_eq!(garbled.status, 400, "{}", String::from_utf8_lossy(&garbled.body));
    let anonymous = post("/soko.auth.v1.AuthService/Me", json_headers(), b"{}").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&anonymous.body).unwrap()["code"], "unauthenticated");
    let missing = post("/soko.catalog.v1.CatalogService/Nothing", json_headers(), b"{}").await;
    assert_eq!(missing.status, 501);

    // Credentials travel as they do over gRPC.
    let mut headers = json_headers();
    headers.push(("authorization", format!("Bearer {}", app.admin_token)));
    let me = post("/soko.auth.v1.AuthService/Me", headers, b"{}").await;
    assert_eq!(me.status, 200, "{}", String::from_utf8_lossy(&me.body));
    let me: serde_json::Value = serde_json::from_slice(&me.body).unwrap();
    assert_eq!(me["user"]["email"], common::ADMIN_EMAIL, "{me}");
}

/// The database pool's state is in the metrics (issue 16): connections in use and idle, calls
/// waiting for one, checkouts by outcome and the time spent waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_pools_state_is_in_the_metrics() {
    let app = spawn_app(Backend::Sqlite).await;
    app.catalog.clone().list_categories(pb::ListCategoriesRequest {}).await.unwrap();
    let value = |metrics: &str, series: &str| {
        metrics.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let started = std::time::Instant::now();
    loop {
        // Sampled by the database prober, every 500 ms.
        let metrics = String::from_utf8(http::request(app.ops_addr, "GET", "/metrics", &[], b"").await.body).unwrap();
        if value(&metrics, "soko_db_pool_checkouts_total{outcome=\"direct\"}").is_some_and(|n| n > 0.0) {
            for series in [
                "soko_db_pool_connections{state=\"in_use\"}",
                "soko_db_pool_connections{state=\"idle\"}",
                "soko_db_pool_waiting",
                "soko_db_pool_checkouts_total{outcome=\"timed_out\"}",
                "soko_db_pool_wait_seconds_total",
            ] {
                assert!(value(&metrics, series).is_some_and(|v| v >= 0.0), "{series} in:\n{metrics}");
            }
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "no pool metrics:\n{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Readable logs carry no colour codes when stdout is not a terminal (issue 20): piped to a file or
/// a shipper they would be noise on every line.
#[test]
fn pretty_logs_have_no_colour_codes_off_a_terminal() {
    let dir = std::env::temp_dir().join(format!("soko_colour_{}", uuid::Uuid::new_v4().simple()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .arg("migrate")
        .env_clear()
        .env("SOKO_DATA_DIR", &dir)
        .env("SOKO_EMBEDDING_DIM", "8")
        .env("SOKO_LOG_FORMAT", "pretty")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("migrations applied"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "colour codes in {stdout:?}");
}
