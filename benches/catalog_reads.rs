//! Catalog reads through every layer, against a bare tonic server answering the same bytes.
//!
//! - **soko**: the release server, `soko serve --demo` (SQLite, 20 demo products), JSON logs at
//!   `info` to a file as in production, every layer on: request id and log line, deadline, load
//!   shed, identify, rate limit (quotas raised out of the way, still checked per call), authorize.
//!   Reads come from the product cache once warm.
//! - **bare**: this bench re-run as a plain tonic CatalogService that answers every GetProduct
//!   and ListProducts with the response Soko gave (fetched once), so both send the same bytes.
//!
//! Both run on core 0 (taskset), one at a time; the load, h2load, runs on core 1. Each case is
//! measured on both servers in turn, round after round (soko, bare, soko, bare, …), and compared
//! as the ratio within each round. h2load counts HTTP statuses only, so Soko's own
//! `soko_grpc_server_handled_total` counts every call's gRPC code: any code but OK is an error.
//! The idle CPU of a fresh Soko server over 10 s is reported first. Last, with a redis-server of
//! its own, mixed reads run while Redis answers, while it is frozen with SIGSTOP for 15 s, and
//! after it resumes (`SOKO_BENCH_REDIS=0` skips this part).
//!
//! ```text
//! cargo bench --bench catalog_reads                  # 5 rounds of 4 s per case and server
//! SOKO_BENCH_ROUNDS=2 SOKO_BENCH_SECONDS=2 cargo bench --bench catalog_reads
//! ```
//! Needs `h2load` (Debian: `apt-get install nghttp2-client`) and `taskset`.

#[path = "support/soko.rs"]
mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use prost::Message;
use soko::proto::{
    catalog::{
        self as pb,
        catalog_service_client::CatalogServiceClient,
        catalog_service_server::{CatalogService, CatalogServiceServer},
    },
    soko::auth::v1::{RegisterRequest, auth_service_client::AuthServiceClient},
};
use tonic::{Request, Response, Status};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The bare server: canned answers, nothing else.
#[derive(Clone)]
struct Canned {
    product: pb::GetProductResponse,
    page: pb::ListProductsResponse,
}

#[tonic::async_trait]
impl CatalogService for Canned {
    async fn list_categories(
        &self,
        _: Request<pb::ListCategoriesRequest>,
    ) -> Result<Response<pb::ListCategoriesResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn create_category(
        &self,
        _: Request<pb::CreateCategoryRequest>,
    ) -> Result<Response<pb::CreateCategoryResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn create_seller(
        &self,
        _: Request<pb::CreateSellerRequest>,
    ) -> Result<Response<pb::CreateSellerResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_seller(&self, _: Request<pb::GetSellerRequest>) -> Result<Response<pb::GetSellerResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_product(&self, _: Request<pb::GetProductRequest>) -> Result<Response<pb::GetProductResponse>, Status> {
        Ok(Response::new(self.product.clone()))
    }
    async fn batch_get_products(
        &self,
        _: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_products(
        &self,
        _: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Ok(Response::new(self.page.clone()))
    }
    async fn create_product(
        &self,
        _: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn update_product(
        &self,
        _: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn delete_product(
        &self,
        _: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

/// Run as the bare server: `SOKO_BENCH_BARE=<dir>` holds the canned answers; prints its address.
async fn serve_bare(dir: &str) -> anyhow::Result<()> {
    let product = pb::GetProductResponse::decode(std::fs::read(format!("{dir}/product.bin"))?.as_slice())?;
    let page = pb::ListProductsResponse::decode(std::fs::read(format!("{dir}/page.bin"))?.as_slice())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(CatalogServiceServer::new(Canned { product, page }))
        .serve_with_incoming(soko::startup::incoming(listener))
        .await?;
    Ok(())
}

struct Server {
    child: Child,
    addr: String,
    ops: Option<String>,
}

impl Server {
    fn soko(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let log = dir.join("server.log");
        let child = Command::new("taskset")
            .args(["-c", "0", env!("CARGO_BIN_EXE_soko"), "serve", "--demo"])
            .env_clear()
            .env("SOKO_GRPC_ADDR", "127.0.0.1:0")
            .env("SOKO_OPS_ADDR", "127.0.0.1:0")
            .env("SOKO_DATA_DIR", dir)
            .env("SOKO_LOG_FORMAT", "json")
            .env("RUST_LOG", std::env::var("SOKO_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()))
            // Checked on every call, but high enough never to refuse the load generator.
            .env("SOKO_RATE_LIMIT_GLOBAL", "100000000/min")
            .env("SOKO_RATE_LIMIT_AUTH", "100000000/min")
            .envs(extra_env.iter().copied())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()?;
        let (addr, ops) = support::wait_until_serving(&log, Duration::from_secs(60))?;
        Ok(Self { child, addr, ops: Some(ops) })
    }

    fn bare(canned: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(std::env::current_exe()?)
            .env("SOKO_BENCH_BARE", canned)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        Ok(Self { child, addr: line.trim().to_owned(), ops: None })
    }

    /// Calls Soko answered with each code other than OK, over its life.
    async fn errors(&self) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        let Some(ops) = &self.ops else { return Ok(Default::default()) };
        let body = support::metrics(ops).await?;
        let mut codes = std::collections::BTreeMap::new();
        for line in body.lines().filter(|l| l.starts_with("soko_grpc_server_handled_total{")) {
            let code = line.split("code=\"").nth(1).and_then(|c| c.split('"').next()).unwrap_or_default();
            if let (false, Some(n)) = (code == "OK", line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok())) {
                *codes.entry(code.to_owned()).or_insert(0.0) += n;
            }
        }
        Ok(codes)
    }

    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

const GET_PRODUCT: &str = "soko.catalog.v1.CatalogService/GetProduct";
const LIST_PRODUCTS: &str = "soko.catalog.v1.CatalogService/ListProducts";

struct Case {
    name: &'static str,
    method: &'static str,
    /// The file in the work directory holding the framed request.
    body: &'static str,
    bearer: bool,
    connections: u32,
    streams_each: u32,
}

impl Case {
    fn new(
        name: &'static str,
        method: &'static str,
        body: &'static str,
        bearer: bool,
        connections: u32,
        streams_each: u32,
    ) -> Self {
        Self { name, method, body, bearer, connections, streams_each }
    }
}

/// A gRPC message frame: uncompressed flag, big-endian length, message.
fn frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// Runs h2load for `seconds` against `addr`; returns calls per second and calls that failed at
/// the HTTP level.
fn h2load(case: &Case, addr: &str, token: &str, body: &std::path::Path, seconds: u64) -> anyhow::Result<(f64, u64)> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", "h2load", "--warm-up-time=1", "-D"])
        .arg(seconds.to_string())
        .args(["-c", &case.connections.to_string(), "-m", &case.streams_each.to_string()])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "-d"])
        .arg(body);
    if case.bearer {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let out = command.arg(format!("http://{addr}/{}", case.method)).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no rate in h2load's output: {text}"))?;
    let failed = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| {
            let part = l.split(", ").find(|p| p.ends_with(" failed"))?;
            part.trim_end_matches(" failed").trim().parse::<u64>().ok()
        })
        .unwrap_or(0);
    Ok((rate, failed))
}

/// Reads one demo product and the first page of 20 from the Soko at `addr`, and writes what the
/// bare server answers (`product.bin`, `page.bin`) and the framed requests h2load sends
/// (`get.bin`, `list.bin`) into `dir`.
async fn fetch_canned(addr: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut catalog = CatalogServiceClient::new(channel);
    let list = pb::ListProductsRequest { page_size: 20, ..Default::default() };
    let page = catalog.list_products(list.clone()).await?.into_inner();
    anyhow::ensure!(page.products.len() == 20, "the demo catalog has {} products", page.products.len());
    let get = pb::GetProductRequest { id: page.products[0].id.clone(), ..Default::default() };
    let product = catalog.get_product(get.clone()).await?.into_inner();
    std::fs::write(dir.join("product.bin"), product.encode_to_vec())?;
    std::fs::write(dir.join("page.bin"), page.encode_to_vec())?;
    std::fs::write(dir.join("get.bin"), frame(&get))?;
    std::fs::write(dir.join("list.bin"), frame(&list))?;
    println!(
        "response bytes (protobuf): GetProduct {}, ListProducts page of 20 {}",
        product.encoded_len(),
        page.encoded_len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(dir) = std::env::var("SOKO_BENCH_BARE") {
        return serve_bare(&dir).await;
    }
    // For benches/catalog_reads_instructions.sh.
    if let (Ok(addr), Ok(dir)) = (std::env::var("SOKO_BENCH_FETCH"), std::env::var("SOKO_BENCH_DIR")) {
        return fetch_canned(&addr, std::path::Path::new(&dir)).await;
    }
    // This process (the mixed-load client) on core 1, with h2load; the servers on core 0.
    let _ = Command::new("taskset").args(["-a", "-cp", "1", &std::process::id().to_string()]).output();
    let rounds = env("SOKO_BENCH_ROUNDS", 5);
    let seconds = env("SOKO_BENCH_SECONDS", 4);
    let dir = std::env::temp_dir().join(format!("soko_bench_reads_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;

    // One Soko for the whole run, so its cache is warm as a long-running replica's would be.
    let soko = Server::soko(&dir, &[])?;
    std::thread::sleep(Duration::from_secs(2));
    let before = soko.cpu_ticks()?;
    std::thread::sleep(Duration::from_secs(10));
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let idle = (soko.cpu_ticks()? - before) as f64 / ticks_per_second / 10.0;
    println!("idle CPU of a fresh server over 10 s: {:.2} % of one core", idle * 100.0);

    fetch_canned(&soko.addr, &dir).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", soko.addr))?.connect().await?;
    let registered = AuthServiceClient::new(channel)
        .register(RegisterRequest {
            email: "bench@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let token = registered.tokens.map(|t| t.access_token).unwrap_or_default();
    let bare = Server::bare(&dir)?;

    let (get, list) = ("get.bin", "list.bin");
    let cases = [
        Case::new("GetProduct anonymous, 16 streams", GET_PRODUCT, get, false, 4, 4),
        Case::new("GetProduct bearer, 16 streams", GET_PRODUCT, get, true, 4, 4),
        Case::new("GetProduct anonymous, 1024 streams", GET_PRODUCT, get, false, 64, 16),
        Case::new("GetProduct bearer, 1024 streams", GET_PRODUCT, get, true, 64, 16),
        Case::new("ListProducts 20, 16 streams", LIST_PRODUCTS, list, false, 4, 4),
        Case::new("ListProducts 20, 1024 streams", LIST_PRODUCTS, list, false, 64, 16),
    ];
    println!("{rounds} rounds, {seconds} s per case and server; soko and bare alternate");
    println!(
        "{:<36} {:>5} {:>10} {:>10} {:>7} soko's answers other than OK",
        "case", "round", "soko/s", "bare/s", "ratio"
    );
    let mut summary = Vec::new();
    for case in &cases {
        let body = dir.join(case.body);
        let mut ratios = Vec::new();
        let mut errors = std::collections::BTreeMap::new();
        for round in 1..=rounds {
            let errors_before = soko.errors().await?;
            let (ours, http_failed) = h2load(case, &soko.addr, &token, &body, seconds)?;
            let mut round_errors = soko.errors().await?;
            for (code, n) in &errors_before {
                *round_errors.entry(code.clone()).or_insert(0.0) -= n;
            }
            round_errors.retain(|_, n| *n > 0.0);
            if http_failed > 0 {
                round_errors.insert("HTTP-level failure".into(), http_failed as f64);
            }
            let (theirs, _) = h2load(case, &bare.addr, &token, &body, seconds)?;
            for (code, n) in &round_errors {
                *errors.entry(code.clone()).or_insert(0.0) += n;
            }
            ratios.push(ours / theirs);
            println!(
                "{:<36} {round:>5} {ours:>10.0} {theirs:>10.0} {:>7.3} {round_errors:?}",
                case.name,
                ours / theirs
            );
        }
        ratios.sort_by(f64::total_cmp);
        summary.push((case.name, ratios[ratios.len() / 2], ratios[0], ratios[ratios.len() - 1], errors));
    }
    println!("\nsoko/bare calls per second, median of rounds (min–max), and Soko's non-OK answers:");
    for (name, median, min, max, errors) in summary {
        println!("{name:<36} {median:.3} ({min:.3}–{max:.3})  not OK: {errors:?}");
    }
    drop(bare);
    drop(soko);
    let _ = std::fs::remove_dir_all(&dir);
    if std::env::var("SOKO_BENCH_REDIS").as_deref() != Ok("0") {
        frozen_redis(seconds).await?;
    }
    Ok(())
}

/// Latencies of a closed loop of mixed catalog reads (three GetProducts of varied products to one
/// ListProducts page), 64 in flight over 8 connections, for `seconds`; and the calls that failed.
async fn mixed_load(addr: &str, ids: &[String], seconds: u64) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut tasks = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    for t in 0..64 {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        let mut client = CatalogServiceClient::new(channel);
        let ids = ids.to_vec();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0);
            let mut i = t;
            while Instant::now() < until {
                i += 1;
                let started = Instant::now();
                let ok = if i % 4 == 0 {
                    let list = pb::ListProductsRequest { page_size: 20, ..Default::default() };
                    client.list_products(list).await.is_ok_and(|r| r.get_ref().products.len() == 20)
                } else {
                    let id = ids[i % ids.len()].clone();
                    let get = pb::GetProductRequest { id: id.clone(), ..Default::default() };
                    client
                        .get_product(get)
                        .await
                        .is_ok_and(|r| r.get_ref().product.as_ref().is_some_and(|p| p.id == id))
                };
                latencies.push(started.elapsed());
                errors += usize::from(!ok);
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Ok((latencies, errors))
}

/// p99 and max of mixed reads with Redis configured: answering, frozen (SIGSTOP) for 15 s, and
/// after it resumes. Uses a redis-server of its own.
async fn frozen_redis(seconds: u64) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut redis = Command::new("taskset")
        .args(["-c", "1", "redis-server", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let dir = std::env::temp_dir().join(format!("soko_bench_redis_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("redis://127.0.0.1:{port}");
    let soko = Server::soko(&dir, &[("REDIS_URL", url.as_str()), ("SOKO_REDIS_KEY_PREFIX", "bench")])?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", soko.addr))?.connect().await?;
    let page = CatalogServiceClient::new(channel)
        .list_products(pb::ListProductsRequest { page_size: 20, ..Default::default() })
        .await?
        .into_inner();
    let ids: Vec<String> = page.products.into_iter().map(|p| p.id).collect();
    mixed_load(&soko.addr, &ids, 2).await?; // warm-up
    let signal = |sig: &str| Command::new("kill").args([sig, &redis.id().to_string()]).status();
    let report = |label: &str, (latencies, errors): &(Vec<Duration>, usize)| {
        let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{label:<28} {:>7} calls  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  errors {errors}",
            latencies.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        );
        at(0.99)
    };
    println!("\nmixed reads (3 GetProduct : 1 ListProducts), 64 in flight, Redis configured (timeout 50 ms):");
    let baseline = report("Redis answering", &mixed_load(&soko.addr, &ids, seconds.max(5)).await?);
    signal("-STOP")?;
    let frozen = report("Redis frozen (SIGSTOP), 15 s", &mixed_load(&soko.addr, &ids, 15).await?);
    signal("-CONT")?;
    let after = report("Redis resumed", &mixed_load(&soko.addr, &ids, seconds.max(5)).await?);
    println!(
        "p99 frozen / answering: {:.2}; resumed / answering: {:.2}",
        frozen.as_secs_f64() / baseline.as_secs_f64(),
        after.as_secs_f64() / baseline.as_secs_f64()
    );
    drop(soko);
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
