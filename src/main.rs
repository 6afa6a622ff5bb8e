//! The `soko` command: `serve` runs the server, `migrate` applies database migrations, `backup`
//! takes, checks and restores backups, `milvus reconcile` repairs drift in Milvus.

use std::process::ExitCode;

use soko::{
    configuration::Config,
    demo,
    domain::{auth::Role, catalog::Catalog},
    startup::{self, Application, RunError},
    store::{Db, PoolSettings},
    telemetry,
};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "\
usage: soko <command>

commands:
  serve [--demo]   run the gRPC server (with --demo: add demo products to an empty catalog)
  demo photos DIR  write a picture of each demo product into DIR, to try SearchByImage with
  migrate          apply pending database migrations and exit
  admin create-user --email EMAIL [--role admin|seller|buyer]
                   create an account (default role: admin); the password is read from
                   SOKO_NEW_USER_PASSWORD if set, otherwise from the first line of standard input
{backup}
{milvus}
  health-check [HOST:PORT]
                   ask a running server's gRPC health service whether it is SERVING; exit 0 if
                   so, 1 otherwise (for container HEALTHCHECKs). Default: SOKO_HEALTH_ADDR, else
                   SOKO_GRPC_ADDR, on this host
  help             show this message

Configuration comes from the environment; see .env.example.";

fn usage() -> String {
    USAGE.replace("{backup}", soko::backup::cli::USAGE).replace("{milvus}", soko::milvus::cli::USAGE)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let command = match args.as_slice() {
        ["serve"] => Command::Serve { demo: false },
        ["serve", "--demo"] => Command::Serve { demo: true },
        ["migrate"] => Command::Migrate,
        // Needs no configuration: it only draws pictures.
        ["demo", "photos", dir] => {
            return match demo::write_pictures(std::path::Path::new(dir)) {
                Ok(paths) => {
                    paths.iter().for_each(|p| println!("{}", p.display()));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("soko: writing demo photos into {dir}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        ["admin", "create-user", rest @ ..] => match parse_create_user(rest) {
            Some((email, role)) => Command::CreateUser { email, role },
            None => {
                eprintln!("{}", usage());
                return ExitCode::from(2);
            }
        },
        ["backup", rest @ ..] => match soko::backup::cli::Command::parse(rest) {
            Some(command) => Command::Backup(command),
            None => {
                eprintln!("{}", usage());
                return ExitCode::from(2);
            }
        },
        ["milvus", "reconcile"] => Command::MilvusReconcile { reason: String::new() },
        ["milvus", "reconcile", "--reason", reason] => Command::MilvusReconcile { reason: (*reason).to_owned() },
        // Before the configuration: a probe must not fail because a secret is missing from its
        // environment.
        ["health-check"] => return health_check(None).await,
        ["health-check", addr] => return health_check(Some(addr)).await,
        ["help" | "--help" | "-h"] => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        ["--version" | "-V"] => {
            println!("soko {}", soko::build_info::describe());
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("soko: {e}");
            return ExitCode::from(2);
        }
    };
    // Before the log subscriber, whose Sentry layer needs the client; flushed when it drops.
    let _sentry = config.sentry.as_ref().map(telemetry::sentry::init);
    telemetry::init(&config);
    match command {
        Command::Serve { demo } => serve(config, demo).await,
        Command::Migrate => migrate(config).await,
        Command::CreateUser { email, role } => create_user(config, &email, role).await,
        Command::Backup(command) => soko::backup::cli::run(&config, command).await,
        Command::MilvusReconcile { reason } => soko::milvus::cli::run(&config, &reason).await,
    }
}

enum Command {
    Serve { demo: bool },
    Migrate,
    CreateUser { email: String, role: Role },
    Backup(soko::backup::cli::Command),
    MilvusReconcile { reason: String },
}

/// One gRPC health Check of the whole server, with a short deadline.
async fn health_check(addr: Option<&str>) -> ExitCode {
    use soko::proto::grpc::health::v1::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let configured = std::env::var("SOKO_HEALTH_ADDR").or_else(|_| std::env::var("SOKO_GRPC_ADDR")).ok();
    let addr = addr.map(str::to_owned).or(configured).unwrap_or_else(|| "127.0.0.1:50051".into());
    // A server listening on every interface is reached on loopback.
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "[::1]:");
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
        let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
        Ok::<_, Box<dyn std::error::Error>>(response.into_inner().status())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), check).await {
        Ok(Ok(ServingStatus::Serving)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("soko: {addr} is {}", status.as_str_name());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("soko: health check of {addr} failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("soko: health check of {addr} timed out after 3 s");
            ExitCode::FAILURE
        }
    }
}

fn parse_create_user(args: &[&str]) -> Option<(String, Role)> {
    let mut email = None;
    let mut role = Role::Admin;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        match *flag {
            "--email" => email = Some(args.next()?.to_string()),
            "--role" => role = Role::parse(args.next()?)?,
            _ => return None,
        }
    }
    Some((email?, role))
}

/// Creates an account from the command line: how the first admin comes to exist, since Soko has
/// no default credentials.
async fn create_user(config: Config, email: &str, role: Role) -> ExitCode {
    let password = match std::env::var("SOKO_NEW_USER_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("soko: could not read the password from standard input");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let settings = PoolSettings { max_size: 2, checkout_timeout: std::time::Duration::from_secs(10) };
    let db = match Db::connect(&config.database, &settings) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("soko: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = db.migrate().await {
        eprintln!("soko: migration failed: {e}");
        return ExitCode::FAILURE;
    }
    match startup::accounts(&config, &db).create_user(email, &password, role).await {
        Ok(user) => {
            println!("created {} {} ({})", user.role, user.email, user.id);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soko: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, demo: bool) -> ExitCode {
    let embedding_dim = config.embedding_dim;
    let embedder_config = config.embedder.clone();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "start-up failed");
            return ExitCode::FAILURE;
        }
    };
    if demo {
        // Seeding embeds one picture at a time and nobody is waiting on a deadline: no need to
        // refuse, however slow the machine.
        let seeding_wait = std::time::Duration::from_secs(60);
        let embedder = match soko::embed::from_config(&embedder_config, embedding_dim, seeding_wait) {
            Ok(embedder) => embedder,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "setting up the image embedder for the demo failed");
                return ExitCode::FAILURE;
            }
        };
        match demo::seed(&Catalog::new(app.db().clone(), embedding_dim), embedder.as_ref()).await {
            Ok(n) => tracing::info!(products = n, "demo data loaded"),
            Err(e) => {
                tracing::error!(error = %e, "loading demo data failed");
                return ExitCode::FAILURE;
            }
        }
    }
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let (first_signal, shutdown) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
        let _ = first_signal.send(());
        tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
        tracing::error!("second signal: exiting without waiting for in-flight calls");
        std::process::exit(130);
    });
    let outcome = app
        .run_until(async {
            let _ = shutdown.await;
        })
        .await;
    // The last calls' spans are still queued; a collector that is down costs at most this wait.
    telemetry::flush_traces(std::time::Duration::from_secs(2)).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ RunError::DrainTimeout(_)) => {
            tracing::error!(error = %e, "forced exit");
            // Returning would wait for the runtime's blocking tasks (a database call stuck
            // behind a lock), which is exactly what the deadline exists to cut short.
            std::process::exit(1)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: Config) -> ExitCode {
    let settings = PoolSettings { max_size: 1, checkout_timeout: std::time::Duration::from_secs(10) };
    let result = async { Db::connect(&config.database, &settings)?.migrate().await }.await;
    match result {
        Ok(applied) => {
            tracing::info!(applied, backend = config.database.backend(), "migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "migration failed");
            ExitCode::FAILURE
        }
    }
}
