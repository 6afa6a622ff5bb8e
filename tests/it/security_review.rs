//! The findings of the outside security review (issue 24), one test each, on every SQL backend
//! where storage is involved: what may be read, how credentials are guessed, whom a token names,
//! what client garbage is called, how fast a revocation bites, which emails are the same, and
//! which limits refuse rather than cut.

use crate::common;

use common::{Backend, Bearer, TestApp, product, spawn_app, violated_fields};
use soko::proto::{
    catalog::{self as pb},
    soko::{
        admin::v1::{self as admin_pb},
        auth::v1::{self as auth_pb, Role, auth_service_client::AuthServiceClient},
    },
};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};

backend_tests!(
    drafts_are_visible_only_to_their_seller_and_admins,
    over_long_reasons_are_refused_not_cut,
    change_password_guesses_back_off_like_logins,
    look_alike_emails_are_one_account_or_refused,
);

const PASSWORD: &str = "password-123";

fn code<T: std::fmt::Debug>(result: Result<T, Status>, expected: Code, what: &str) -> Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), expected, "{what}: {status:?}");
    status
}

fn auth_as(app: &TestApp, token: &str) -> AuthServiceClient<InterceptedService<Channel, Bearer>> {
    AuthServiceClient::with_interceptor(app.channel.clone(), Bearer::new(Some(token)))
}

/// A seller account with its profile: (access token, seller id).
async fn seller_account(app: &TestApp, email: &str) -> (String, String) {
    let (_, tokens) = app.register(email, Role::Seller).await;
    let seller = app
        .catalog_as(Some(&tokens.access_token))
        .create_seller(pb::CreateSellerRequest { display_name: format!("Shop of {email}") })
        .await
        .expect("create seller")
        .into_inner()
        .seller
        .expect("seller");
    (tokens.access_token, seller.id)
}

async fn create_as(app: &TestApp, token: &str, seller: &str, name: &str, status: pb::ProductStatus) -> pb::Product {
    let input = pb::Product { status: status.into(), ..product(seller, name, "shoes", 1000) };
    app.catalog_as(Some(token))
        .create_product(pb::CreateProductRequest { product: Some(input) })
        .await
        .expect("create product")
        .into_inner()
        .product
        .expect("product")
}

/// The names of every product `token` sees in a listing with `status` (any when unspecified).
async fn listed(app: &TestApp, token: Option<&str>, status: pb::ProductStatus, seller: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .catalog_as(token)
            .list_products(pb::ListProductsRequest {
                filter: Some(pb::ProductFilter {
                    status: status.into(),
                    seller_id: seller.into(),
                    ..Default::default()
                }),
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list products")
            .into_inner();
        names.extend(page.products.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            names.sort();
            return names;
        }
        page_token = page.next_page_token;
    }
}

// ------------------------------------------------- 1. object-level authorisation on reads ---

async fn drafts_are_visible_only_to_their_seller_and_admins(backend: Backend) {
    use pb::ProductStatus::{Active, Archived, Draft, Unspecified};
    let app = spawn_app(backend).await;
    let (owner, shop) = seller_account(&app, "owner@example.com").await;
    let (rival, rival_shop) = seller_account(&app, "rival@example.com").await;
    let (_, buyer) = app.register("buyer@example.com", Role::Buyer).await;
    let draft = create_as(&app, &owner, &shop, "Owner draft", Draft).await;
    let active = create_as(&app, &owner, &shop, "Owner active", Active).await;
    let archived = create_as(&app, &owner, &shop, "Owner archived", Archived).await;
    create_as(&app, &rival, &rival_shop, "Rival draft", Draft).await;
    create_as(&app, &rival, &rival_shop, "Rival active", Active).await;

    let strangers =
        [("anonymous", None), ("a buyer", Some(buyer.access_token.as_str())), ("another seller", Some(&rival))];
    for (who, token) in strangers {
        let mut client = app.catalog_as(token);
        let err = client.get_product(pb::GetProductRequest { id: draft.id.clone() }).await;
        let err = code(err, Code::NotFound, &format!("{who} GetProduct of a draft"));
        assert!(!err.message().contains("Owner draft"), "{err:?}");
        for public in [&active, &archived] {
            client.get_product(pb::GetProductRequest { id: public.id.clone() }).await.expect("public statuses read");
        }
        let batch = client
            .batch_get_products(pb::BatchGetProductsRequest { ids: vec![draft.id.clone(), active.id.clone()] })
            .await
            .expect("batch")
            .into_inner();
        let names: Vec<_> = batch.products.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Owner active"], "{who}");
        assert_eq!(batch.missing_ids, [draft.id.clone()], "{who}: a hidden draft reads as missing");
        let own_drafts: &[&str] = if who == "another seller" { &["Rival draft"] } else { &[] };
        assert_eq!(listed(&app, token, Draft, "").await, own_drafts, "{who} listing drafts");
        assert_eq!(listed(&app, token, Draft, &shop).await, Vec::<String>::new(), "{who} listing a shop's drafts");
        let all = listed(&app, token, Unspecified, &shop).await;
        assert_eq!(all, ["Owner active", "Owner archived"], "{who} listing any status");
    }

    // The owner sees their own drafts, and only theirs.
    let mut mine = app.catalog_as(Some(&owner));
    let got = mine.get_product(pb::GetProductRequest { id: draft.id.clone() }).await.expect("own draft");
    assert_eq!(got.into_inner().product.unwrap().name, "Owner draft");
    assert_eq!(listed(&app, Some(&owner), Draft, "").await, ["Owner draft"]);
    assert_eq!(listed(&app, Some(&owner), Unspecified, &rival_shop).await, ["Rival active"]);
    // Admins see everything.
    assert_eq!(listed(&app, Some(&app.admin_token), Draft, "").await, ["Owner draft", "Rival draft"]);
    let batch = app
        .catalog
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest { ids: vec![draft.id.clone()] })
        .await
        .expect("admin batch")
        .into_inner();
    assert_eq!(batch.products.len(), 1);
    // Search already hid drafts; SimilarProducts of a draft reads as absent too.
}

// ------------------------------------------------------------------- 7. silent truncation ---

async fn over_long_reasons_are_refused_not_cut(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user_id, _) = app.register("reasons@example.com", Role::Buyer).await;
    let mut admin = app.admin_as(Some(&app.admin_token));
    let long = "x".repeat(501);

    let err = admin
        .set_user_role(admin_pb::SetUserRoleRequest {
            user_id: user_id.clone(),
            role: Role::Seller.into(),
            reason: long.clone(),
        })
        .await;
    let err = code(err, Code::InvalidArgument, "SetUserRole with 501 characters of reason");
    assert_eq!(violated_fields(&err), ["reason"]);
    let me = auth_as(&app, &common::login(&app.channel, "reasons@example.com", PASSWORD).await.access_token)
        .me(auth_pb::MeRequest {})
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.role(), Role::Buyer, "the refused change did not happen");

    let err = admin
        .create_api_key(admin_pb::CreateApiKeyRequest {
            user_id: user_id.clone(),
            display_name: "k".into(),
            reason: long.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(violated_fields(&code(err, Code::InvalidArgument, "CreateApiKey")), ["reason"]);
    let keys = admin
        .list_api_keys(admin_pb::ListApiKeysRequest { user_id: user_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(keys.api_keys.is_empty(), "no key was created: {keys:?}");

    let err = admin
        .revoke_api_key(admin_pb::RevokeApiKeyRequest { id: uuid::Uuid::now_v7().to_string(), reason: long })
        .await;
    assert_eq!(violated_fields(&code(err, Code::InvalidArgument, "RevokeApiKey")), ["reason"]);

    // Exactly 500 characters (multi-byte ones included) is within the limit.
    admin
        .set_user_role(admin_pb::SetUserRoleRequest { user_id, role: Role::Seller.into(), reason: "é".repeat(500) })
        .await
        .expect("500 characters of reason");
}

// --------------------------------------------------- 4. client garbage is the client's fault ---

/// Sends bytes as they are, so a test can put anything on the wire.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

async fn raw_call(channel: &Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    grpc.unary(tonic::Request::new(body), http::uri::PathAndQuery::from_static(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_argument_not_internal() {
    let app = spawn_app(Backend::Sqlite).await;
    // Field 1 (a string in each of these requests) holding five bytes of invalid UTF-8.
    let bad_utf8 = vec![0x0a, 0x05, 0xff, 0xfe, 0xfd, 0xfc, 0xfb];
    // 5,000 nested start-group tags: far past prost's recursion limit.
    let deep = vec![0x0b; 5_000];
    // A length prefix running past the end of the message.
    let truncated = vec![0x0a, 0x7f, b'a'];
    let paths = [
        "/soko.catalog.v1.CatalogService/GetProduct",
        "/soko.search.v1.SearchService/SearchProducts",
        "/soko.auth.v1.AuthService/Login",
    ];
    for path in paths {
        for (what, body) in [("invalid UTF-8", &bad_utf8), ("deep nesting", &deep), ("truncated", &truncated)] {
            let err = raw_call(&app.channel, path, body.clone()).await;
            let err = code(err, Code::InvalidArgument, &format!("{what} to {path}"));
            assert!(err.message().contains("not a valid protobuf message"), "{what} to {path}: {err:?}");
        }
    }

    // grpc-web over HTTP/1.1 takes the same codec.
    let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")];
    let body = common::http::grpc_frame(&bad_utf8);
    let response =
        common::http::request(app.grpc_addr, "POST", "/soko.catalog.v1.CatalogService/GetProduct", &headers, &body)
            .await;
    let status = response.header("grpc-status").map(str::to_owned).or_else(|| {
        common::http::grpc_web_frames(&response.body).1.into_iter().find(|(k, _)| k == "grpc-status").map(|(_, v)| v)
    });
    assert_eq!(status.as_deref(), Some("3"), "grpc-web: {:?}", response.headers);

    // The server is unharmed.
    let categories = app.catalog.clone().list_categories(pb::ListCategoriesRequest {}).await.expect("still serving");
    assert!(!categories.into_inner().categories.is_empty());
}

// ------------------------------------------------- 2. password guessing through ChangePassword ---

async fn change_password_guesses_back_off_like_logins(backend: Backend) {
    use tonic_types::StatusExt;
    let app = spawn_app(backend).await;
    let (user_id, tokens) = app.register("guessed@example.com", Role::Buyer).await;
    let mut stolen = auth_as(&app, &tokens.access_token);
    let guess = |current: &str| auth_pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: "attacker-chosen-1".into(),
    };
    for i in 0..5 {
        let err = stolen.change_password(guess(&format!("wrong-guess-{i}"))).await;
        assert_eq!(violated_fields(&code(err, Code::InvalidArgument, "a wrong guess")), ["current_password"]);
    }
    // Five free failures, as for Login; then even the right password waits.
    let blocked = code(stolen.change_password(guess(PASSWORD)).await, Code::ResourceExhausted, "sixth attempt");
    let retry = blocked.get_details_retry_info().expect("RetryInfo").retry_delay.expect("delay");
    assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(1), "{retry:?}");
    // The backoff is the account's, shared with Login.
    let login = app
        .auth()
        .login(auth_pb::LoginRequest { email: "guessed@example.com".into(), password: PASSWORD.into() })
        .await;
    code(login, Code::ResourceExhausted, "login while ChangePassword backs off");

    // Each wrong guess is in the audit log, against the account.
    let events = app
        .admin_as(Some(&app.admin_token))
        .list_audit_events(admin_pb::ListAuditEventsRequest {
            action: "auth.password.change_failed".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    assert_eq!(events.len(), 5, "{events:#?}");
    assert!(events.iter().all(|e| e.resource == format!("users/{user_id}") && e.status_code == "INVALID_ARGUMENT"));

    // After the wait the right password works, and clears the record.
    tokio::time::sleep(retry + std::time::Duration::from_millis(50)).await;
    stolen.change_password(guess(PASSWORD)).await.expect("the right password after the wait");
}

// ------------------------------------------------------------------- 6. look-alike emails ---

async fn look_alike_emails_are_one_account_or_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let register = |email: &str| {
        let mut auth = app.auth();
        let email = email.to_owned();
        async move {
            auth.register(auth_pb::RegisterRequest { email, password: PASSWORD.into(), role: Role::Buyer.into() }).await
        }
    };
    register("ada@example.com").await.expect("the real account");
    register("sam@example.com").await.expect("another real account");
    // Fullwidth and long-s spellings are the same address, so the same account.
    for twin in ["ａｄａ@example.com", "ADA@ＥＸＡＭＰＬＥ.com", "ſam@example.com"] {
        code(register(twin).await, Code::AlreadyExists, twin);
    }
    // Cyrillic а (U+0430) in place of Latin a: refused, not a new account.
    for mixed in ["\u{430}da@example.com", "ada@ex\u{430}mple.com"] {
        let err = code(register(mixed).await, Code::InvalidArgument, mixed);
        assert_eq!(violated_fields(&err), ["email"], "{mixed}");
    }
    // Signing in with a compatibility spelling reaches the real account.
    let login = app
        .auth()
        .login(auth_pb::LoginRequest { email: "ａｄａ@example.com".into(), password: PASSWORD.into() })
        .await
        .expect("fullwidth spelling logs into the real account")
        .into_inner();
    assert_eq!(login.user.unwrap().email, "ada@example.com");
    // A mailbox in one non-Latin script is an account of its own.
    let user = register("мария@example.com").await.expect("all-Cyrillic local part").into_inner().user.unwrap();
    assert_eq!(user.email, "мария@example.com");
}
