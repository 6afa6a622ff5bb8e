//! Authentication and authorization, run against SQLite, PostgreSQL and MariaDB alike: access
//! tokens and the attacks on them, sessions and refresh rotation, passwords, roles, ownership,
//! API keys, the audit trail of refusals, what personal data responses carry, and login
//! throttling under guessing and under load.

use crate::common;

use std::{
    ops::Deref,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{
    ADMIN_PASSWORD, Backend, Bearer, TEST_JWT_SECRET, TestApp, product, session_of, spawn_app, violated_fields,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use prost_types::FieldMask;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use soko::proto::{
    catalog::{self as pb, catalog_service_client::CatalogServiceClient},
    grpc::health::v1::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient},
    soko::{
        admin::v1::{self as admin_pb, admin_service_client::AdminServiceClient},
        auth::v1::{self as auth_pb, Role, auth_service_client::AuthServiceClient},
    },
};
use tokio::sync::{RwLock, RwLockReadGuard};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

backend_tests!(
    forged_and_malformed_tokens_are_unauthenticated,
    invalid_credentials_are_refused_even_on_public_methods,
    register_login_and_me_round_trip,
    registration_names_each_bad_field_and_refuses_duplicates,
    wrong_password_and_unknown_email_are_indistinguishable,
    refresh_rotates_and_reuse_revokes_the_family,
    concurrent_refreshes_with_one_token_let_exactly_one_through,
    logout_revokes_the_family_and_is_idempotent,
    change_password_revokes_other_sessions_only,
    roles_gate_methods_and_sellers_touch_only_their_own_products,
    api_keys_act_as_their_user_and_stop_when_revoked,
    refused_admin_calls_are_audited_with_the_status_name,
    admin_calls_with_invalid_credentials_are_audited,
    a_new_role_applies_within_a_second_and_admins_cannot_change_their_own,
    role_changes_are_audited_with_old_and_new_role,
    emails_and_secrets_appear_only_where_the_contract_allows,
);

const PASSWORD: &str = "password-123";

/// The login-flood test measures process-wide memory and latency, so it runs alone: every other
/// test in this file holds this lock shared for as long as its server lives.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// A test server, and this test's share of [`EXCLUSIVE`].
struct App {
    app: TestApp,
    _turn: RwLockReadGuard<'static, ()>,
}

impl Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

async fn app(backend: Backend) -> App {
    let turn = EXCLUSIVE.read().await;
    App { app: spawn_app(backend).await, _turn: turn }
}

// ------------------------------------------------------------------ clients and calls ---

/// Adds `x-api-key: <secret>` to every call.
#[derive(Clone)]
struct ApiKey(MetadataValue<Ascii>);

impl ApiKey {
    fn new(secret: &str) -> Self {
        Self(secret.parse().expect("ascii key"))
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("x-api-key", self.0.clone());
        Ok(request)
    }
}

fn auth_as(app: &TestApp, token: &str) -> AuthServiceClient<InterceptedService<Channel, Bearer>> {
    AuthServiceClient::with_interceptor(app.channel.clone(), Bearer::new(Some(token)))
}

fn catalog_with_key(app: &TestApp, secret: &str) -> CatalogServiceClient<InterceptedService<Channel, ApiKey>> {
    CatalogServiceClient::with_interceptor(app.channel.clone(), ApiKey::new(secret))
}

fn admin(app: &TestApp) -> common::Admin {
    app.admin_as(Some(&app.admin_token))
}

/// Calls `AuthService.Me` with `authorization` set to exactly `value`.
async fn me_with_authorization(app: &TestApp, value: &str) -> Result<auth_pb::User, Status> {
    let mut request = Request::new(auth_pb::MeRequest {});
    request.metadata_mut().insert("authorization", value.parse().expect("ascii header"));
    app.auth().me(request).await.map(|r| r.into_inner().user.expect("user"))
}

async fn me(app: &TestApp, access_token: &str) -> Result<auth_pb::User, Status> {
    me_with_authorization(app, &format!("Bearer {access_token}")).await
}

async fn try_login(app: &TestApp, email: &str, password: &str) -> Result<auth_pb::LoginResponse, Status> {
    app.auth()
        .login(auth_pb::LoginRequest { email: email.into(), password: password.into() })
        .await
        .map(tonic::Response::into_inner)
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Result<auth_pb::TokenPair, Status> {
    app.auth()
        .refresh(auth_pb::RefreshRequest { refresh_token: refresh_token.into() })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

async fn logout(app: &TestApp, refresh_token: &str) -> Result<(), Status> {
    app.auth().logout(auth_pb::LogoutRequest { refresh_token: refresh_token.into() }).await.map(|_| ())
}

async fn create_seller_as(app: &TestApp, token: &str, name: &str) -> Result<pb::Seller, Status> {
    app.catalog_as(Some(token))
        .create_seller(pb::CreateSellerRequest { display_name: name.into() })
        .await
        .map(|r| r.into_inner().seller.expect("seller"))
}

async fn create_product_as(app: &TestApp, token: &str, input: pb::Product) -> Result<pb::Product, Status> {
    app.catalog_as(Some(token))
        .create_product(pb::CreateProductRequest { product: Some(input) })
        .await
        .map(|r| r.into_inner().product.expect("product"))
}

fn rename(id: &str, name: &str) -> pb::UpdateProductRequest {
    pb::UpdateProductRequest {
        product: Some(pb::Product { id: id.into(), name: name.into(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["name".into()] }),
    }
}

async fn get_product(app: &TestApp, id: &str) -> Result<pb::Product, Status> {
    app.catalog_as(None)
        .get_product(pb::GetProductRequest { id: id.into(), read_mask: common::every_field() })
        .await
        .map(|r| r.into_inner().product.expect("product"))
}

/// Every audit event with `action` (every event when empty), newest first, across all pages.
async fn audit_events(app: &TestApp, action: &str) -> Vec<admin_pb::AuditEvent> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin(app)
            .list_audit_events(admin_pb::ListAuditEventsRequest {
                action: action.into(),
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list audit events")
            .into_inner();
        events.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) -> Status {
    match result {
        Ok(value) => panic!("{what}: expected {code:?}, got a success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            status
        }
    }
}

// ------------------------------------------------------------------------ forging tokens ---

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims the server would issue for `user_id`'s session `sid` as a buyer, valid for ten
/// minutes. The session must exist: the server checks it on every call.
fn claims(user_id: &str, sid: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": "soko",
        "aud": "soko-api",
        "sub": user_id,
        "role": "buyer",
        "sid": sid,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    })
}

fn edited(base: &Value, edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut value = base.clone();
    edit(value.as_object_mut().expect("claims are an object"));
    value
}

/// A JWT signed with `alg` and `secret` by the same library the server uses.
fn sign_with(alg: Algorithm, claims: &Value, kid: Option<&str>, secret: &[u8]) -> String {
    let header = Header { kid: kid.map(str::to_owned), ..Header::new(alg) };
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("encode token")
}

fn sign(claims: &Value, kid: Option<&str>, secret: &[u8]) -> String {
    sign_with(Algorithm::HS256, claims, kid, secret)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new().chain_update(block.map(|b| b ^ 0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(block.map(|b| b ^ 0x5c)).chain_update(inner).finalize().into()
}

/// A token assembled by hand: any header, any payload bytes, and an HMAC-SHA256 signature with
/// `secret` over them whatever algorithm the header names.
fn hand_signed(header: &Value, payload: &[u8], secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
    let signature = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

// ------------------------------------------------------------------------------- tokens ---

async fn forged_and_malformed_tokens_are_unauthenticated(backend: Backend) {
    let app = app(backend).await;
    let (user_id, tokens) = app.register("mallory@example.com", Role::Buyer).await;
    let secret = TEST_JWT_SECRET.as_bytes();
    let valid = claims(&user_id, &session_of(&tokens.access_token));
    let hs256 = json!({"alg": "HS256", "typ": "JWT", "kid": "soko-1"});
    let now = unix_now();

    // Positive controls: the forging helpers make tokens the server accepts when they are honest,
    // so every refusal below is down to the one thing each attack changes.
    let controls = [
        ("issued by the server", tokens.access_token.clone()),
        ("signed by the library", sign(&valid, Some("soko-1"), secret)),
        ("assembled by hand", hand_signed(&hs256, valid.to_string().as_bytes(), secret)),
        (
            "expired 10 s ago, within the 30 s leeway",
            sign(
                &edited(&valid, |c| {
                    c.insert("exp".into(), json!(now - 10));
                    c.insert("iat".into(), json!(now - 610));
                    c.insert("nbf".into(), json!(now - 610));
                }),
                Some("soko-1"),
                secret,
            ),
        ),
    ];
    for (name, token) in &controls {
        let user = me(&app, token).await.unwrap_or_else(|e| panic!("control `{name}` must be accepted: {e:?}"));
        assert_eq!(user.id, user_id, "{name}");
        assert_eq!(user.email, "mallory@example.com", "{name}");
    }

    let payload = valid.to_string();
    let real = tokens.access_token.clone();
    let (real_header, rest) = real.split_once('.').expect("jwt");
    let real_signature = rest.rsplit_once('.').expect("jwt").1;
    let as_admin = edited(&valid, |c| {
        c.insert("role".into(), json!("admin"));
    });
    let bearer = |token: String| format!("Bearer {token}");
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            bearer(format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT", "kid": "soko-1"}).to_string().as_bytes()),
                b64(payload.as_bytes())
            )),
        ),
        (
            "alg none, signature kept",
            bearer(hand_signed(&json!({"alg": "none", "typ": "JWT", "kid": "soko-1"}), payload.as_bytes(), secret)),
        ),
        (
            "RS256 header over an HMAC signature (key confusion)",
            bearer(hand_signed(&json!({"alg": "RS256", "typ": "JWT", "kid": "soko-1"}), payload.as_bytes(), secret)),
        ),
        (
            "RS256 header with an arbitrary signature",
            bearer(format!(
                "{}.{}.{}",
                b64(json!({"alg": "RS256", "typ": "JWT", "kid": "soko-1"}).to_string().as_bytes()),
                b64(payload.as_bytes()),
                b64(b"-----BEGIN PUBLIC KEY-----")
            )),
        ),
        ("HS512 with the real secret", bearer(sign_with(Algorithm::HS512, &valid, Some("soko-1"), secret))),
        (
            "signed with another secret",
            bearer(sign(&valid, Some("soko-1"), b"another-secret-of-the-same-length-0123456789")),
        ),
        (
            "payload raised to admin under the original signature",
            bearer(format!("{real_header}.{}.{real_signature}", b64(as_admin.to_string().as_bytes()))),
        ),
        (
            "expired an hour ago",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("exp".into(), json!(now - 3600));
                    c.insert("iat".into(), json!(now - 7200));
                    c.insert("nbf".into(), json!(now - 7200));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "nbf an hour ahead",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("nbf".into(), json!(now + 3600));
                    c.insert("exp".into(), json!(now + 7200));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "wrong issuer",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("iss".into(), json!("evil"));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "wrong audience",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("aud".into(), json!("other-api"));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "missing exp",
            bearer(sign(
                &edited(&valid, |c| {
                    c.remove("exp");
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "exp as a string",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("exp".into(), json!((now + 600).to_string()));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "missing sub",
            bearer(sign(
                &edited(&valid, |c| {
                    c.remove("sub");
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "sub that is not a user id",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("sub".into(), json!("root"));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "unknown role",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("role".into(), json!("superuser"));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        ("unknown kid", bearer(sign(&valid, Some("soko-2"), secret))),
        ("no kid", bearer(sign(&valid, None, secret))),
        (
            "oversized (> 4 KiB) but correctly signed",
            bearer(sign(
                &edited(&valid, |c| {
                    c.insert("pad".into(), json!("x".repeat(5000)));
                }),
                Some("soko-1"),
                secret,
            )),
        ),
        (
            "malformed base64",
            bearer(format!("{}.***not*base64***.{}", b64(hs256.to_string().as_bytes()), b64(b"signature"))),
        ),
        ("malformed JSON, correctly signed", bearer(hand_signed(&hs256, br#"{"iss":"soko","sub":"#, secret))),
        ("two segments only", bearer("abc.def".into())),
        ("not a JWT at all", bearer("let-me-in".into())),
        ("Basic scheme", "Basic bWFsbG9yeUBleGFtcGxlLmNvbTpwYXNzd29yZC0xMjM=".into()),
        ("token without a scheme", real.clone()),
    ];
    let mut wrong = Vec::new();
    for (name, authorization) in &attacks {
        if let Some(got) = match me_with_authorization(&app, authorization).await {
            Ok(user) => Some(format!("accepted as {user:?}")),
            Err(s) if s.code() != Code::Unauthenticated => Some(format!("{s:?}")),
            Err(_) => None,
        } {
            wrong.push(format!("{name}: {got}"));
        }
    }
    assert!(wrong.is_empty(), "every attack must answer UNAUTHENTICATED:\n{}", wrong.join("\n"));
    // The real token still works after all that.
    assert_eq!(me(&app, &real).await.unwrap().id, user_id);
}

async fn invalid_credentials_are_refused_even_on_public_methods(backend: Backend) {
    let app = app(backend).await;
    let list = pb::ListCategoriesRequest {};
    app.catalog_as(None).list_categories(list).await.expect("anonymous callers may list categories");

    let (user_id, tokens) = app.register("late@example.com", Role::Buyer).await;
    let now = unix_now();
    let expired = sign(
        &edited(&claims(&user_id, &session_of(&tokens.access_token)), |c| {
            c.insert("exp".into(), json!(now - 3600));
        }),
        Some("soko-1"),
        TEST_JWT_SECRET.as_bytes(),
    );
    for token in [expired.as_str(), "not-a-jwt"] {
        let err = app.catalog_as(Some(token)).list_categories(list).await;
        assert_code(err, Code::Unauthenticated, token);
        let err = app
            .catalog_as(Some(token))
            .get_product(pb::GetProductRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() })
            .await;
        assert_code(err, Code::Unauthenticated, token);
    }
    let err = catalog_with_key(&app, "soko_ak_never-issued").list_categories(list).await;
    assert_code(err, Code::Unauthenticated, "unknown API key");
    let mut request = Request::new(list);
    request.metadata_mut().insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    let err = app.catalog_as(None).list_categories(request).await;
    assert_code(err, Code::Unauthenticated, "Basic scheme");
}

// ------------------------------------------------------------------- accounts and login ---

async fn register_login_and_me_round_trip(backend: Backend) {
    let app = app(backend).await;
    let registered = app
        .auth()
        .register(auth_pb::RegisterRequest {
            email: "  Ada.Lovelace@Example.COM ".into(),
            password: "correct horse 🐎 battery".into(),
            role: Role::Unspecified.into(),
        })
        .await
        .expect("register")
        .into_inner();
    let user = registered.user.expect("user");
    let tokens = registered.tokens.expect("tokens");
    assert!(user.id.parse::<uuid::Uuid>().is_ok());
    assert_eq!(user.email, "ada.lovelace@example.com", "normalised");
    assert_eq!(user.role(), Role::Buyer, "unspecified means buyer");
    assert!(user.create_time.is_some());
    assert!(!tokens.access_token.is_empty());
    assert!(tokens.refresh_token.starts_with("soko_rt_"));
    assert_eq!(tokens.access_token_expires_in.unwrap().seconds, 900);
    assert!(tokens.access_token_expire_time.is_some() && tokens.refresh_token_expire_time.is_some());

    assert_eq!(me(&app, &tokens.access_token).await.unwrap(), user);

    let logged_in = try_login(&app, "ADA.lovelace@example.com", "correct horse 🐎 battery")
        .await
        .expect("login is case-insensitive on email");
    assert_eq!(logged_in.user.as_ref(), Some(&user));
    let second = logged_in.tokens.expect("tokens");
    assert_ne!(second.refresh_token, tokens.refresh_token, "a new session");
    assert_eq!(me(&app, &second.access_token).await.unwrap(), user);

    let seller = app
        .auth()
        .register(auth_pb::RegisterRequest {
            email: "shop@example.com".into(),
            password: PASSWORD.into(),
            role: Role::Seller.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seller.user.unwrap().role(), Role::Seller);

    let err = app.auth().me(auth_pb::MeRequest {}).await;
    assert_code(err, Code::Unauthenticated, "Me without a token");
}

async fn registration_names_each_bad_field_and_refuses_duplicates(backend: Backend) {
    let app = app(backend).await;
    let register = |email: &str, password: &str, role: Role| {
        let mut client = app.auth();
        let request = auth_pb::RegisterRequest { email: email.into(), password: password.into(), role: role.into() };
        async move { client.register(request).await }
    };
    register("taken@example.com", PASSWORD, Role::Buyer).await.unwrap();
    let err = register(" TAKEN@example.com", "other-password", Role::Seller).await;
    assert_code(err, Code::AlreadyExists, "duplicate email");

    let err = register("boss@example.com", PASSWORD, Role::Admin).await;
    let err = assert_code(err, Code::InvalidArgument, "admin role");
    assert_eq!(violated_fields(&err), ["role"]);

    for bad in ["", "not-an-email", "a@b", "@example.com", "a b@example.com"] {
        let err = register(bad, PASSWORD, Role::Buyer).await;
        let err = assert_code(err, Code::InvalidArgument, bad);
        assert_eq!(violated_fields(&err), ["email"], "{bad:?}");
    }
    let long = "x".repeat(129);
    for bad in ["", "short", "1234567", long.as_str()] {
        let err = register("fresh@example.com", bad, Role::Buyer).await;
        let err = assert_code(err, Code::InvalidArgument, "bad password");
        assert_eq!(violated_fields(&err), ["password"], "{} chars", bad.len());
    }
    let err = register("nope", "short", Role::Admin).await;
    let err = assert_code(err, Code::InvalidArgument, "everything wrong");
    assert_eq!(violated_fields(&err), ["email", "password", "role"]);
    register("eight@example.com", "12345678", Role::Buyer).await.expect("8 characters are enough");
    let mut client = app.auth();
    let err = client
        .register(auth_pb::RegisterRequest { email: "odd@example.com".into(), password: PASSWORD.into(), role: 42 })
        .await;
    let err = assert_code(err, Code::InvalidArgument, "unknown role number");
    assert_eq!(violated_fields(&err), ["role"]);

    // Nothing half-registered: the refused emails can't log in.
    let err = try_login(&app, "boss@example.com", PASSWORD).await;
    assert_code(err, Code::Unauthenticated, "refused admin registration");
}

async fn wrong_password_and_unknown_email_are_indistinguishable(backend: Backend) {
    let app = app(backend).await;
    app.register("known@example.com", Role::Buyer).await;
    let wrong_password = assert_code(
        try_login(&app, "known@example.com", "wrong-password").await,
        Code::Unauthenticated,
        "wrong password",
    );
    let unknown_email = assert_code(
        try_login(&app, "nobody@example.com", "wrong-password").await,
        Code::Unauthenticated,
        "unknown email",
    );
    assert_eq!(wrong_password.message(), unknown_email.message());
    assert_eq!(wrong_password.details(), unknown_email.details());
    assert!(!wrong_password.message().contains("known@example.com"));

    let err = try_login(&app, "", "").await;
    let err = assert_code(err, Code::InvalidArgument, "empty login");
    assert_eq!(violated_fields(&err), ["email", "password"]);
    try_login(&app, "known@example.com", PASSWORD).await.expect("the right password still works");
}

// -------------------------------------------------------------------------- sessions ---

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let app = app(backend).await;
    let (user_id, first) = app.register("rotor@example.com", Role::Buyer).await;
    let r1 = first.refresh_token;

    let second = refresh(&app, &r1).await.expect("first refresh");
    let (a2, r2) = (second.access_token, second.refresh_token);
    assert_ne!(r2, r1, "rotation hands out a new refresh token");
    assert_eq!(me(&app, &a2).await.unwrap().id, user_id);

    let err = assert_code(refresh(&app, &r1).await, Code::Unauthenticated, "reusing R1");
    let err2 = assert_code(refresh(&app, &r2).await, Code::Unauthenticated, "R2 after the family was revoked");
    assert_eq!(err.message(), err2.message(), "one message for every refusal");

    let reuse = audit_events(&app, "auth.refresh.reuse_detected").await;
    assert_eq!(reuse.len(), 1, "{reuse:#?}");
    assert_eq!(reuse[0].status_code, "UNAUTHENTICATED");
    assert!(format!("{:?}", reuse[0]).contains(&user_id), "the event names the user: {:?}", reuse[0]);

    // Other sessions of the user are unaffected.
    let other = common::login(&app.channel, "rotor@example.com", PASSWORD).await;
    refresh(&app, &other.refresh_token).await.expect("a separate login is its own family");

    for (token, code) in [
        ("", Code::InvalidArgument),
        ("soko_rt_never-issued", Code::Unauthenticated),
        (&*"x".repeat(10_000), Code::Unauthenticated),
    ] {
        assert_code(refresh(&app, token).await, code, "bad refresh token");
    }
}

async fn concurrent_refreshes_with_one_token_let_exactly_one_through(backend: Backend) {
    let app = app(backend).await;
    let (_, tokens) = app.register("racer@example.com", Role::Buyer).await;
    let token = tokens.refresh_token;
    let (a, b) = tokio::join!(refresh(&app, &token), refresh(&app, &token));
    let codes = [&a, &b].map(|r| r.as_ref().map(|_| ()).map_err(Status::code));
    let winners: Vec<_> = [a, b].into_iter().filter_map(Result::ok).collect();
    assert_eq!(winners.len(), 1, "exactly one refresh succeeds: {codes:?}");
    assert!(codes.contains(&Err(Code::Unauthenticated)), "the loser is UNAUTHENTICATED: {codes:?}");
    // The contract counts the loser as reuse, so the winner's new token is revoked with the family.
    assert_code(
        refresh(&app, &winners[0].refresh_token).await,
        Code::Unauthenticated,
        "the winner's token after the race",
    );
    assert_eq!(audit_events(&app, "auth.refresh.reuse_detected").await.len(), 1);
}

async fn logout_revokes_the_family_and_is_idempotent(backend: Backend) {
    let app = app(backend).await;
    let (_, tokens) = app.register("leaver@example.com", Role::Buyer).await;
    logout(&app, &tokens.refresh_token).await.expect("logout");
    assert_code(refresh(&app, &tokens.refresh_token).await, Code::Unauthenticated, "refresh after logout");
    logout(&app, &tokens.refresh_token).await.expect("logging out twice is fine");

    // Any token of the family ends the session, including one already rotated away.
    let r1 = common::login(&app.channel, "leaver@example.com", PASSWORD).await.refresh_token;
    let r2 = refresh(&app, &r1).await.unwrap().refresh_token;
    logout(&app, &r1).await.expect("logout with a used token of a known family");
    assert_code(refresh(&app, &r2).await, Code::Unauthenticated, "the family's newest token after logout");

    assert_code(
        logout(&app, "soko_rt_never-issued-by-this-server").await,
        Code::Unauthenticated,
        "logout with a never-issued token",
    );
    let err = assert_code(logout(&app, "").await, Code::InvalidArgument, "empty");
    assert_eq!(violated_fields(&err), ["refresh_token"]);
}

async fn change_password_revokes_other_sessions_only(backend: Backend) {
    let app = app(backend).await;
    let (_, this) = app.register("changer@example.com", Role::Buyer).await;
    let other = common::login(&app.channel, "changer@example.com", PASSWORD).await;
    let mut client = auth_as(&app, &this.access_token);
    let change = |current: &str, new: &str| auth_pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
    };

    let err = client.change_password(change("not-my-password", "new-password-456")).await;
    let err = assert_code(err, Code::InvalidArgument, "wrong current password");
    assert_eq!(violated_fields(&err), ["current_password"]);
    let err = client.change_password(change(PASSWORD, PASSWORD)).await;
    let err = assert_code(err, Code::InvalidArgument, "same password");
    assert_eq!(violated_fields(&err), ["new_password"]);
    let err = client.change_password(change(PASSWORD, "short")).await;
    let err = assert_code(err, Code::InvalidArgument, "short password");
    assert_eq!(violated_fields(&err), ["new_password"]);
    let err = app.auth().change_password(change(PASSWORD, "new-password-456")).await;
    assert_code(err, Code::Unauthenticated, "anonymous");
    // None of the refusals changed anything: the other session still refreshes.
    let other_refresh =
        refresh(&app, &other.refresh_token).await.expect("other session before the change").refresh_token;

    client.change_password(change(PASSWORD, "new-password-456")).await.expect("change password");
    assert_code(refresh(&app, &other_refresh).await, Code::Unauthenticated, "the other session after the change");
    let next = refresh(&app, &this.refresh_token).await.expect("the calling session keeps working");
    assert!(me(&app, &next.access_token).await.is_ok());
    assert!(me(&app, &this.access_token).await.is_ok());

    try_login(&app, "changer@example.com", "new-password-456").await.expect("the new password logs in");
    assert_code(try_login(&app, "changer@example.com", PASSWORD).await, Code::Unauthenticated, "the old password");
    let changed = audit_events(&app, "auth.password.changed").await;
    assert_eq!(changed.len(), 1, "{changed:#?}");
}

// --------------------------------------------------------------- roles and ownership ---

async fn roles_gate_methods_and_sellers_touch_only_their_own_products(backend: Backend) {
    let app = app(backend).await;
    let (_, buyer) = app.register("buyer@example.com", Role::Buyer).await;
    let (_, seller_a) = app.register("seller-a@example.com", Role::Seller).await;
    let (_, seller_b) = app.register("seller-b@example.com", Role::Seller).await;
    let (a, b) = (&seller_a.access_token, &seller_b.access_token);

    // Anonymous callers may read but not write.
    let shop_a = create_seller_as(&app, a, "Shop A").await.expect("seller A's profile");
    let err = app
        .catalog_as(None)
        .create_product(pb::CreateProductRequest {
            product: Some(product(&shop_a.id, "Anonymous boots", "shoes", 100)),
        })
        .await;
    assert_code(err, Code::Unauthenticated, "anonymous CreateProduct");
    let err = app.catalog_as(None).create_seller(pb::CreateSellerRequest { display_name: "Ghost shop".into() }).await;
    assert_code(err, Code::Unauthenticated, "anonymous CreateSeller");

    // Buyers may not sell or administer.
    let b_token = &buyer.access_token;
    let err = create_product_as(&app, b_token, product(&shop_a.id, "Buyer boots", "shoes", 1)).await;
    assert_code(err, Code::PermissionDenied, "buyer CreateProduct");
    let err = create_seller_as(&app, b_token, "Buyer shop").await;
    assert_code(err, Code::PermissionDenied, "buyer CreateSeller");
    let err = app
        .catalog_as(Some(b_token))
        .create_category(pb::CreateCategoryRequest {
            category: Some(pb::Category { id: "contraband".into(), display_name: "Contraband".into() }),
        })
        .await;
    assert_code(err, Code::PermissionDenied, "buyer CreateCategory");
    let err = app.admin_as(Some(b_token)).list_users(admin_pb::ListUsersRequest::default()).await;
    assert_code(err, Code::PermissionDenied, "buyer ListUsers");
    // Sellers aren't admins either.
    let err = app.admin_as(Some(a)).list_users(admin_pb::ListUsersRequest::default()).await;
    assert_code(err, Code::PermissionDenied, "seller ListUsers");
    let err = app
        .catalog_as(Some(a))
        .create_category(pb::CreateCategoryRequest {
            category: Some(pb::Category { id: "seller-made".into(), display_name: "Seller made".into() }),
        })
        .await;
    assert_code(err, Code::PermissionDenied, "seller CreateCategory");

    // A seller manages their own products.
    let created = create_product_as(&app, a, product(&shop_a.id, "A's sandals", "shoes", 2500))
        .await
        .expect("seller A creates a product on their profile");
    let original = app
        .catalog_as(Some(a))
        .update_product(rename(&created.id, "A's best sandals"))
        .await
        .expect("seller A updates their own product")
        .into_inner()
        .product
        .unwrap();
    assert_eq!(original.name, "A's best sandals");
    let err = create_seller_as(&app, a, "Shop A again").await;
    assert_code(err, Code::AlreadyExists, "a second profile for the same seller");

    // Another seller can't see A's products as theirs to change.
    let shop_b = create_seller_as(&app, b, "Shop B").await.expect("seller B's profile");
    let err = app.catalog_as(Some(b)).update_product(rename(&original.id, "Hijacked")).await;
    assert_code(err, Code::NotFound, "B updating A's product");
    let err = app.catalog_as(Some(b)).delete_product(pb::DeleteProductRequest { id: original.id.clone() }).await;
    assert_code(err, Code::NotFound, "B deleting A's product");
    assert_eq!(get_product(&app, &original.id).await.unwrap(), original);
    let err = create_product_as(&app, b, product(&shop_a.id, "B under A's name", "shoes", 10)).await;
    let err = assert_code(err, Code::InvalidArgument, "B creating under A's seller id");
    assert_eq!(violated_fields(&err), ["product.seller_id"]);
    create_product_as(&app, b, product(&shop_b.id, "B's own boots", "shoes", 10))
        .await
        .expect("B creates on their own profile");
    let err = app.catalog_as(Some(b_token)).update_product(rename(&original.id, "Buyer rename")).await;
    assert_code(err, Code::PermissionDenied, "buyer UpdateProduct");

    // Admins manage everyone's products.
    let renamed = app
        .catalog
        .clone()
        .update_product(rename(&original.id, "Renamed by admin"))
        .await
        .expect("admin updates A's product")
        .into_inner()
        .product
        .unwrap();
    assert_eq!(renamed.name, "Renamed by admin");
    assert_eq!(renamed.seller_id, shop_a.id);
    app.catalog
        .clone()
        .delete_product(pb::DeleteProductRequest { id: original.id.clone() })
        .await
        .expect("admin deletes A's product");
    assert_code(get_product(&app, &original.id).await, Code::NotFound, "deleted product");
}

// ------------------------------------------------------------------------- API keys ---

async fn api_keys_act_as_their_user_and_stop_when_revoked(backend: Backend) {
    let app = app(backend).await;
    let (seller_id, seller) = app.register("robot-owner@example.com", Role::Seller).await;
    let shop = create_seller_as(&app, &seller.access_token, "Robot Shop").await.unwrap();

    let (key, secret) = app.create_api_key(&seller_id, "inventory sync, shop 42").await;
    assert!(secret.starts_with("soko_ak_") && secret.len() >= 32, "{secret}");
    assert_eq!(key.user_id, seller_id);
    assert_eq!(key.display_name, "inventory sync, shop 42");
    assert!(secret.starts_with(&key.secret_prefix) && key.secret_prefix.len() < secret.len());
    assert!(key.create_time.is_some() && key.revoke_time.is_none());
    assert!(!format!("{key:?}").contains(&secret));

    // The key acts as the seller: their role and their profile.
    let mut robot = catalog_with_key(&app, &secret);
    let made = robot
        .create_product(pb::CreateProductRequest { product: Some(product(&shop.id, "Synced sandals", "shoes", 900)) })
        .await
        .expect("the key creates products on the seller's profile")
        .into_inner()
        .product
        .unwrap();
    assert_eq!(made.seller_id, shop.id);
    let mut auth = AuthServiceClient::with_interceptor(app.channel.clone(), ApiKey::new(&secret));
    let user = auth.me(auth_pb::MeRequest {}).await.unwrap().into_inner().user.unwrap();
    assert_eq!(user.id, seller_id);
    let err = auth
        .change_password(auth_pb::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "robot-password-1".into(),
        })
        .await;
    assert_code(err, Code::PermissionDenied, "API keys can't change passwords");
    let err = AdminServiceClient::with_interceptor(app.channel.clone(), ApiKey::new(&secret))
        .list_users(admin_pb::ListUsersRequest::default())
        .await;
    assert_code(err, Code::PermissionDenied, "a seller's key calling an admin rpc");

    // Listing never shows the secret.
    let listed = admin(&app)
        .list_api_keys(admin_pb::ListApiKeysRequest { user_id: seller_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    assert_eq!(listed.api_keys[0].id, key.id);
    assert!(secret.starts_with(&listed.api_keys[0].secret_prefix));
    assert!(!format!("{listed:?}").contains(&secret));
    let everything = admin(&app)
        .list_api_keys(admin_pb::ListApiKeysRequest { show_inactive: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{everything:?}").contains(&secret));

    // Revoked keys stop at once, on every method.
    let revoked = admin(&app)
        .revoke_api_key(admin_pb::RevokeApiKeyRequest { id: key.id.clone(), reason: "rotated".into() })
        .await
        .expect("revoke")
        .into_inner()
        .api_key
        .unwrap();
    assert!(revoked.revoke_time.is_some());
    let err = robot
        .create_product(pb::CreateProductRequest { product: Some(product(&shop.id, "After revocation", "shoes", 900)) })
        .await;
    assert_code(err, Code::Unauthenticated, "revoked key, seller method");
    let err = robot.list_categories(pb::ListCategoriesRequest {}).await;
    assert_code(err, Code::Unauthenticated, "revoked key, public method");
    let again = admin(&app)
        .revoke_api_key(admin_pb::RevokeApiKeyRequest { id: key.id.clone(), reason: String::new() })
        .await
        .expect("revoking twice is fine")
        .into_inner()
        .api_key
        .unwrap();
    assert_eq!(again.revoke_time, revoked.revoke_time, "unchanged");
    let active = admin(&app)
        .list_api_keys(admin_pb::ListApiKeysRequest { user_id: seller_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(active.api_keys.is_empty(), "revoked keys aren't usable: {active:?}");

    let err = admin(&app)
        .create_api_key(admin_pb::CreateApiKeyRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            display_name: "nobody's".into(),
            ..Default::default()
        })
        .await;
    assert_code(err, Code::NotFound, "key for an unknown user");
}

async fn refused_admin_calls_are_audited_with_the_status_name(backend: Backend) {
    let app = app(backend).await;
    let (buyer_id, buyer) = app.register("curious@example.com", Role::Buyer).await;
    let err = app
        .admin_as(Some(&buyer.access_token))
        .create_api_key(admin_pb::CreateApiKeyRequest {
            user_id: buyer_id.clone(),
            display_name: "my own admin key".into(),
            ..Default::default()
        })
        .await;
    assert_code(err, Code::PermissionDenied, "buyer CreateApiKey");
    let err = app
        .admin_as(None)
        .create_api_key(admin_pb::CreateApiKeyRequest {
            user_id: buyer_id.clone(),
            display_name: "anonymous key".into(),
            ..Default::default()
        })
        .await;
    assert_code(err, Code::Unauthenticated, "anonymous CreateApiKey");

    let events = audit_events(&app, "soko.admin.v1.AdminService.CreateApiKey").await;
    let by_buyer: Vec<_> = events.iter().filter(|e| e.principal == format!("user:{buyer_id}")).collect();
    assert_eq!(by_buyer.len(), 1, "{events:#?}");
    assert_eq!(by_buyer[0].status_code, "PERMISSION_DENIED", "{:?}", by_buyer[0]);
    assert!(!by_buyer[0].request_id.is_empty() && !by_buyer[0].client_ip.is_empty());
    let anonymous: Vec<_> = events.iter().filter(|e| e.principal == "anonymous").collect();
    assert_eq!(anonymous.len(), 1, "{events:#?}");
    assert_eq!(anonymous[0].status_code, "UNAUTHENTICATED", "{:?}", anonymous[0]);
}

async fn admin_calls_with_invalid_credentials_are_audited(backend: Backend) {
    let app = app(backend).await;
    let (buyer_id, _) = app.register("prober@example.com", Role::Buyer).await;
    let request = || admin_pb::CreateApiKeyRequest {
        user_id: buyer_id.clone(),
        display_name: "probe".into(),
        ..Default::default()
    };
    let err = app.admin_as(Some("not-a-jwt")).create_api_key(request()).await;
    assert_code(err, Code::Unauthenticated, "garbage bearer token");
    let err = AdminServiceClient::with_interceptor(app.channel.clone(), ApiKey::new("soko_ak_guess"))
        .create_api_key(request())
        .await;
    assert_code(err, Code::Unauthenticated, "guessed API key");

    // "Every AdminService call is recorded, including calls that fail or are refused."
    let events = audit_events(&app, "soko.admin.v1.AdminService.CreateApiKey").await;
    let codes: Vec<_> = events.iter().map(|e| e.status_code.as_str()).collect();
    assert_eq!(
        codes,
        ["UNAUTHENTICATED", "UNAUTHENTICATED"],
        "admin calls refused for bad credentials must be audited: {events:#?}"
    );
}

// ---------------------------------------------------------------------- role changes ---

async fn set_role(app: &TestApp, user_id: &str, role: Role) -> Result<auth_pb::User, Status> {
    admin(app)
        .set_user_role(admin_pb::SetUserRoleRequest {
            user_id: user_id.into(),
            role: role.into(),
            reason: "ticket 7".into(),
        })
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn a_new_role_applies_within_a_second_and_admins_cannot_change_their_own(backend: Backend) {
    let app = app(backend).await;
    let (user_id, tokens) = app.register("upgrade@example.com", Role::Buyer).await;
    let (_, secret) = app.create_api_key(&user_id, "upgrade's key").await;
    assert_code(
        create_seller_as(&app, &tokens.access_token, "Too early").await,
        Code::PermissionDenied,
        "buyer CreateSeller",
    );

    let user = set_role(&app, &user_id, Role::Seller).await.expect("set role");
    assert_eq!(user.role(), Role::Seller);
    assert_eq!(user.email, "upgrade@example.com", "admins see emails");

    // The access token in hand takes the new role within a second: the role comes from the
    // database, not the token...
    let started = Instant::now();
    let shop = loop {
        match create_seller_as(&app, &tokens.access_token, "Upgraded Shop").await {
            Ok(shop) => break shop,
            Err(e) if e.code() == Code::PermissionDenied && started.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the old token after promotion, {:?} in: {e:?}", started.elapsed()),
        }
    };
    // ...API keys follow the new role at once...
    let mut by_key = catalog_with_key(&app, &secret);
    let err = by_key
        .create_category(pb::CreateCategoryRequest {
            category: Some(pb::Category { id: "keyed".into(), display_name: "Keyed".into() }),
        })
        .await;
    assert_code(err, Code::PermissionDenied, "a seller's key creating a category");
    // ...and a refreshed token has seller powers too.
    let refreshed = refresh(&app, &tokens.refresh_token).await.unwrap();
    create_product_as(&app, &refreshed.access_token, product(&shop.id, "First listing", "shoes", 1000))
        .await
        .expect("a first product");
    by_key
        .create_product(pb::CreateProductRequest { product: Some(product(&shop.id, "Listed by key", "shoes", 1000)) })
        .await
        .expect("the key has the seller role now");
    assert_eq!(me(&app, &refreshed.access_token).await.unwrap().role(), Role::Seller);

    let own = app.admin_id().await;
    assert_code(set_role(&app, &own, Role::Buyer).await, Code::FailedPrecondition, "admin demoting themself");
    assert_code(set_role(&app, &user_id, Role::Unspecified).await, Code::InvalidArgument, "unspecified role");
    assert_code(set_role(&app, &uuid::Uuid::now_v7().to_string(), Role::Seller).await, Code::NotFound, "unknown user");
    assert_eq!(me(&app, &app.admin_token).await.unwrap().role(), Role::Admin);

    let events = audit_events(&app, "soko.admin.v1.AdminService.SetUserRole").await;
    let principal = format!("user:{own}");
    let ok: Vec<_> = events.iter().filter(|e| e.status_code == "OK" && e.resource.contains(&user_id)).collect();
    assert_eq!(ok.len(), 1, "{events:#?}");
    assert_eq!(ok[0].principal, principal);
    assert!(ok[0].reason.contains("ticket 7"), "{:?}", ok[0]);
    let refused: Vec<_> = events.iter().filter(|e| e.status_code == "FAILED_PRECONDITION").collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert!(refused[0].resource.contains(&own), "{:?}", refused[0]);
}

async fn role_changes_are_audited_with_old_and_new_role(backend: Backend) {
    let app = app(backend).await;
    let (user_id, _) = app.register("audited@example.com", Role::Buyer).await;
    set_role(&app, &user_id, Role::Seller).await.unwrap();
    let events = audit_events(&app, "soko.admin.v1.AdminService.SetUserRole").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    // The contract: `reason` is the request's reason, `details` carries old_role and new_role.
    assert_eq!(
        (event.details.get("old_role").map(String::as_str), event.details.get("new_role").map(String::as_str),),
        (Some("ROLE_BUYER"), Some("ROLE_SELLER")),
        "SetUserRole's audit event must carry old_role and new_role in `details`: {event:?}"
    );
    assert_eq!(event.reason, "ticket 7", "{event:?}");
}

// ------------------------------------------------------------------- personal data ---

async fn emails_and_secrets_appear_only_where_the_contract_allows(backend: Backend) {
    let app = app(backend).await;
    let email = "private.person@example.com";
    let registered = app
        .auth()
        .register(auth_pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            role: Role::Seller.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let user_id = registered.user.as_ref().unwrap().id.clone();
    assert_eq!(registered.user.as_ref().unwrap().email, email, "Register");
    let tokens = registered.tokens.unwrap();
    let logged_in = try_login(&app, email, PASSWORD).await.unwrap();
    assert_eq!(logged_in.user.unwrap().email, email, "Login");
    assert_eq!(me(&app, &tokens.access_token).await.unwrap().email, email, "Me");
    let listed = admin(&app)
        .list_users(admin_pb::ListUsersRequest { email: email.to_uppercase(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users.len(), 1);
    assert_eq!(listed.users[0].email, email, "admin ListUsers");

    let shop = create_seller_as(&app, &tokens.access_token, "Private Shop").await.unwrap();
    let item = create_product_as(&app, &tokens.access_token, product(&shop.id, "Discreet lamp", "furniture", 4200))
        .await
        .unwrap();
    let refreshed = refresh(&app, &logged_in.tokens.unwrap().refresh_token).await.unwrap();
    let (_, key_secret) = app.create_api_key(&user_id, "private key").await;
    try_login(&app, email, "a-wrong-guess").await.unwrap_err();

    // Everything anyone can read about the seller and their goods.
    let mut public = app.catalog_as(None);
    let seen = [
        format!("{:?}", public.get_seller(pb::GetSellerRequest { id: shop.id.clone() }).await.unwrap()),
        format!("{:?}", get_product(&app, &item.id).await.unwrap()),
        format!("{:?}", public.list_products(pb::ListProductsRequest::default()).await.unwrap()),
        format!(
            "{:?}",
            public
                .batch_get_products(pb::BatchGetProductsRequest { ids: vec![item.id.clone()], ..Default::default() })
                .await
                .unwrap()
        ),
        format!(
            "{:?}",
            app.catalog_as(Some(&refreshed.access_token))
                .get_seller(pb::GetSellerRequest { id: shop.id.clone() })
                .await
                .unwrap()
        ),
    ];
    for response in &seen {
        for private in [email, "argon2", PASSWORD, &user_id] {
            assert!(!response.contains(private), "a public response contains `{private}`: {response}");
        }
    }

    // The audit log is for admins, and even it holds no secret, token or password.
    let log = format!("{:?}", audit_events(&app, "").await);
    for secret in [
        PASSWORD,
        "a-wrong-guess",
        "argon2",
        &tokens.access_token,
        &tokens.refresh_token,
        &refreshed.access_token,
        &refreshed.refresh_token,
        &key_secret,
        &app.admin_token,
        ADMIN_PASSWORD,
    ] {
        assert!(!log.contains(secret), "the audit log contains a secret: {secret}");
    }
    assert!(log.contains("auth.login.failed"), "failed logins are audited");
}

// ------------------------------------------------------------------ login throttling ---

/// Gets RESOURCE_EXHAUSTED's advertised delay, checking the detail and the header agree.
fn advertised_delay(status: &Status) -> Duration {
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("RESOURCE_EXHAUSTED without RetryInfo: {status:?}"));
    let header = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no retry-after metadata: {status:?}"));
    assert_eq!(Duration::from_secs(header), delay, "{status:?}");
    delay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_login_attempt_after_five_failures_waits() {
    if !Backend::Sqlite.enabled() {
        return;
    }
    let app = app(Backend::Sqlite).await;
    app.register("guessed@example.com", Role::Buyer).await;
    for attempt in 1..=5 {
        assert_code(
            try_login(&app, "guessed@example.com", &format!("guess-{attempt}")).await,
            Code::Unauthenticated,
            &format!("wrong password #{attempt}"),
        );
    }
    let sixth = try_login(&app, "guessed@example.com", PASSWORD).await;
    let status = assert_code(sixth, Code::ResourceExhausted, "6th attempt, right password, after 5 failures");
    let delay = advertised_delay(&status);
    assert_eq!(delay, Duration::from_secs(1), "the first backoff step");
    tokio::time::sleep(delay).await;
    try_login(&app, "guessed@example.com", PASSWORD)
        .await
        .expect("after the advertised delay the right password works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_backoff_advertises_its_delay_and_lifts_after_it() {
    if !Backend::Sqlite.enabled() {
        return;
    }
    let app = app(Backend::Sqlite).await;
    app.register("hammered@example.com", Role::Buyer).await;
    let mut failures = 0;
    let status = loop {
        match try_login(&app, "hammered@example.com", "wrong-password").await {
            Err(s) if s.code() == Code::Unauthenticated => failures += 1,
            Err(s) if s.code() == Code::ResourceExhausted => break s,
            other => panic!("after {failures} failures: {other:?}"),
        }
        assert!(failures <= 6, "no backoff after {failures} failures");
    };
    assert!((5..=6).contains(&failures), "backoff began after {failures} failures");
    let delay = advertised_delay(&status);
    assert_eq!(delay, Duration::from_secs(1), "the first backoff step");
    assert!(!status.message().contains("hammered@example.com"));

    // The right password doesn't get around it, and another account isn't affected.
    assert_code(
        try_login(&app, "hammered@example.com", PASSWORD).await,
        Code::ResourceExhausted,
        "right password during backoff",
    );
    app.register("bystander@example.com", Role::Buyer).await;
    try_login(&app, "bystander@example.com", PASSWORD).await.expect("other accounts log in normally");

    tokio::time::sleep(delay).await;
    try_login(&app, "hammered@example.com", PASSWORD)
        .await
        .expect("after the advertised delay the right password works");
    // A success clears the record: the next mistake is an ordinary one.
    assert_code(
        try_login(&app, "hammered@example.com", "wrong-again").await,
        Code::Unauthenticated,
        "a mistake after a success",
    );
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_leaves_health_responsive_and_memory_bounded() {
    if !Backend::Sqlite.enabled() {
        return;
    }
    const LOGINS: usize = 100;
    let _alone = EXCLUSIVE.write().await;
    let app = spawn_app(Backend::Sqlite).await;
    app.register("popular@example.com", Role::Buyer).await;
    // Health on a connection of its own, so the probe measures the server, not client queueing.
    let health_channel = Channel::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(health_channel);
    let probe = HealthCheckRequest::default();
    health.check(probe.clone()).await.expect("health before");
    let rss_before = rss_bytes();

    let started = Instant::now();
    let logins: Vec<_> = (0..LOGINS)
        .map(|_| {
            let channel = app.channel.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let answer = AuthServiceClient::new(channel)
                    .login(auth_pb::LoginRequest { email: "popular@example.com".into(), password: PASSWORD.into() })
                    .await;
                (answer, asked.elapsed())
            })
        })
        .collect();
    let (mut probes, mut slowest, mut rss_peak) = (0, Duration::ZERO, rss_before);
    while !logins.iter().all(|l| l.is_finished()) {
        let sent = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(2), health.check(probe.clone()))
            .await
            .expect("health answers within 2 s during the flood")
            .expect("health check");
        let took = sent.elapsed();
        assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
        assert!(took < Duration::from_millis(100), "health took {took:?} during the login flood (probe {probes})");
        probes += 1;
        slowest = slowest.max(took);
        rss_peak = rss_peak.max(rss_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flood = started.elapsed();
    let (mut ok, mut busy, mut refusals, mut admitted) = (0, 0, Vec::new(), Vec::new());
    for login in logins {
        match login.await.expect("login task") {
            (Ok(_), took) => {
                admitted.push(took);
                ok += 1
            }
            // Refused at once, with when to come back, rather than queued for seconds.
            (Err(s), took) if s.code() == Code::ResourceExhausted && s.message().contains("too many sign-ins") => {
                let retry = s.get_error_details().retry_info().and_then(|r| r.retry_delay);
                assert!(retry.is_some_and(|d| d > Duration::ZERO), "RetryInfo: {s:?}");
                refusals.push(took);
                busy += 1;
            }
            (Err(s), _) => panic!("a login under load failed with {s:?}"),
        }
    }
    refusals.sort();
    if let Some(median) = refusals.get(refusals.len() / 2) {
        // The server refuses within milliseconds (18.9 ms median at the client, alone on the
        // machine); this bound leaves room for the rest of the suite running alongside.
        assert!(*median < Duration::from_millis(250), "refusals took {refusals:?}");
    }
    // An admitted sign-in waited at most the hashing bound (1 s by default) for its turn, where
    // a queue without admission control kept them for up to 10 s.
    let slowest_admitted = admitted.iter().max().copied().unwrap_or_default();
    assert!(slowest_admitted < Duration::from_secs(3), "an admitted login took {slowest_admitted:?}");
    // And the moment the flood is over, a sign-in is served at its normal speed.
    let after = Instant::now();
    AuthServiceClient::new(app.channel.clone())
        .login(auth_pb::LoginRequest { email: "popular@example.com".into(), password: PASSWORD.into() })
        .await
        .expect("a login after the flood");
    assert!(after.elapsed() < Duration::from_secs(1), "the first login after the flood took {:?}", after.elapsed());
    let rss_after = rss_bytes();
    let growth = rss_peak.max(rss_after).saturating_sub(rss_before);
    println!(
        "{LOGINS} logins in {flood:?}: {ok} ok (slowest {slowest_admitted:?}), {busy} refused (median {:?}); \
         {probes} health probes, slowest {slowest:?}; \
         RSS {} MiB -> peak {} MiB -> {} MiB",
        refusals.get(refusals.len() / 2),
        rss_before >> 20,
        rss_peak >> 20,
        rss_after >> 20
    );
    assert!(ok > 0, "no login succeeded");
    assert_eq!(ok + busy, LOGINS);
    assert!(probes >= 1, "the flood ended before health was probed");
    assert!(growth < 300 << 20, "memory grew by {} MiB during the login flood", growth >> 20);
}

/// Rotating JWT_SECRET logs nobody out: replicas given the new secret and the old one as
/// JWT_SECRET_PREVIOUS accept the tokens the old secret signed, and sign with the new one; once
/// the old secret is dropped, its tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_secret_rotation_keeps_sessions_alive() {
    if !Backend::Sqlite.enabled() {
        return;
    }
    let before = spawn_app(Backend::Sqlite).await;
    let url = before.database.as_ref().unwrap().url.clone();
    let (_, tokens) = before.register("rotated@example.com", Role::Buyer).await;
    let me = |app: &TestApp, token: &str| {
        let mut client = auth_as(app, token);
        async move { client.me(auth_pb::MeRequest {}).await }
    };
    const NEW: &str = "rotated-secret-1d4e7a0b3c6f9e2d5a8b1c4f7e0a3d6b";
    let during = common::spawn_on(
        &url,
        &[
            ("JWT_SECRET", NEW),
            ("SOKO_JWT_KEY_ID", "soko-2"),
            ("JWT_SECRET_PREVIOUS", TEST_JWT_SECRET),
            ("SOKO_JWT_PREVIOUS_KEY_ID", "soko-1"),
        ],
    )
    .await;
    me(&during, &tokens.access_token).await.expect("a token of the old secret works during the rotation");
    let fresh = common::login(&during.channel, "rotated@example.com", PASSWORD).await.access_token;
    me(&during, &fresh).await.expect("new tokens work");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(fresh.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["kid"], "soko-2", "new tokens are signed with the new key");

    let after = common::spawn_on(&url, &[("JWT_SECRET", NEW), ("SOKO_JWT_KEY_ID", "soko-2")]).await;
    me(&after, &fresh).await.expect("the new key's tokens outlive the rotation");
    let old = me(&after, &tokens.access_token).await.expect_err("the old secret is gone");
    assert_eq!(old.code(), Code::Unauthenticated);
}
