//! `soko milvus reconcile`: the operator's way to repair drift between Milvus and the database.

use std::{process::ExitCode, time::Duration};

use super::{Milvus, reconcile, sync};
use crate::{
    configuration::Config,
    store::{Db, PoolSettings},
};

pub const USAGE: &str = "\
  milvus reconcile [--reason TEXT]
                   compare Milvus with the database and repair drift both ways; the replica
                   that syncs Milvus does it when one runs, otherwise this command does";

/// How long the command waits for a running replica to report its reconciliation.
const WAIT: Duration = Duration::from_secs(600);

pub async fn run(config: &Config, reason: &str) -> ExitCode {
    match execute(config, reason).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soko milvus reconcile: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(config: &Config, reason: &str) -> anyhow::Result<String> {
    let Some(milvus_config) = &config.milvus else { anyhow::bail!("MILVUS_ADDRESS is not set") };
    let db = Db::connect(&config.database, &PoolSettings { max_size: 2, checkout_timeout: Duration::from_secs(10) })?;
    let holder = format!("cli-{}", std::process::id());
    // Nobody syncs: reconcile here, holding the lease so that no replica starts syncing meanwhile.
    if db.take_lease(sync::LEASE, &holder, sync::LEASE_TTL * 60).await? {
        let milvus = Milvus::new(milvus_config.clone())?;
        let result = async {
            milvus.ensure_collection().await?;
            anyhow::Ok(reconcile::reconcile(&db, &milvus).await?)
        }
        .await;
        db.release_lease(sync::LEASE, &holder).await?;
        return Ok(result?.to_string());
    }
    // A replica syncs: ask it, and wait for its answer.
    let id = reconcile::request(&db, &holder, reason).await?;
    eprintln!("a running replica syncs Milvus; asked it to reconcile (request {id})");
    let started = tokio::time::Instant::now();
    loop {
        let done = db.settings().await?.into_iter().find(|r| r.name == reconcile::DONE);
        if let Some(done) = done
            && let Some(report) = done.value.strip_prefix(&format!("{id} "))
        {
            return Ok(report.to_owned());
        }
        if started.elapsed() >= WAIT {
            anyhow::bail!("the syncing replica did not report within {WAIT:?}; GetSyncStatus shows its last error");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
