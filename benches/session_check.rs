//! What checking a bearer token costs per call since sessions are checked against revocations
//! (issue 24): the whole `Accounts::authenticate_access_token` (JWT verification plus the session
//! memory) and the session-memory lookup alone, both on a remembered session, which is every call
//! after a session's first on a replica.
//!
//!   cargo bench --bench session_check                  # nanoseconds per call
//!   benches/session_check_instructions.sh              # instructions per call, under callgrind
//!
//! `session_check MODE N` runs N calls of one mode (`authenticate` or `lookup`) and nothing else,
//! so that callgrind totals of two values of N differ by exactly N₂ − N₁ calls.

use std::time::{Duration, Instant};

use soko::{
    configuration::Config,
    domain::{accounts::RoleInput, auth::RequestContext},
    startup::accounts,
    store::{Db, PoolSettings},
};

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let dir = std::env::temp_dir().join(format!("soko_session_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("JWT_SECRET", "bench-only-7f3a9c1e5b8d2f4a6c0e9b7d5f3a1c8e"),
        ("SOKO_PASSWORD_HASH_CONCURRENCY", "1"),
    ];
    let config = Config::from_lookup(|key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned()))
        .expect("configuration");
    let db = Db::connect(&config.database, &PoolSettings { max_size: 2, checkout_timeout: Duration::from_secs(5) })
        .expect("database");
    db.migrate().await.expect("migrations");
    let accounts = accounts(&config, &db);
    let (_, tokens) = accounts
        .register(&RequestContext::system(), "bench@soko.test", "bench-password-1", RoleInput::Unspecified)
        .await
        .expect("register");
    let token = tokens.access.token.clone();
    // The first call reads the session from the database; every later one is a memory hit.
    let principal = accounts.authenticate_access_token(&token).await.expect("a valid token");
    let (user_id, session_id) = match principal {
        soko::domain::auth::Principal::User { user_id, session_id, .. } => (user_id, session_id),
        other => panic!("unexpected principal {other:?}"),
    };
    let sessions = accounts.sessions();

    let run = |mode: &str, n: u64| {
        let (accounts, sessions, token, mode) = (accounts.clone(), sessions.clone(), token.clone(), mode.to_owned());
        async move {
            let started = Instant::now();
            for _ in 0..n {
                match mode.as_str() {
                    "authenticate" => {
                        std::hint::black_box(accounts.authenticate_access_token(&token).await.expect("valid"));
                    }
                    "lookup" => {
                        std::hint::black_box(sessions.principal(user_id, session_id).await.expect("live"));
                    }
                    other => panic!("unknown mode {other}"),
                }
            }
            started.elapsed()
        }
    };
    match args.as_slice() {
        [mode, n] => {
            run(mode, n.parse().expect("a call count")).await;
        }
        _ => {
            const N: u64 = 200_000;
            // Interleaved rounds, so both modes see the same machine noise.
            let mut best = [Duration::MAX; 2];
            for _ in 0..5 {
                for (i, mode) in ["authenticate", "lookup"].into_iter().enumerate() {
                    best[i] = best[i].min(run(mode, N).await);
                }
            }
            let ns = |d: Duration| d.as_nanos() as f64 / N as f64;
            println!("authenticate_access_token (JWT + session memory): {:>8.0} ns/call", ns(best[0]));
            println!("session memory lookup alone:                      {:>8.0} ns/call", ns(best[1]));
            println!("lookup share of the whole check:                  {:>8.1} %", 100.0 * ns(best[1]) / ns(best[0]));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
