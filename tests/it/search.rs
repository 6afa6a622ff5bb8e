//! Text search over the catalog, fed by the outbox: ranking, filters, paging, bad input, and
//! convergence across replicas sharing one database — on SQLite, PostgreSQL and MariaDB.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, product, spawn_app, spawn_on, violated_fields};
use soko::proto::{
    catalog as pb,
    soko::search::v1::{
        HybridSearchRequest, SearchByVectorRequest, SearchProductsRequest, SearchSort, SimilarProductsRequest,
        search_service_client::SearchServiceClient,
    },
};
use tonic::Code;

backend_tests!(
    an_exact_name_match_ranks_first,
    search_filters_sorts_and_pages,
    only_active_products_are_searchable,
    bad_search_input_names_its_field,
    writes_on_one_replica_are_found_on_another_and_deletes_disappear,
    vector_search_finds_the_nearest_products_and_respects_filters,
    bad_vector_input_names_its_field,
    hybrid_search_ranks_products_found_both_ways_first,
);

fn query(q: &str) -> SearchProductsRequest {
    SearchProductsRequest { query: q.into(), ..Default::default() }
}

/// Searches until `accept` holds (the index follows the outbox every 50 ms), for at most 5 s.
async fn search_until(
    app: &TestApp,
    request: SearchProductsRequest,
    accept: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Duration) {
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    loop {
        let names: Vec<String> = match client.search_products(request.clone()).await {
            Ok(r) => r.into_inner().results.into_iter().map(|r| r.product.unwrap().name).collect(),
            Err(e) if e.code() == Code::Unavailable => vec![],
            Err(e) => panic!("{e:?}"),
        };
        if accept(&names) {
            return (names, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(5), "search never showed the expected results: {names:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn an_exact_name_match_ranks_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Search Shop").await.id;
    for (name, description) in [
        ("Brown leather sandals for the beach", "comfortable"),
        ("Summer shoe", "made of leather, goes well with sandals"),
        ("Leather sandals", "simple"),
        ("Teak table", "leather-free"),
    ] {
        let mut p = product(&s, name, "shoes", 100);
        p.description = description.into();
        app.create(p).await;
    }
    let (names, _) = search_until(&app, query("leather sandals"), |n| n.len() == 4).await;
    assert_eq!(names[0], "Leather sandals", "{names:?}");
    assert_eq!(names[1], "Brown leather sandals for the beach", "a name match beats a description match");
    assert_eq!(names[3], "Teak table");
    // Case and punctuation don't matter.
    let (names, _) = search_until(&app, query("  LEATHER, Sandals! "), |n| !n.is_empty()).await;
    assert_eq!(names[0], "Leather sandals");
}

async fn search_filters_sorts_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.seller("Alpha").await.id;
    let b = app.seller("Beta").await.id;
    for (seller, name, category, price) in [
        (&a, "Red wool scarf", "accessories", 900),
        (&a, "Blue wool scarf", "accessories", 400),
        (&b, "Green wool scarf", "accessories", 700),
        (&b, "Wool rug", "furniture", 5000),
    ] {
        app.create(product(seller, name, category, price)).await;
    }
    search_until(&app, query("wool"), |n| n.len() == 4).await;
    let by = |filter: pb::ProductFilter, sort: SearchSort| SearchProductsRequest {
        query: "wool scarf".into(),
        filter: Some(filter),
        sort: sort.into(),
        ..Default::default()
    };
    let (names, _) = search_until(
        &app,
        by(pb::ProductFilter { category_id: "accessories".into(), ..Default::default() }, SearchSort::PriceAsc),
        |_| true,
    )
    .await;
    assert_eq!(names, ["Blue wool scarf", "Green wool scarf", "Red wool scarf"]);
    let (names, _) = search_until(
        &app,
        by(
            pb::ProductFilter { seller_id: b.clone(), max_price_minor: 800, ..Default::default() },
            SearchSort::PriceDesc,
        ),
        |_| true,
    )
    .await;
    assert_eq!(names, ["Green wool scarf"]);

    // Pages of 2 cover every result once.
    let mut client = SearchServiceClient::new(app.channel.clone());
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .search_products(SearchProductsRequest {
                query: "wool".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.results.len() <= 2);
        seen.extend(page.results.into_iter().map(|r| r.product_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4);
    // Results leave out the embedding unless asked for.
    let first = client.search_products(query("wool")).await.unwrap().into_inner().results.remove(0);
    assert!(first.product.unwrap().embedding.is_empty());
    assert!(first.score > 0.0);
}

async fn only_active_products_are_searchable(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Lifecycle").await.id;
    let mut draft = product(&s, "Velvet cushion draft", "furniture", 100);
    draft.status = pb::ProductStatus::Draft.into();
    let draft = app.create(draft).await;
    app.create(product(&s, "Velvet cushion", "furniture", 100)).await;
    let (names, _) = search_until(&app, query("velvet cushion"), |n| !n.is_empty()).await;
    assert_eq!(names, ["Velvet cushion"]);
    // Publishing the draft makes it searchable.
    let change = pb::Product { id: draft.id, status: pb::ProductStatus::Active.into(), ..Default::default() };
    app.catalog
        .clone()
        .update_product(pb::UpdateProductRequest {
            product: Some(change),
            update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        })
        .await
        .unwrap();
    search_until(&app, query("velvet cushion"), |n| n.len() == 2).await;
}

async fn bad_search_input_names_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    search_until(&app, query("anything"), |_| true).await;
    let mut client = SearchServiceClient::new(app.channel.clone());
    let cases: Vec<(&str, SearchProductsRequest)> = vec![
        ("query", query("")),
        ("query", query("   ")),
        ("query", query(&"x".repeat(257))),
        (
            "filter.status",
            SearchProductsRequest {
                filter: Some(pb::ProductFilter { status: pb::ProductStatus::Draft.into(), ..Default::default() }),
                ..query("x")
            },
        ),
        (
            "filter.category_id",
            SearchProductsRequest {
                filter: Some(pb::ProductFilter {
                    category_id: "'; DROP TABLE products; --".into(),
                    ..Default::default()
                }),
                ..query("x")
            },
        ),
        ("page_size", SearchProductsRequest { page_size: -1, ..query("x") }),
        ("page_token", SearchProductsRequest { page_token: "forged".into(), ..query("x") }),
        ("sort", SearchProductsRequest { sort: 42, ..query("x") }),
        (
            "read_mask",
            SearchProductsRequest {
                read_mask: Some(prost_types::FieldMask { paths: vec!["password_hash".into()] }),
                ..query("x")
            },
        ),
    ];
    for (field, request) in cases {
        let err = client.search_products(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(violated_fields(&err), [field]);
    }
}

async fn writes_on_one_replica_are_found_on_another_and_deletes_disappear(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_on(&a.database.as_ref().unwrap().url, &[]).await;
    let s = a.seller("Replicated").await.id;
    let created = a.create(product(&s, "Ankara tote bag", "accessories", 2500)).await;
    let (names, lag) = search_until(&b, query("ankara tote"), |n| !n.is_empty()).await;
    assert_eq!(names, ["Ankara tote bag"]);
    println!("{backend:?}: visible on the other replica after {lag:?}");
    assert!(lag < Duration::from_secs(2), "lag {lag:?}");

    a.catalog.clone().delete_product(pb::DeleteProductRequest { id: created.id }).await.unwrap();
    search_until(&b, query("ankara tote"), |n| n.is_empty()).await;
    search_until(&a, query("ankara tote"), |n| n.is_empty()).await;
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.05; 8];
    v[i] = 1.0;
    v
}

async fn vector_search_finds_the_nearest_products_and_respects_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Lookalikes").await.id;
    let mut ids = Vec::new();
    for (i, category) in [(0, "shoes"), (1, "shoes"), (2, "dresses"), (3, "dresses")] {
        let mut p = product(&s, &format!("Look {i}"), category, 100);
        p.embedding = axis(i);
        ids.push(app.create(p).await.id);
    }
    let mut no_vector = product(&s, "No picture", "shoes", 100);
    no_vector.embedding.clear();
    let no_vector = app.create(no_vector).await.id;
    // Every product, the one without a picture included, must be indexed before the checks below.
    search_until(&app, query("look picture"), |n| n.len() == 5).await;

    let mut client = SearchServiceClient::new(app.channel.clone());
    let mut near_two = axis(2);
    near_two[3] = 0.5;
    let results = client
        .search_by_vector(SearchByVectorRequest { vector: near_two.clone(), top_k: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    let found: Vec<&str> = results.iter().map(|r| r.product_id.as_str()).collect();
    assert_eq!(found, [ids[2].as_str(), ids[3].as_str()]);
    assert!(results[0].score > results[1].score && results[0].score <= 1.0);

    let shoes_only = SearchByVectorRequest {
        vector: near_two,
        top_k: 10,
        filter: Some(pb::ProductFilter { category_id: "shoes".into(), ..Default::default() }),
        ..Default::default()
    };
    let results = client.search_by_vector(shoes_only).await.unwrap().into_inner().results;
    let mut found: Vec<String> = results.into_iter().map(|r| r.product_id).collect();
    found.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(found, expected, "the filter applies; products without embeddings never match");

    let similar = client
        .similar_products(SimilarProductsRequest { product_id: ids[0].clone(), top_k: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(similar.len(), 3);
    assert!(similar.iter().all(|r| r.product_id != ids[0]), "never the product itself");

    let err = client
        .similar_products(SimilarProductsRequest { product_id: no_vector, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client
        .similar_products(SimilarProductsRequest { product_id: uuid::Uuid::now_v7().to_string(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // An update moves the product in the index; a delete removes it.
    let change = pb::Product { id: ids[3].clone(), embedding: axis(0), ..Default::default() };
    app.catalog
        .clone()
        .update_product(pb::UpdateProductRequest {
            product: Some(change),
            update_mask: Some(prost_types::FieldMask { paths: vec!["embedding".into()] }),
        })
        .await
        .unwrap();
    app.catalog.clone().delete_product(pb::DeleteProductRequest { id: ids[0].clone() }).await.unwrap();
    let started = Instant::now();
    loop {
        let results = client
            .search_by_vector(SearchByVectorRequest { vector: axis(0), top_k: 1, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .results;
        if results[0].product_id == ids[3] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the index never reflected the update");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bad_vector_input_names_its_field(backend: Backend) {
    let app = spawn_app(backend).await;
    search_until(&app, query("anything"), |_| true).await;
    let mut client = SearchServiceClient::new(app.channel.clone());
    let mut nan = axis(0);
    nan[1] = f32::NAN;
    let cases: Vec<(&str, SearchByVectorRequest)> = vec![
        ("vector", SearchByVectorRequest::default()),
        ("vector", SearchByVectorRequest { vector: vec![1.0; 7], ..Default::default() }),
        ("vector", SearchByVectorRequest { vector: nan, ..Default::default() }),
        ("vector", SearchByVectorRequest { vector: vec![0.0; 8], ..Default::default() }),
        ("top_k", SearchByVectorRequest { vector: axis(0), top_k: 1_000_000, ..Default::default() }),
        ("top_k", SearchByVectorRequest { vector: axis(0), top_k: -1, ..Default::default() }),
    ];
    for (field, request) in cases {
        let err = client.search_by_vector(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(violated_fields(&err), [field]);
    }
    let err = client
        .similar_products(SimilarProductsRequest { product_id: "1 OR 1=1".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["product_id"]);
}

async fn hybrid_search_ranks_products_found_both_ways_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.seller("Hybrid").await.id;
    // "Both" matches the words and the picture; the others match only one of them.
    for (name, vector) in [("Linen shirt", axis(5)), ("Striped linen shirt", axis(0)), ("Cotton tee", axis(0))] {
        let mut p = product(&s, name, "dresses", 100);
        p.embedding = vector;
        app.create(p).await;
    }
    // All three must be indexed: with one missing, the ranks (and so the fusion) differ.
    search_until(&app, query("linen cotton"), |n| n.len() == 3).await;
    let mut client = SearchServiceClient::new(app.channel.clone());
    let results = client
        .hybrid_search(HybridSearchRequest {
            query: "linen shirt".into(),
            vector: axis(0),
            top_k: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let names: Vec<String> = results.iter().map(|r| r.product.as_ref().unwrap().name.clone()).collect();
    assert_eq!(names[0], "Striped linen shirt", "{names:?}");
    assert_eq!(names.len(), 3);
    let err = client
        .hybrid_search(HybridSearchRequest { query: String::new(), vector: vec![], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["query", "vector"]);
}

fn cache_hits(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("soko_search_cache_lookups_total") && l.contains("outcome=\"hit\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_searches_are_served_from_the_cache_until_a_write_changes_the_index() {
    let app = spawn_app(Backend::Sqlite).await;
    let s = app.seller("Cached").await.id;
    app.create(product(&s, "Batik cushion", "furniture", 100)).await;
    search_until(&app, query("batik"), |n| n.len() == 1).await;
    let metrics = || async {
        String::from_utf8(common::http::request(app.ops_addr, "GET", "/metrics", &[], b"").await.body).unwrap()
    };
    let before = cache_hits(&metrics().await);
    let mut client = SearchServiceClient::new(app.channel.clone());
    let first = client.search_products(query("batik")).await.unwrap().into_inner();
    let second = client.search_products(query("batik")).await.unwrap().into_inner();
    assert_eq!(first, second);
    assert!(cache_hits(&metrics().await) >= before + 1.0, "the repeat was a cache hit");
    // A write makes cached answers stale at once.
    app.create(product(&s, "Batik throw", "furniture", 100)).await;
    search_until(&app, query("batik"), |n| n.len() == 2).await;
}
