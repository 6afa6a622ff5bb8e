//! The real `soko` binary in a child process, for what only a process shows: its log lines on
//! stdout, its process-wide telemetry (the global tracing subscriber, the trace exporter).

use std::{
    io::BufRead,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A `soko serve` child with JSON logs on its own SQLite file; stopped with SIGTERM on drop.
pub struct SokoProcess {
    child: Child,
    dir: PathBuf,
    /// The gRPC and ops addresses from the "soko is serving" line.
    pub grpc: SocketAddr,
    pub ops: SocketAddr,
    /// The storefront port, when `SOKO_WEB_ADDR` was set.
    pub web: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl SokoProcess {
    /// Starts `soko serve` on free ports with `env` added to a clean environment, and waits until
    /// it serves.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(&[], env).await
    }

    /// `soko serve ARGS…` (e.g. `--demo`) with `env`.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("soko_process_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_soko"));
        command
            .arg("serve")
            .args(args)
            .env_clear()
            .env("SOKO_GRPC_ADDR", "127.0.0.1:0")
            .env("SOKO_OPS_ADDR", "127.0.0.1:0")
            .env("SOKO_DATA_DIR", &dir)
            .env("SOKO_EMBEDDING_DIM", "8")
            .env("SOKO_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str(&line) {
                        lines.lock().unwrap().push(v);
                    }
                }
            }
        });
        let started = Instant::now();
        let (grpc, ops, web) = loop {
            let serving = lines.lock().unwrap().iter().find(|l| l["message"] == "soko is serving").cloned();
            if let Some(line) = serving {
                let addr = |key: &str| line[key].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
                break (addr("grpc").unwrap(), addr("ops").unwrap(), addr("web"));
            }
            assert!(started.elapsed() < Duration::from_secs(30), "soko did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self { child, dir, grpc, ops, web, lines }
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.unwrap()
    }

    /// Its data directory (`SOKO_DATA_DIR`): the SQLite file is `soko.db` in it.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The log lines printed so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The Prometheus exposition of `/metrics`.
    pub async fn metrics(&self) -> String {
        String::from_utf8(super::http::request(self.ops, "GET", "/metrics", &[], b"").await.body).unwrap()
    }

    /// SIGTERM, then waits for the exit (a graceful shutdown, which flushes what it holds).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for SokoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
