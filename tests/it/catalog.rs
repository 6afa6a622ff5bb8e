//! The catalog suite, run against SQLite, PostgreSQL and MariaDB alike.

use crate::common;

use std::collections::HashSet;

use common::{Backend, every_field, product, spawn_app, violated_fields};
use prost_types::FieldMask;
use soko::proto::catalog as pb;
use tonic::Code;

backend_tests!(
    create_then_get_returns_every_field,
    reads_leave_the_embedding_out_unless_the_read_mask_names_it,
    categories_are_data_and_can_grow,
    batch_get_keeps_request_order_and_reports_missing,
    list_filters_by_category_seller_price_currency_and_status,
    list_sorts_by_newest_and_price,
    pages_have_no_duplicates_or_gaps_while_rows_are_inserted,
    page_size_is_clamped_to_100,
    update_changes_only_the_masked_fields,
    update_rejects_bad_masks_and_values,
    delete_is_soft_and_hides_the_product,
    every_write_commits_an_outbox_event,
    each_validation_rule_names_its_field,
    unknown_ids_are_not_found,
    tampered_or_foreign_page_tokens_are_invalid,
    hostile_strings_are_stored_verbatim_and_touch_no_other_row,
    oversized_messages_are_rejected_cleanly,
    internal_errors_reveal_nothing_in_production,
);

async fn create_then_get_returns_every_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.seller("Nairobi Kicks").await;
    let mut input = product(&seller.id, "Leather sandals ✓", "shoes", 250_000);
    input.description = "Hand-stitched.\nSizes 36–46.".into();
    input.image_urls = vec!["https://img.example/1.webp".into(), "media/2.webp".into()];
    input.embedding = (0..8).map(|i| i as f32 / 8.0).collect();
    let created = app.create(input.clone()).await;

    assert!(created.id.parse::<uuid::Uuid>().is_ok());
    assert!(created.create_time.is_some() && created.create_time == created.update_time);
    // Every field, the embedding included, when the read mask names them all.
    let fetched = app
        .catalog
        .clone()
        .get_product(pb::GetProductRequest { id: created.id.clone(), read_mask: every_field() })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(fetched, created);
    // By default everything but the embedding, which browsing clients do not need (issue 20).
    let lean = app
        .catalog
        .clone()
        .get_product(pb::GetProductRequest { id: created.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(lean, pb::Product { embedding: vec![], ..created.clone() });
    assert_eq!(fetched.name, input.name);
    assert_eq!(fetched.description, input.description);
    assert_eq!(fetched.price, input.price);
    assert_eq!(fetched.category_id, "shoes");
    assert_eq!(fetched.seller_id, seller.id);
    assert_eq!(fetched.image_urls, input.image_urls);
    assert_eq!(fetched.embedding, input.embedding);
    assert_eq!(fetched.status(), pb::ProductStatus::Active);

    // Unspecified status means draft; no embedding is allowed.
    let mut draft = product(&seller.id, "Draft boots", "shoes", 100);
    draft.status = 0;
    draft.embedding.clear();
    let draft = app.create(draft).await;
    assert_eq!(draft.status(), pb::ProductStatus::Draft);
    assert!(draft.embedding.is_empty());

    let got = app.catalog.clone().get_seller(pb::GetSellerRequest { id: seller.id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().seller.unwrap(), seller);
}

async fn categories_are_data_and_can_grow(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.catalog.clone();
    let ids = |r: pb::ListCategoriesResponse| r.categories.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let initial = ids(client.list_categories(pb::ListCategoriesRequest {}).await.unwrap().into_inner());
    assert_eq!(initial, ["accessories", "dresses", "furniture", "jewelry", "shoes"]);

    let category = pb::Category { id: "home-decor".into(), display_name: "Home décor".into() };
    client.create_category(pb::CreateCategoryRequest { category: Some(category.clone()) }).await.unwrap();
    let again = client.create_category(pb::CreateCategoryRequest { category: Some(category) }).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = pb::Category { id: "Bad Slug".into(), display_name: String::new() };
    let err = client.create_category(pb::CreateCategoryRequest { category: Some(bad) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["category.id", "category.display_name"]);

    let after = ids(client.list_categories(pb::ListCategoriesRequest {}).await.unwrap().into_inner());
    assert!(after.contains(&"home-decor".to_string()));
    let seller = app.seller("Decor Shop").await;
    app.create(product(&seller.id, "Woven wall hanging", "home-decor", 1200)).await;
}

async fn batch_get_keeps_request_order_and_reports_missing(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.seller("Batch Seller").await;
    let a = app.create(product(&seller.id, "Item A", "shoes", 100)).await;
    let b = app.create(product(&seller.id, "Item B", "shoes", 200)).await;
    let gone = app.create(product(&seller.id, "Item C", "shoes", 300)).await;
    app.catalog.clone().delete_product(pb::DeleteProductRequest { id: gone.id.clone() }).await.unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();

    let response = app
        .catalog
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest {
            ids: vec![b.id.clone(), unknown.clone(), a.id.clone(), gone.id.clone(), b.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = response.products.iter().map(|p| p.id.clone()).collect();
    assert_eq!(got, [b.id.clone(), a.id.clone()]);
    assert_eq!(response.missing_ids, [unknown, gone.id]);

    let err = app
        .catalog
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest { ids: vec![], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let too_many = vec![a.id.clone(); 101];
    let err = app
        .catalog
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest { ids: too_many, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids"]);
    let err = app
        .catalog
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest {
            ids: vec![a.id.clone(), "nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["ids[1]"]);
}

async fn list_all(app: &common::TestApp, filter: pb::ProductFilter, sort: pb::ProductSort) -> Vec<pb::Product> {
    let mut client = app.catalog.clone();
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_products(pb::ListProductsRequest {
                filter: Some(filter.clone()),
                sort: sort.into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.products);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn names(products: &[pb::Product]) -> Vec<&str> {
    products.iter().map(|p| p.name.as_str()).collect()
}

async fn list_filters_by_category_seller_price_currency_and_status(backend: Backend) {
    let app = spawn_app(backend).await;
    let s1 = app.seller("Seller One").await;
    let s2 = app.seller("Seller Two").await;
    app.create(product(&s1.id, "Cheap shoes", "shoes", 500)).await;
    app.create(product(&s1.id, "Mid shoes", "shoes", 1500)).await;
    app.create(product(&s2.id, "Dear shoes", "shoes", 9000)).await;
    app.create(product(&s2.id, "Red dress", "dresses", 1500)).await;
    let mut naira = product(&s2.id, "Naira dress", "dresses", 1500);
    naira.price = Some(pb::Money { amount_minor: 1500, currency_code: "NGN".into() });
    app.create(naira).await;
    let mut archived = product(&s1.id, "Old shoes", "shoes", 700);
    archived.status = pb::ProductStatus::Archived.into();
    app.create(archived).await;

    let newest = pb::ProductSort::PriceAsc;
    let by = |f: pb::ProductFilter| list_all(&app, f, newest);
    assert_eq!(
        names(&by(pb::ProductFilter { category_id: "shoes".into(), ..Default::default() }).await),
        ["Cheap shoes", "Old shoes", "Mid shoes", "Dear shoes"]
    );
    assert_eq!(
        names(&by(pb::ProductFilter { seller_id: s2.id.clone(), ..Default::default() }).await),
        ["Red dress", "Naira dress", "Dear shoes"]
    );
    assert_eq!(
        names(&by(pb::ProductFilter { min_price_minor: 600, max_price_minor: 1500, ..Default::default() }).await),
        ["Old shoes", "Mid shoes", "Red dress", "Naira dress"]
    );
    assert_eq!(
        names(&by(pb::ProductFilter { currency_code: "NGN".into(), ..Default::default() }).await),
        ["Naira dress"]
    );
    assert_eq!(
        names(&by(pb::ProductFilter { status: pb::ProductStatus::Archived.into(), ..Default::default() }).await),
        ["Old shoes"]
    );
    assert_eq!(
        names(
            &by(pb::ProductFilter {
                category_id: "shoes".into(),
                seller_id: s1.id.clone(),
                status: pb::ProductStatus::Active.into(),
                max_price_minor: 1000,
                ..Default::default()
            })
            .await
        ),
        ["Cheap shoes"]
    );
    assert!(by(pb::ProductFilter { category_id: "furniture".into(), ..Default::default() }).await.is_empty());

    let mut client = app.catalog.clone();
    let bad = pb::ListProductsRequest {
        filter: Some(pb::ProductFilter {
            category_id: "NOT A SLUG".into(),
            seller_id: "x".into(),
            min_price_minor: 10,
            max_price_minor: 5,
            currency_code: "kes".into(),
            status: 42,
        }),
        page_size: -1,
        ..Default::default()
    };
    let err = client.list_products(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "filter.category_id",
            "filter.seller_id",
            "filter.currency_code",
            "filter.status",
            "filter.max_price_minor",
            "page_size"
        ]
    );
}

async fn list_sorts_by_newest_and_price(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Sorter").await;
    for (name, price) in [("First", 300), ("Second", 100), ("Third", 300), ("Fourth", 200)] {
        app.create(product(&s.id, name, "jewelry", price)).await;
    }
    let all = pb::ProductFilter::default();
    assert_eq!(
        names(&list_all(&app, all.clone(), pb::ProductSort::Newest).await),
        ["Fourth", "Third", "Second", "First"]
    );
    assert_eq!(
        names(&list_all(&app, all.clone(), pb::ProductSort::Unspecified).await),
        ["Fourth", "Third", "Second", "First"]
    );
    let asc = list_all(&app, all.clone(), pb::ProductSort::PriceAsc).await;
    let prices: Vec<i64> = asc.iter().map(|p| p.price.as_ref().unwrap().amount_minor).collect();
    assert_eq!(prices, [100, 200, 300, 300]);
    // Equal prices are ordered by id, and ids are time-ordered.
    assert_eq!(names(&asc)[2..], ["First", "Third"]);
    let desc = list_all(&app, all, pb::ProductSort::PriceDesc).await;
    assert_eq!(names(&desc), ["Third", "First", "Fourth", "Second"]);

    let err = app
        .catalog
        .clone()
        .list_products(pb::ListProductsRequest { sort: 99, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["sort"]);
}

async fn pages_have_no_duplicates_or_gaps_while_rows_are_inserted(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Pager").await;
    let mut expected = HashSet::new();
    for i in 0..23 {
        let p = app.create(product(&s.id, &format!("Item {i:02}"), "furniture", 100 + (i % 5) * 10)).await;
        expected.insert(p.id);
    }
    for sort in [pb::ProductSort::Newest, pb::ProductSort::PriceAsc, pb::ProductSort::PriceDesc] {
        let mut client = app.catalog.clone();
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut inserted = HashSet::new();
        loop {
            let page = client
                .list_products(pb::ListProductsRequest {
                    sort: sort.into(),
                    page_size: 4,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.products.len() <= 4);
            seen.extend(page.products.into_iter().map(|p| p.id));
            // Someone else lists a product between our pages.
            let p = app.create(product(&s.id, "Interloper", "furniture", 120)).await;
            inserted.insert(p.id);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{sort:?}: a row appeared twice");
        assert!(expected.is_subset(&unique), "{sort:?}: a row present at the start was skipped");
        assert!(unique.difference(&expected).all(|id| inserted.contains(id)));
        expected.extend(inserted);
    }
}

async fn page_size_is_clamped_to_100(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Bulk").await;
    for i in 0..105 {
        app.create(product(&s.id, &format!("Bulk {i}"), "accessories", 100)).await;
    }
    let mut client = app.catalog.clone();
    let page = client.list_products(pb::ListProductsRequest { page_size: 1000, ..Default::default() }).await.unwrap();
    let page = page.into_inner();
    assert_eq!(page.products.len(), 100);
    assert!(!page.next_page_token.is_empty());
    let page = client.list_products(pb::ListProductsRequest::default()).await.unwrap().into_inner();
    assert_eq!(page.products.len(), 20, "default page size");
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

async fn update_changes_only_the_masked_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Updater").await;
    let original = app.create(product(&s.id, "Plain chair", "furniture", 5000)).await;
    let mut client = app.catalog.clone();

    let change = pb::Product {
        id: original.id.clone(),
        name: "Carved chair".into(),
        description: "ignored: not in the mask".into(),
        price: Some(pb::Money { amount_minor: 7500, currency_code: "KES".into() }),
        status: pb::ProductStatus::Archived.into(),
        ..Default::default()
    };
    let updated = client
        .update_product(pb::UpdateProductRequest {
            product: Some(change),
            update_mask: mask(&["name", "price", "status"]),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(updated.name, "Carved chair");
    assert_eq!(updated.price.as_ref().unwrap().amount_minor, 7500);
    assert_eq!(updated.status(), pb::ProductStatus::Archived);
    assert_eq!(updated.description, original.description);
    assert_eq!(updated.image_urls, original.image_urls);
    assert_eq!(updated.embedding, original.embedding);
    assert_eq!(updated.create_time, original.create_time);
    let micros =
        |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000);
    assert!(micros(&updated.update_time) > micros(&original.update_time));

    // Clearing fields through the mask: empty images and no embedding.
    let clear = pb::Product { id: original.id.clone(), category_id: "accessories".into(), ..Default::default() };
    let cleared = client
        .update_product(pb::UpdateProductRequest {
            product: Some(clear),
            update_mask: mask(&["image_urls", "embedding", "category_id", "description"]),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert!(cleared.image_urls.is_empty() && cleared.embedding.is_empty() && cleared.description.is_empty());
    assert_eq!(cleared.category_id, "accessories");
    assert_eq!(cleared.name, "Carved chair");

    let fetched = client
        .get_product(pb::GetProductRequest { id: original.id, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .product;
    assert_eq!(fetched.unwrap(), cleared);
}

async fn update_rejects_bad_masks_and_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Strict").await;
    let p = app.create(product(&s.id, "Strict item", "shoes", 100)).await;
    let mut client = app.catalog.clone();
    let call = |product: pb::Product, paths: &[&str]| {
        let mut client = client.clone();
        let update_mask = if paths.is_empty() { None } else { mask(paths) };
        async move { client.update_product(pb::UpdateProductRequest { product: Some(product), update_mask }).await }
    };
    let base = pb::Product { id: p.id.clone(), ..Default::default() };

    let err = call(base.clone(), &[]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask"]);
    let err = call(base.clone(), &["seller_id"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask"]);
    let err = call(base.clone(), &["name", "price", "status", "category_id"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["product.name", "product.price", "product.status", "product.category_id"]);
    let unknown_category = pb::Product { category_id: "spaceships".into(), ..base.clone() };
    let err = call(unknown_category, &["category_id"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["product.category_id"]);
    let bad_embedding = pb::Product { embedding: vec![1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], ..base.clone() };
    let err = call(bad_embedding, &["embedding"]).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["product.embedding"]);
    let unknown = pb::Product { id: uuid::Uuid::now_v7().to_string(), name: "Valid name".into(), ..Default::default() };
    assert_eq!(call(unknown, &["name"]).await.unwrap_err().code(), Code::NotFound);
    let err = client
        .update_product(pb::UpdateProductRequest { product: None, update_mask: mask(&["name"]) })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["product"]);

    let unchanged = client
        .get_product(pb::GetProductRequest { id: p.id.clone(), read_mask: every_field() })
        .await
        .unwrap()
        .into_inner()
        .product;
    assert_eq!(unchanged.unwrap(), p, "failed updates change nothing");
}

async fn delete_is_soft_and_hides_the_product(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Deleter").await;
    let keep = app.create(product(&s.id, "Keeper", "dresses", 100)).await;
    let doomed = app.create(product(&s.id, "Doomed", "dresses", 100)).await;
    let mut client = app.catalog.clone();
    client.delete_product(pb::DeleteProductRequest { id: doomed.id.clone() }).await.unwrap();

    let err =
        client.get_product(pb::GetProductRequest { id: doomed.id.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = list_all(&app, pb::ProductFilter::default(), pb::ProductSort::Newest).await;
    assert_eq!(names(&listed), ["Keeper"]);
    let err = client.delete_product(pb::DeleteProductRequest { id: doomed.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let change = pb::Product { id: doomed.id.clone(), name: "Revived".into(), ..Default::default() };
    let err = client
        .update_product(pb::UpdateProductRequest { product: Some(change), update_mask: mask(&["name"]) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.db.count_products().await.unwrap(), 1, "the row is kept but not counted as live");
    assert!(client.get_product(pb::GetProductRequest { id: keep.id, ..Default::default() }).await.is_ok());
}

async fn every_write_commits_an_outbox_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Outboxer").await;
    let p = app.create(product(&s.id, "Evented", "shoes", 100)).await;
    let mut client = app.catalog.clone();
    let change = pb::Product { id: p.id.clone(), embedding: vec![0.25; 8], ..Default::default() };
    client
        .update_product(pb::UpdateProductRequest { product: Some(change), update_mask: mask(&["embedding"]) })
        .await
        .unwrap();
    client.delete_product(pb::DeleteProductRequest { id: p.id.clone() }).await.unwrap();
    // A refused write leaves no event behind.
    let mut bad = product(&s.id, "Bad", "nope-category", 100);
    bad.name = "Refused".into();
    assert!(client.create_product(pb::CreateProductRequest { product: Some(bad) }).await.is_err());

    let events = app.db.outbox_after(0, 100).await.unwrap();
    let summary: Vec<(&str, &str, Option<Vec<f32>>)> =
        events.iter().map(|e| (e.product_id.as_str(), e.op.as_str(), e.embedding.clone())).collect();
    assert_eq!(
        summary,
        [
            (p.id.as_str(), "upsert", Some(vec![0.5; 8])),
            (p.id.as_str(), "upsert", Some(vec![0.25; 8])),
            (p.id.as_str(), "delete", None),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "outbox ids increase");
    assert_eq!(app.db.outbox_after(events[1].id, 100).await.unwrap().len(), 1);
}

async fn each_validation_rule_names_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Validator").await;
    let mut client = app.catalog.clone();
    let create = |p: pb::Product| {
        let mut client = client.clone();
        async move { client.create_product(pb::CreateProductRequest { product: Some(p) }).await.unwrap_err() }
    };
    let valid = product(&s.id, "Valid name", "shoes", 100);
    let cases: Vec<(&str, pb::Product)> = vec![
        ("product.name", pb::Product { name: "ab".into(), ..valid.clone() }),
        ("product.name", pb::Product { name: "x".repeat(201), ..valid.clone() }),
        ("product.name", pb::Product { name: "tab\tin name".into(), ..valid.clone() }),
        ("product.description", pb::Product { description: "d".repeat(2001), ..valid.clone() }),
        ("product.description", pb::Product { description: "nul\0".into(), ..valid.clone() }),
        ("product.price", pb::Product { price: None, ..valid.clone() }),
        (
            "product.price.amount_minor",
            pb::Product { price: Some(pb::Money { amount_minor: 0, currency_code: "KES".into() }), ..valid.clone() },
        ),
        (
            "product.price.amount_minor",
            pb::Product { price: Some(pb::Money { amount_minor: -5, currency_code: "KES".into() }), ..valid.clone() },
        ),
        (
            "product.price.currency_code",
            pb::Product { price: Some(pb::Money { amount_minor: 5, currency_code: "XYZ".into() }), ..valid.clone() },
        ),
        ("product.category_id", pb::Product { category_id: String::new(), ..valid.clone() }),
        ("product.category_id", pb::Product { category_id: "unknown-category".into(), ..valid.clone() }),
        ("product.seller_id", pb::Product { seller_id: "not-a-uuid".into(), ..valid.clone() }),
        ("product.seller_id", pb::Product { seller_id: uuid::Uuid::now_v7().to_string(), ..valid.clone() }),
        ("product.image_urls", pb::Product { image_urls: vec!["a.webp".into(); 11], ..valid.clone() }),
        ("product.image_urls", pb::Product { image_urls: vec![String::new()], ..valid.clone() }),
        ("product.embedding", pb::Product { embedding: vec![0.1; 7], ..valid.clone() }),
        ("product.embedding", pb::Product { embedding: vec![f32::INFINITY; 8], ..valid.clone() }),
        ("product.status", pb::Product { status: 17, ..valid.clone() }),
    ];
    for (field, input) in cases {
        let err = create(input).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(violated_fields(&err), [field], "{err:?}");
    }
    // Several bad fields are all reported at once.
    let err = create(pb::Product { name: String::new(), price: None, category_id: "?".into(), ..valid.clone() }).await;
    assert_eq!(violated_fields(&err), ["product.name", "product.price", "product.category_id"]);
    let err = client.create_product(pb::CreateProductRequest { product: None }).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["product"]);
    let err = client.create_seller(pb::CreateSellerRequest { display_name: "x".into() }).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["display_name"]);
    assert_eq!(app.db.count_products().await.unwrap(), 0, "nothing invalid was stored");
}

async fn unknown_ids_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.catalog.clone();
    let id = uuid::Uuid::now_v7().to_string();
    let err = client.get_product(pb::GetProductRequest { id: id.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&id));
    let err = client.delete_product(pb::DeleteProductRequest { id: id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client.get_seller(pb::GetSellerRequest { id }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client.get_product(pb::GetProductRequest { id: "42".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["id".to_string()]));
}

async fn tampered_or_foreign_page_tokens_are_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Tokens").await;
    for i in 0..3 {
        app.create(product(&s.id, &format!("Token item {i}"), "shoes", 100)).await;
    }
    let mut client = app.catalog.clone();
    let first = client
        .list_products(pb::ListProductsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let other_filter = pb::ListProductsRequest {
        filter: Some(pb::ProductFilter { category_id: "dresses".into(), ..Default::default() }),
        page_size: 1,
        page_token: token.clone(),
        ..Default::default()
    };
    let other_sort = pb::ListProductsRequest {
        sort: pb::ProductSort::PriceAsc.into(),
        page_size: 1,
        page_token: token.clone(),
        ..Default::default()
    };
    for request in [
        pb::ListProductsRequest {
            page_size: 1,
            page_token: String::from_utf8(tampered).unwrap(),
            ..Default::default()
        },
        pb::ListProductsRequest { page_size: 1, page_token: "' OR 1=1 --".into(), ..Default::default() },
        other_filter,
        other_sort,
    ] {
        let err = client.list_products(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["page_token"]);
    }
    let ok =
        client.list_products(pb::ListProductsRequest { page_size: 1, page_token: token, ..Default::default() }).await;
    assert_eq!(ok.unwrap().into_inner().products.len(), 1);
}

async fn hostile_strings_are_stored_verbatim_and_touch_no_other_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Bystander").await;
    let bystander = app.create(product(&s.id, "Bystander product", "shoes", 100)).await;
    let payloads = [
        "'; DROP TABLE products; --",
        "\" OR \"1\"=\"1",
        "1' OR '1'='1' /*",
        "<script>alert(document.cookie)</script>",
        "<img src=x onerror=alert(1)>",
        "Robert'); UPDATE products SET name='pwned'; --",
        "\\'; SELECT pg_sleep(5); --",
        "%_%' AND 1=(SELECT COUNT(*) FROM sellers) --",
    ];
    let mut client = app.catalog.clone();
    for payload in payloads {
        let hostile_seller = client
            .create_seller(pb::CreateSellerRequest { display_name: payload.into() })
            .await
            .unwrap()
            .into_inner()
            .seller
            .unwrap();
        assert_eq!(hostile_seller.display_name, payload);
        let input = pb::Product {
            name: payload.into(),
            description: format!("{payload}\n{payload}"),
            image_urls: vec![payload.replace(' ', "%20")],
            ..product(&hostile_seller.id, "x", "shoes", 100)
        };
        let created = app.create(input.clone()).await;
        let fetched = client
            .get_product(pb::GetProductRequest { id: created.id, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        assert_eq!((fetched.name.as_str(), fetched.description.as_str()), (payload, input.description.as_str()));
        assert_eq!(fetched.image_urls, input.image_urls);

        // Hostile filters are just values that match nothing.
        let err = client
            .list_products(pb::ListProductsRequest {
                filter: Some(pb::ProductFilter { category_id: payload.into(), ..Default::default() }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err =
            client.get_product(pb::GetProductRequest { id: payload.into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let still =
        client.get_product(pb::GetProductRequest { id: bystander.id.clone(), read_mask: every_field() }).await.unwrap();
    assert_eq!(still.into_inner().product.unwrap(), bystander);
    assert_eq!(app.db.count_products().await.unwrap(), 1 + payloads.len() as i64);
    let categories = client.list_categories(pb::ListCategoriesRequest {}).await.unwrap().into_inner().categories;
    assert_eq!(categories.len(), 5);
}

async fn oversized_messages_are_rejected_cleanly(backend: Backend) {
    let app = common::spawn_app_with(backend, &[("SOKO_MAX_MESSAGE_BYTES", "65536")]).await;
    let s = app.seller("Big").await;
    let mut client = app.catalog.clone();
    let huge = pb::Product { description: "x".repeat(100_000), ..product(&s.id, "Huge", "shoes", 100) };
    let err = client.create_product(pb::CreateProductRequest { product: Some(huge) }).await.unwrap_err();
    assert!(matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange), "{err:?}");
    // Under the limit but over a field limit: a field violation, not a transport error.
    let long = pb::Product { description: "x".repeat(2001), ..product(&s.id, "Long", "shoes", 100) };
    let err = client.create_product(pb::CreateProductRequest { product: Some(long) }).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["product.description"]);
    // The connection is still good.
    assert!(client.list_categories(pb::ListCategoriesRequest {}).await.is_ok());
    assert_eq!(app.db.count_products().await.unwrap(), 0);
}

async fn internal_errors_reveal_nothing_in_production(backend: Backend) {
    let app = common::spawn_app_with(backend, &[("SOKO_ENV", "production")]).await;
    let s = app.seller("Corrupted").await;
    let p = app.create(product(&s.id, "Soon corrupt", "shoes", 100)).await;
    // A row no version of Soko writes: reading it is a server fault, not the caller's.
    let database = app.database.as_ref().unwrap();
    database.execute(&format!("UPDATE products SET status = 'stolen-secret' WHERE id = '{}'", p.id)).await;

    let err = app
        .catalog
        .clone()
        .get_product(pb::GetProductRequest { id: p.id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "internal error");
    let details = String::from_utf8_lossy(err.details()).to_lowercase();
    for leak in ["stolen-secret", "status", "products", "diesel", "sql"] {
        assert!(!details.contains(leak), "details leak `{leak}`: {details}");
    }
    // Other rows still serve.
    let other = app.create(product(&s.id, "Healthy", "shoes", 100)).await;
    assert!(
        app.catalog.clone().get_product(pb::GetProductRequest { id: other.id, ..Default::default() }).await.is_ok()
    );
}

/// Lean reads (issue 20): GetProduct, BatchGetProducts and ListProducts leave the embedding out by
/// default, return exactly the fields a `read_mask` names, and refuse unknown paths.
async fn reads_leave_the_embedding_out_unless_the_read_mask_names_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let seller = app.seller("Lean Seller").await;
    let created = app.create(product(&seller.id, "Lean sandals", "shoes", 900)).await;
    assert_eq!(created.embedding.len(), 8, "writes answer the whole product");
    let mut client = app.catalog.clone();
    let mask = |paths: &[&str]| Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });

    let listed = client
        .list_products(pb::ListProductsRequest { page_size: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .products;
    assert_eq!(listed, [pb::Product { embedding: vec![], ..created.clone() }]);
    let batch = client
        .batch_get_products(pb::BatchGetProductsRequest { ids: vec![created.id.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .products;
    assert_eq!(batch, listed);

    let names = client
        .list_products(pb::ListProductsRequest { read_mask: mask(&["name", "price"]), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .products;
    let expected = pb::Product {
        id: created.id.clone(),
        name: created.name.clone(),
        price: created.price.clone(),
        ..Default::default()
    };
    assert_eq!(names, [expected]);
    let with_vector = client
        .get_product(pb::GetProductRequest { id: created.id.clone(), read_mask: mask(&["embedding"]) })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((with_vector.embedding, with_vector.name), (created.embedding.clone(), String::new()));

    let err = client
        .batch_get_products(pb::BatchGetProductsRequest { ids: vec![created.id.clone()], read_mask: mask(&["sku"]) })
        .await
        .unwrap_err();
    assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["read_mask".to_owned()]));
}
