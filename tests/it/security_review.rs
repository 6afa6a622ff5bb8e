//! The findings of the outside security review (issue 24), one test each, on every SQL backend
//! where storage is involved: what may be read, how credentials are guessed, whom a token names,
//! what client garbage is called, how fast a revocation bites, which emails are the same, and
//! which limits refuse rather than cut.

use crate::common;

use common::{Backend, Bearer, TestApp, product, session_of, spawn_app, violated_fields};
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
    principals_that_no_longer_exist_are_unauthenticated,
    revocations_and_role_changes_bite_within_a_second_on_every_replica,
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
        let err = client.get_product(pb::GetProductRequest { id: draft.id.clone(), ..Default::default() }).await;
        let err = code(err, Code::NotFound, &format!("{who} GetProduct of a draft"));
        assert!(!err.message().contains("Owner draft"), "{err:?}");
        for public in [&active, &archived] {
            client
                .get_product(pb::GetProductRequest { id: public.id.clone(), ..Default::default() })
                .await
                .expect("public statuses read");
        }
        let batch = client
            .batch_get_products(pb::BatchGetProductsRequest {
                ids: vec![draft.id.clone(), active.id.clone()],
                ..Default::default()
            })
            .await
            .expect("batch")
            .into_inner();
        let names: Vec<_> = batch.products.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Owner active"], "{who}");
        assert_eq!(batch.missing_ids, std::slice::from_ref(&draft.id), "{who}: a hidden draft reads as missing");
        let own_drafts: &[&str] = if who == "another seller" { &["Rival draft"] } else { &[] };
        assert_eq!(listed(&app, token, Draft, "").await, own_drafts, "{who} listing drafts");
        assert_eq!(listed(&app, token, Draft, &shop).await, Vec::<String>::new(), "{who} listing a shop's drafts");
        let all = listed(&app, token, Unspecified, &shop).await;
        assert_eq!(all, ["Owner active", "Owner archived"], "{who} listing any status");
    }

    // The owner sees their own drafts, and only theirs.
    let mut mine = app.catalog_as(Some(&owner));
    let got = mine
        .get_product(pb::GetProductRequest { id: draft.id.clone(), ..Default::default() })
        .await
        .expect("own draft");
    assert_eq!(got.into_inner().product.unwrap().name, "Owner draft");
    assert_eq!(listed(&app, Some(&owner), Draft, "").await, ["Owner draft"]);
    assert_eq!(listed(&app, Some(&owner), Unspecified, &rival_shop).await, ["Rival active"]);
    // Admins see everything.
    assert_eq!(listed(&app, Some(&app.admin_token), Draft, "").await, ["Owner draft", "Rival draft"]);
    let batch = app
        .catalog
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest { ids: vec![draft.id.clone()], ..Default::default() })
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

// --------------------------------------------------------------------- 3. ghost principals ---

/// A token the server would accept for `sub` and `sid`, signed with the test servers' key.
fn signed_token(sub: &str, sid: &str, role: &str) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "iss": "soko", "aud": "soko-api", "sub": sub, "role": role, "sid": sid,
        "iat": now, "nbf": now, "exp": now + 600,
    });
    let header = Header { kid: Some("soko-1".into()), ..Header::new(jsonwebtoken::Algorithm::HS256) };
    encode(&header, &claims, &EncodingKey::from_secret(common::TEST_JWT_SECRET.as_bytes())).unwrap()
}

/// Every kind of call a ghost might make: public, authenticated, role-gated, and an admin one.
async fn assert_refused_everywhere(app: &TestApp, token: &str, who: &str) {
    let err = app.catalog_as(Some(token)).list_categories(pb::ListCategoriesRequest {}).await;
    code(err, Code::Unauthenticated, &format!("{who}: ListCategories"));
    let err = app.catalog_as(Some(token)).create_seller(pb::CreateSellerRequest { display_name: "Ghost".into() }).await;
    code(err, Code::Unauthenticated, &format!("{who}: CreateSeller"));
    code(auth_as(app, token).me(auth_pb::MeRequest {}).await, Code::Unauthenticated, &format!("{who}: Me"));
    let err = app.admin_as(Some(token)).list_users(admin_pb::ListUsersRequest::default()).await;
    code(err, Code::Unauthenticated, &format!("{who}: ListUsers"));
}

async fn principals_that_no_longer_exist_are_unauthenticated(backend: Backend) {
    let app = spawn_app(backend).await;
    let nobody = uuid::Uuid::now_v7().to_string();
    let no_session = uuid::Uuid::now_v7().to_string();
    // Correctly signed, naming no user and no session, with every role.
    for role in ["buyer", "seller", "admin"] {
        assert_refused_everywhere(&app, &signed_token(&nobody, &no_session, role), &format!("no such {role}")).await;
    }
    // A real session presented under another user's name.
    let (victim, _) = app.register("victim@example.com", Role::Buyer).await;
    let (_, mine) = app.register("mine@example.com", Role::Seller).await;
    let swapped = signed_token(&victim, &session_of(&mine.access_token), "seller");
    assert_refused_everywhere(&app, &swapped, "a session under another user's id").await;

    // An account deleted from the database behind Soko's back: its unexpired token is refused.
    let (gone, tokens) = app.register("gone@example.com", Role::Seller).await;
    let database = app.database.as_ref().expect("a throwaway database");
    database
        .execute(&format!(
            "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = '{gone}');
             DELETE FROM sessions WHERE user_id = '{gone}';
             DELETE FROM users WHERE id = '{gone}';"
        ))
        .await;
    assert_refused_everywhere(&app, &tokens.access_token, "a deleted account").await;
    // The refusals did not disturb real users.
    auth_as(&app, &mine.access_token).me(auth_pb::MeRequest {}).await.expect("a live session");
}

// ------------------------------------------------------------ 5. revocation within a second ---

/// Calls Me with `token` on `app` until it answers `expected`, and returns how long that took.
async fn until(app: &TestApp, token: &str, expected: Code, what: &str) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let got = match auth_as(app, token).me(auth_pb::MeRequest {}).await {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        };
        if got == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{what}: still {got:?} after 1 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn revocations_and_role_changes_bite_within_a_second_on_every_replica(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = common::spawn_on(&a.database.as_ref().unwrap().url, &[]).await;
    let (user_id, first) = a.register("revoked@example.com", Role::Buyer).await;
    let second = common::login(&a.channel, "revoked@example.com", PASSWORD).await;
    let third = common::login(&a.channel, "revoked@example.com", PASSWORD).await;
    // Every session is known to both replicas before anything is revoked.
    for tokens in [&first, &second, &third] {
        for app in [&a, &b] {
            auth_as(app, &tokens.access_token).me(auth_pb::MeRequest {}).await.expect("live before");
        }
    }

    // Logout on A: the session's access token stops on B as well.
    a.auth().logout(auth_pb::LogoutRequest { refresh_token: first.refresh_token.clone() }).await.expect("logout");
    let took = until(&b, &first.access_token, Code::Unauthenticated, "logged-out token on B").await;
    eprintln!("logout reached replica B in {took:?}");
    // The replica that served the logout forgets the session at once, without waiting to poll.
    code(auth_as(&a, &first.access_token).me(auth_pb::MeRequest {}).await, Code::Unauthenticated, "at once on A");

    // A password change on A ends the other session everywhere, and keeps the caller's.
    auth_as(&a, &second.access_token)
        .change_password(auth_pb::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "a-new-password-1".into(),
        })
        .await
        .expect("change password");
    until(&b, &third.access_token, Code::Unauthenticated, "another session after a password change").await;
    auth_as(&b, &second.access_token).me(auth_pb::MeRequest {}).await.expect("the changing session lives on");

    // Refresh-token reuse revokes the family, access token included.
    let rotated = a.auth().refresh(auth_pb::RefreshRequest { refresh_token: second.refresh_token.clone() }).await;
    rotated.expect("first use");
    let reuse = a.auth().refresh(auth_pb::RefreshRequest { refresh_token: second.refresh_token.clone() }).await;
    code(reuse, Code::Unauthenticated, "reuse");
    until(&b, &second.access_token, Code::Unauthenticated, "a token of a family revoked for reuse").await;

    // Demotion: an admin's token loses admin rights on B within a second.
    let mut admin = a.admin_as(Some(&a.admin_token));
    let set = |role: Role| admin_pb::SetUserRoleRequest {
        user_id: user_id.clone(),
        role: role.into(),
        reason: String::new(),
    };
    admin.set_user_role(set(Role::Admin)).await.expect("promote");
    let session = common::login(&a.channel, "revoked@example.com", "a-new-password-1").await;
    b.admin_as(Some(&session.access_token)).list_users(admin_pb::ListUsersRequest::default()).await.expect("an admin");
    admin.set_user_role(set(Role::Buyer)).await.expect("demote");
    let started = std::time::Instant::now();
    loop {
        match b.admin_as(Some(&session.access_token)).list_users(admin_pb::ListUsersRequest::default()).await {
            Err(e) if e.code() == Code::PermissionDenied => break,
            other => {
                assert!(started.elapsed() < std::time::Duration::from_secs(1), "demoted admin on B: {other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    eprintln!("demotion reached replica B in {:?}", started.elapsed());
    // The demoted user is still signed in, as a buyer.
    let me = auth_as(&b, &session.access_token).me(auth_pb::MeRequest {}).await.expect("still signed in");
    assert_eq!(me.into_inner().user.unwrap().role(), Role::Buyer);
}

/// Malformed framing, caught by tonic before any codec: the client's fault as well, except where
/// the gRPC spec itself demands INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_is_invalid_argument_not_internal() {
    let app = spawn_app(Backend::Sqlite).await;
    let proto = ("content-type", "application/grpc-web+proto");
    let mut cut_short = vec![0u8, 0, 0, 0, 100];
    cut_short.extend_from_slice(b"abc");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        ("a frame cut short", vec![proto], cut_short, "3"),
        ("an unknown compression flag", vec![proto], vec![7, 0, 0, 0, 0], "3"),
        ("gzip that does not inflate", vec![proto, ("grpc-encoding", "gzip")], vec![1, 0, 0, 0, 3, 1, 2, 3], "3"),
        ("grpc-web-text that is not base64", vec![("content-type", "application/grpc-web-text")], b"!!!".to_vec(), "3"),
        // "MUST fail with INTERNAL status" (gRPC compression spec).
        ("a compressed flag without grpc-encoding", vec![proto], vec![1, 0, 0, 0, 2, 1, 2], "13"),
    ];
    for (what, headers, body, expected) in cases {
        let response =
            common::http::request(app.grpc_addr, "POST", "/soko.catalog.v1.CatalogService/GetProduct", &headers, &body)
                .await;
        let status = response.header("grpc-status").map(str::to_owned).or_else(|| {
            common::http::grpc_web_frames(&response.body)
                .1
                .into_iter()
                .find(|(k, _)| k == "grpc-status")
                .map(|(_, v)| v)
        });
        assert_eq!(status.as_deref(), Some(expected), "{what}: {:?}", response.headers);
    }
}
