//! A test that fails leaves nothing behind: its database, Redis keys, directories and the
//! processes it started are all gone once it has failed.

use std::process::Command;

use exports_tests::postgres_url;
use fred::prelude::*;

#[tokio::test]
async fn a_failing_test_leaves_nothing_behind() -> anyhow::Result<()> {
    let failed = Command::new(env!("CARGO_BIN_EXE_exports-test-that-fails"))
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr),
    );
    assert!(!failed.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("failing on purpose"), "{stdout}{stderr}");
    let made: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .ok_or_else(|| anyhow::anyhow!("nothing reported: {stderr}"))?,
    )?;

    let database = made["database"].as_str().unwrap();
    let (client, connection) =
        tokio_postgres::connect(&postgres_url("postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let databases = client
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?;
    assert!(databases.is_empty(), "database {database} is left");

    let prefix = made["redis_prefix"].as_str().unwrap();
    let redis = exports_tests::redis()?.pool(1).await?;
    let keys: Vec<String> = redis
        .custom(fred::cmd!("KEYS"), vec![format!("{prefix}*")])
        .await?;
    assert!(keys.is_empty(), "Redis keys are left: {keys:?}");

    let directories = made["directories"].as_array().unwrap();
    assert!(directories.len() >= 3, "{made}");
    for directory in directories {
        let directory = std::path::Path::new(directory.as_str().unwrap());
        assert!(!directory.exists(), "{} is left", directory.display());
    }
    let processes = made["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "s3s-fs and the worker: {made}");
    for pid in processes {
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            command_line.is_empty(),
            "process {pid} is still running: {}",
            String::from_utf8_lossy(&command_line)
        );
    }
    Ok(())
}
