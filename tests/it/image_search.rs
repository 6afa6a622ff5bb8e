//! SearchByImage end to end: the built-in embedder on SQLite, PostgreSQL and MariaDB, refusals
//! of bad images (decompression bombs included), and a remote model server that answers, answers
//! nonsense, is slow, or is down.

use crate::common;

use std::{
    io::{Cursor, Write},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Backend, TestApp, product, spawn_app, spawn_app_with, violated_fields};
use image::{ImageFormat, Rgb, RgbImage};
use soko::{
    embed::{MAX_IMAGE_BYTES, builtin::BuiltinEmbedder},
    proto::{
        catalog as pb,
        soko::{
            embedder::v1::{
                EmbedImageRequest, EmbedImageResponse,
                embedder_service_server::{EmbedderService, EmbedderServiceServer},
            },
            search::v1::{
                SearchByImageRequest, SearchProductsRequest, SearchResult, search_service_client::SearchServiceClient,
            },
        },
    },
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

backend_tests!(
    the_builtin_embedder_finds_the_product_whose_photo_looks_alike,
    bad_images_are_refused_on_the_image_field
);

/// A 200×150 photo-like image: a base colour, a darker band and some deterministic noise.
fn photo(base: [u8; 3], seed: u32) -> RgbImage {
    RgbImage::from_fn(200, 150, |x, y| {
        let noise = ((x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(101)) % 25) as u8;
        let band = if (50..80).contains(&y) { 50 } else { 0 };
        Rgb(base.map(|c| c.saturating_sub(band).saturating_add(noise)))
    })
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A PNG of a few kilobytes declaring `width × height` pixels whose data inflates from zeros.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        png.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend(kind);
        png.extend(data);
        png.extend(crc.sum().to_be_bytes());
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut zeros = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zeros.write_all(&vec![0u8; 1 << 20]).unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zeros.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

fn by_image(image: Vec<u8>) -> SearchByImageRequest {
    SearchByImageRequest { image, ..Default::default() }
}

/// Searches by image until `want` results come back (the index follows the outbox), for at most 5 s.
async fn search_until(app: &TestApp, request: SearchByImageRequest, want: usize) -> Vec<SearchResult> {
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    loop {
        match client.search_by_image(request.clone()).await {
            Ok(r) if r.get_ref().results.len() == want => return r.into_inner().results,
            Ok(_) => {}
            Err(e) if e.code() == Code::Unavailable && e.get_details_error_info().is_none() => {} // still loading
            Err(e) => panic!("{e:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the index never showed {want} products");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the search index has caught up with the outbox (search answers UNAVAILABLE before).
async fn wait_until_ready(app: &TestApp) {
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    let query = SearchProductsRequest { query: "anything".into(), ..Default::default() };
    while client.search_products(query.clone()).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "search never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn names(results: &[SearchResult]) -> Vec<String> {
    results.iter().map(|r| r.product.as_ref().expect("product").name.clone()).collect()
}

/// Creates one product per (name, category, embedding).
async fn create_products(app: &TestApp, products: &[(&str, &str, Vec<f32>)]) {
    let seller = app.seller("Photo Shop").await.id;
    for (name, category, embedding) in products {
        let mut p = product(&seller, name, category, 1000);
        p.embedding = embedding.clone();
        app.create(p).await;
    }
}

async fn the_builtin_embedder_finds_the_product_whose_photo_looks_alike(backend: Backend) {
    let app = spawn_app(backend).await;
    // Product embeddings made the way a seller's tool would, with the same embedder (dimension 8,
    // as the test server is configured).
    let embedder = BuiltinEmbedder::new(8);
    let embed = |image: &RgbImage| embedder.embed_blocking(&encode(image, ImageFormat::Png)).expect("embeds");
    create_products(
        &app,
        &[
            ("Red dress", "dresses", embed(&photo([200, 30, 40], 1))),
            ("Blue dress", "dresses", embed(&photo([30, 50, 200], 2))),
            ("Green rug", "furniture", embed(&photo([40, 170, 60], 3))),
        ],
    )
    .await;

    // Another red photo, a different shade and noise, sent as a JPEG.
    let query = encode(&photo([215, 45, 35], 9), ImageFormat::Jpeg);
    let results = search_until(&app, by_image(query.clone()), 3).await;
    assert_eq!(names(&results)[0], "Red dress", "{:?}", names(&results));
    assert!(results[0].score > results[1].score && results[0].score <= 1.0001, "{results:?}");
    assert!(results[0].product.as_ref().unwrap().embedding.is_empty(), "no embedding unless asked for");

    // The same filters, top_k and read_mask as SearchByVector.
    let mut client = SearchServiceClient::new(app.channel.clone());
    let filtered = client
        .search_by_image(SearchByImageRequest {
            image: query.clone(),
            top_k: 5,
            filter: Some(pb::ProductFilter { category_id: "furniture".into(), ..Default::default() }),
            read_mask: Some(prost_types::FieldMask { paths: vec!["name".into(), "embedding".into()] }),
        })
        .await
        .expect("search")
        .into_inner()
        .results;
    assert_eq!(names(&filtered), ["Green rug"]);
    assert_eq!(filtered[0].product.as_ref().unwrap().embedding.len(), 8);
    let one = client
        .search_by_image(SearchByImageRequest { image: query, top_k: 1, ..Default::default() })
        .await
        .expect("search")
        .into_inner()
        .results;
    assert_eq!(names(&one), ["Red dress"]);
}

async fn bad_images_are_refused_on_the_image_field(backend: Backend) {
    let app = spawn_app(backend).await;
    create_products(&app, &[("Anything", "dresses", vec![0.5; 8])]).await;
    let good = encode(&photo([1, 2, 3], 1), ImageFormat::Png);
    search_until(&app, by_image(good.clone()), 1).await;
    let mut client = SearchServiceClient::new(app.channel.clone());

    let mut random = vec![0u8; 4096];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "required"),
        ("one byte over 10 MiB", vec![0x89; MAX_IMAGE_BYTES + 1], "at most 10485760 bytes"),
        ("random bytes", random, "not a JPEG, PNG or WebP"),
        ("a GIF", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), "only JPEG, PNG and WebP"),
        ("a truncated PNG", good[..good.len() / 2].to_vec(), "corrupt or truncated"),
        ("a PNG over the pixel limit", png_bomb(8000, 6000), "40 megapixels"),
    ];
    for (what, image, says) in cases {
        let err = client.search_by_image(by_image(image)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert_eq!(violated_fields(&err), ["image"], "{what}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
    }

    // A decompression bomb: 4 KB declaring 100000×100000 pixels (30 GB decoded) is refused from
    // its header, at once, without the process growing.
    let bomb = png_bomb(100_000, 100_000);
    let peak_before = peak_rss_kib();
    let started = Instant::now();
    let err = client.search_by_image(by_image(bomb)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["image"]);
    assert!(err.message().contains("at most 8192 px per side"), "{}", err.message());
    if let (Some(before), Some(after)) = (peak_before, peak_rss_kib()) {
        assert!(after - before < 200 * 1024, "peak memory grew by {} MiB", (after - before) / 1024);
    }

    // Cheap checks are reported together.
    let err = client
        .search_by_image(SearchByImageRequest { image: vec![], top_k: 101, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["image", "top_k"]);
    let err = client
        .search_by_image(SearchByImageRequest { image: good.clone(), top_k: -1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["top_k"]);

    // Far above the limit, the transport refuses the message before it is read.
    let err = client.search_by_image(by_image(vec![0; 11 * 1024 * 1024])).await.unwrap_err();
    assert!(matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange), "{err:?}");
}

/// The process's peak resident memory (Linux), in KiB.
fn peak_rss_kib() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_search_service_takes_messages_larger_than_the_general_limit() {
    let app = spawn_app(Backend::Sqlite).await;
    wait_until_ready(&app).await;
    // 5 MiB: over SOKO_MAX_MESSAGE_BYTES (4 MiB) but under the search service's upload limit.
    let five_mib = vec![b'x'; 5 * 1024 * 1024];
    let err =
        SearchServiceClient::new(app.channel.clone()).search_by_image(by_image(five_mib.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "read, then refused as not an image: {err:?}");
    let mut p = product("0190a6f2-0000-7000-8000-000000000000", "Big", "dresses", 100);
    p.description = String::from_utf8(five_mib).unwrap();
    let err = app.catalog.clone().create_product(pb::CreateProductRequest { product: Some(p) }).await.unwrap_err();
    assert!(matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange), "{err:?}");
}

// ------------------------------------------------------------------ remote embedder ---

/// What the fake model server does with each image.
#[derive(Clone)]
enum Model {
    Answers(Vec<f32>),
    TakesSeconds(u64),
}

#[derive(Clone)]
struct FakeModel {
    model: Model,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl EmbedderService for FakeModel {
    async fn embed_image(&self, request: Request<EmbedImageRequest>) -> Result<Response<EmbedImageResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(!request.get_ref().image.is_empty());
        match &self.model {
            Model::Answers(vector) => Ok(Response::new(EmbedImageResponse { vector: vector.clone() })),
            Model::TakesSeconds(secs) => {
                tokio::time::sleep(Duration::from_secs(*secs)).await;
                Ok(Response::new(EmbedImageResponse { vector: vec![1.0; 8] }))
            }
        }
    }
}

/// Starts a fake EmbedderService on a free port; returns its URL and call counter.
async fn fake_model(model: Model) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let service = EmbedderServiceServer::new(FakeModel { model, calls: calls.clone() })
        .max_decoding_message_size(11 * 1024 * 1024);
    tokio::spawn(
        tonic::transport::Server::builder().add_service(service).serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, calls)
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; 8];
    v[i] = 1.0;
    v
}

async fn remote_app(url: &str, timeout_ms: &str) -> TestApp {
    spawn_app_with(
        Backend::Sqlite,
        &[("SOKO_EMBEDDER", "remote"), ("SOKO_EMBEDDER_URL", url), ("SOKO_EMBEDDER_TIMEOUT_MS", timeout_ms)],
    )
    .await
}

/// Asserts a clean UNAVAILABLE: retry advice, and none of the model server's own words.
fn assert_clean_unavailable(err: &Status, hidden: &str) {
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.get_details_retry_info().is_some(), "{err:?}");
    assert_eq!(err.get_details_error_info().expect("error info").reason, "DEPENDENCY_UNAVAILABLE");
    assert!(!err.message().contains(hidden), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_embedder_turns_the_photo_into_the_query_vector() {
    let (url, calls) = fake_model(Model::Answers(axis(2))).await;
    let app = remote_app(&url, "3000").await;
    create_products(&app, &[("Near", "dresses", axis(2)), ("Far", "dresses", axis(5))]).await;
    let image = encode(&photo([9, 9, 9], 1), ImageFormat::WebP);
    let results = search_until(&app, by_image(image), 2).await;
    assert_eq!(names(&results), ["Near", "Far"]);
    assert!((results[0].score - 1.0).abs() < 1e-3);
    assert!(calls.load(Ordering::SeqCst) >= 1);

    // Images are checked before the model server sees them.
    let before = calls.load(Ordering::SeqCst);
    let err = SearchServiceClient::new(app.channel.clone())
        .search_by_image(by_image(png_bomb(100_000, 100_000)))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["image"]);
    assert_eq!(calls.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_embedder_answering_a_wrong_vector_is_unavailable_not_internal() {
    for (vector, hidden) in [(vec![1.0; 3], "3 values"), (vec![f32::NAN; 8], "not a finite"), (vec![0.0; 8], "zeros")] {
        let (url, _) = fake_model(Model::Answers(vector)).await;
        let app = remote_app(&url, "3000").await;
        wait_until_ready(&app).await;
        let image = encode(&photo([9, 9, 9], 1), ImageFormat::Png);
        let err = SearchServiceClient::new(app.channel.clone()).search_by_image(by_image(image)).await.unwrap_err();
        assert_clean_unavailable(&err, hidden);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_embedder_that_is_down_or_slow_answers_unavailable_quickly() {
    // Down: a port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = remote_app(&url, "3000").await;
    wait_until_ready(&app).await;
    let image = encode(&photo([9, 9, 9], 1), ImageFormat::Png);
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    let err = client.search_by_image(by_image(image.clone())).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_clean_unavailable(&err, "127.0.0.1");

    // Slow: the model takes 10 s; the call gives up at SOKO_EMBEDDER_TIMEOUT_MS.
    let (url, calls) = fake_model(Model::TakesSeconds(10)).await;
    let app = remote_app(&url, "300").await;
    wait_until_ready(&app).await;
    let mut client = SearchServiceClient::new(app.channel.clone());
    let started = Instant::now();
    let err = client.search_by_image(by_image(image)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_clean_unavailable(&err, "Timeout");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The demo catalog (issue 25): `soko serve --demo` embeds a picture of each product with the
/// configured embedder, so a photo of a demo product, sent as a user would (JPEG, another size),
/// finds that product first, through the whole server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_of_a_demo_product_finds_it_first() {
    if !Backend::Sqlite.enabled() {
        return;
    }
    let app = spawn_app_with(Backend::Sqlite, &[("SOKO_EMBEDDING_DIM", "768")]).await;
    let embedder = BuiltinEmbedder::new(768);
    let seeded = soko::demo::seed(&soko::domain::catalog::Catalog::new(app.db.clone(), 768), &embedder).await.unwrap();
    assert_eq!(seeded, 20);
    let mut client = SearchServiceClient::new(app.channel.clone());
    for (index, name) in
        [(0, "Leather sandals"), (4, "Ankara wrap dress"), (13, "Beaded necklace"), (19, "Straw sun hat")]
    {
        let resized = image::imageops::resize(
            &soko::demo::picture(index).unwrap(),
            300,
            300,
            image::imageops::FilterType::Triangle,
        );
        let mut photo = Cursor::new(Vec::new());
        resized.write_to(&mut photo, ImageFormat::Jpeg).unwrap();
        let request = SearchByImageRequest { image: photo.into_inner(), top_k: 3, ..Default::default() };
        let started = Instant::now();
        let first = loop {
            let results = client.search_by_image(request.clone()).await.expect("search by image").into_inner().results;
            if let Some(first) = results.into_iter().next() {
                break first;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "the demo never reached the index");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(first.product.as_ref().unwrap().name, name, "score {}", first.score);
        assert!(first.score > 0.9, "{name}: score {}", first.score);
    }
}

/// A burst of large photos beyond what the decoders can get through within the bound: the rest
/// are refused at once with when to retry, never queued until they time out, and the server
/// stays well (issue 23).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_photos_is_admitted_up_to_the_bound_and_the_rest_refused_at_once() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("SOKO_IMAGE_EMBED_MAX_WAIT_MS", "300"), ("SOKO_RATE_LIMIT_SEARCH", "100000/min")],
    )
    .await;
    wait_until_ready(&app).await;
    // 2000×2000 of smooth colour: a JPEG of a few hundred kilobytes that takes a while to decode.
    let large = RgbImage::from_fn(2000, 2000, |x, y| Rgb([(x / 8) as u8, (y / 8) as u8, ((x + y) / 16) as u8]));
    let jpeg = encode(&large, ImageFormat::Jpeg);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (mut client, request) = (SearchServiceClient::new(app.channel.clone()), by_image(jpeg.clone()));
            tokio::spawn(async move {
                let asked = Instant::now();
                let answer = client.search_by_image(request).await;
                (answer.map(|_| ()), asked.elapsed())
            })
        })
        .collect();
    let (mut admitted, mut refused) = (0, Vec::new());
    for call in calls {
        match call.await.unwrap() {
            (Ok(()), _) => admitted += 1,
            (Err(s), took) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("too many image searches"), "{s:?}");
                let retry = s.get_error_details().retry_info().and_then(|r| r.retry_delay);
                assert!(retry.is_some_and(|d| d > Duration::ZERO), "RetryInfo: {s:?}");
                refused.push(took);
            }
            (Err(s), _) => panic!("an image search under load failed with {s:?}"),
        }
    }
    refused.sort();
    println!("16 large photos at once: {admitted} admitted, {} refused after {refused:?}", refused.len());
    assert!(admitted >= 1 && !refused.is_empty(), "{admitted} admitted, refused after {refused:?}");
    // Immediate at the server; this bound leaves room for the rest of the suite alongside.
    assert!(refused[refused.len() / 2] < Duration::from_millis(250), "refusals took {refused:?}");
    // Once the burst is over, a photo is searched again.
    let mut client = SearchServiceClient::new(app.channel.clone());
    client.search_by_image(by_image(encode(&photo([200, 40, 40], 1), ImageFormat::Png))).await.expect("after");
}
