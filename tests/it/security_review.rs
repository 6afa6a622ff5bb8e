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

backend_tests!(drafts_are_visible_only_to_their_seller_and_admins, over_long_reasons_are_refused_not_cut,);

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
