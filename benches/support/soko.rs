//! What the benches that run the release server share: waiting for it to serve, and reading its
//! metrics. Included with `#[path]`, as each bench is a crate of its own.

use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Waits for the `soko is serving` line in the JSON log at `log`; returns the gRPC and ops
/// addresses it names.
pub fn wait_until_serving(log: &Path, within: Duration) -> anyhow::Result<(String, String)> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let serving = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "soko is serving");
        if let Some(line) = serving {
            let addr = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
            return Ok((addr("grpc"), addr("ops")));
        }
        anyhow::ensure!(started.elapsed() < within, "soko did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Prometheus text the ops port at `ops` serves.
pub async fn metrics(ops: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(ops).await?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: soko\r\nConnection: close\r\n\r\n").await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}
