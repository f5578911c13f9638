//! The migrations apply, roll back and apply again; concurrent runs wait for each other.

use exports_server::db::Postgres;
use exports_tests::TestDatabase;

async fn tables(url: &str) -> anyhow::Result<Vec<String>> {
    let pool = Postgres::new(url, None)?.pool(1)?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public'
               AND table_name IN ('users', 'api_keys', 'exports', 'idempotency_keys', 'webhook_endpoints', 'webhook_deliveries')
             ORDER BY table_name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// How many of `columns` `table` has.
async fn columns_of(url: &str, table: &str, columns: &[&str]) -> anyhow::Result<i64> {
    let pool = Postgres::new(url, None)?.pool(1)?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name = $1 AND column_name = ANY($2)",
            &[&table, &columns],
        )
        .await?;
    Ok(row.get(0))
}

/// The columns V4 adds to `exports`.
async fn worker_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(url, "exports", &["queued_at", "retry_at"]).await
}

/// The columns V10 adds to `exports`.
async fn upload_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(url, "exports", &["upload_key", "upload_id"]).await
}

/// The columns V5 adds to `api_keys`.
async fn key_life_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(url, "api_keys", &["expires_at", "last_used_at"]).await
}

/// The name V12 gives the column of an export's file: (new, old) names present.
async fn file_key_columns(url: &str) -> anyhow::Result<(i64, i64)> {
    Ok((
        columns_of(url, "exports", &["file_key"]).await?,
        columns_of(url, "exports", &["file_url"]).await?,
    ))
}

/// The trace context V13 stores with each export.
async fn trace_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(
        url,
        "exports",
        &["traceparent", "request_id", "first_attempt_traceparent"],
    )
    .await
}

/// The file's options V14 adds to `exports`.
async fn file_option_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(url, "exports", &["columns", "compression"]).await
}

/// The checkpoint V15 adds to `exports`.
async fn checkpoint_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(url, "exports", &["checkpoint"]).await
}

/// The lease column V11 gives `webhook_deliveries` back.
async fn lease_columns(url: &str) -> anyhow::Result<i64> {
    columns_of(url, "webhook_deliveries", &["locked_until"]).await
}

#[tokio::test]
async fn up_down_up() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let postgres = database.postgres()?;
    let applied = postgres.migrate().await?;
    assert_eq!(applied.len(), 15, "{applied:?}");
    let all = [
        "api_keys",
        "exports",
        "idempotency_keys",
        "users",
        "webhook_deliveries",
        "webhook_endpoints",
    ];
    assert_eq!(tables(&database.url).await?, all);
    assert_eq!(worker_columns(&database.url).await?, 2);
    assert_eq!(key_life_columns(&database.url).await?, 2);
    assert_eq!(lease_columns(&database.url).await?, 1);
    assert_eq!(upload_columns(&database.url).await?, 2);
    assert_eq!(file_key_columns(&database.url).await?, (1, 0));
    assert_eq!(file_option_columns(&database.url).await?, 2);
    assert_eq!(trace_columns(&database.url).await?, 3);
    assert_eq!(checkpoint_columns(&database.url).await?, 1);
    assert_eq!(postgres.rollback(14).await?, [15]);
    assert_eq!(checkpoint_columns(&database.url).await?, 0);
    // The version before V14 cannot read a JSON Lines export: the rollback refuses, whole.
    let client = postgres.pool(1)?.get().await?;
    client
        .batch_execute(
            "INSERT INTO users (id, email, name, status)
             VALUES ('00000000-0000-4000-8000-000000000001', 'a@example.com', 'A', 'active');
             INSERT INTO exports (id, user_id, type, format, status)
             VALUES (gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'users', 'jsonl', 'done')",
        )
        .await?;
    let refused = postgres.rollback(13).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("delete them before rolling back V14"),
        "{refused:#}"
    );
    assert_eq!(file_option_columns(&database.url).await?, 2);
    client
        .batch_execute("DELETE FROM exports; DELETE FROM users")
        .await?;
    drop(client);
    assert_eq!(postgres.rollback(13).await?, [14]);
    assert_eq!(file_option_columns(&database.url).await?, 0);
    assert_eq!(postgres.rollback(12).await?, [13]);
    assert_eq!(trace_columns(&database.url).await?, 0);
    assert_eq!(postgres.rollback(11).await?, [12]);
    assert_eq!(file_key_columns(&database.url).await?, (0, 1));
    assert_eq!(postgres.rollback(10).await?, [11]);
    assert_eq!(lease_columns(&database.url).await?, 0);
    assert_eq!(postgres.rollback(9).await?, [10]);
    assert_eq!(upload_columns(&database.url).await?, 0);
    assert_eq!(postgres.rollback(6).await?, [9, 8, 7]);
    assert_eq!(
        tables(&database.url).await?,
        ["api_keys", "exports", "idempotency_keys", "users"]
    );
    assert_eq!(postgres.rollback(5).await?, [6]);
    assert_eq!(tables(&database.url).await?, ["api_keys", "exports", "users"]);
    assert_eq!(postgres.rollback(4).await?, [5]);
    assert_eq!(key_life_columns(&database.url).await?, 0);

    assert_eq!(postgres.rollback(3).await?, [4]);
    assert_eq!(worker_columns(&database.url).await?, 0);
    assert_eq!(postgres.rollback(2).await?, [3]);
    assert_eq!(tables(&database.url).await?, ["api_keys", "users"]);
    assert_eq!(postgres.rollback(0).await?, [2, 1]);
    assert!(tables(&database.url).await?.is_empty());

    assert_eq!(postgres.migrate().await?.len(), 15);
    assert_eq!(tables(&database.url).await?, all);
    assert!(postgres.migrate().await?.is_empty(), "nothing left to apply");
    Ok(())
}

#[tokio::test]
async fn concurrent_migrations_apply_once() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let postgres = database.postgres()?;
    let runs = futures::future::join_all((0..5).map(|_| postgres.migrate())).await;
    let applied: usize = runs
        .into_iter()
        .map(|run| run.map(|applied| applied.len()))
        .sum::<anyhow::Result<usize>>()?;
    assert_eq!(applied, 15, "each migration applied by exactly one run");
    assert_eq!(
        tables(&database.url).await?,
        [
            "api_keys",
            "exports",
            "idempotency_keys",
            "users",
            "webhook_deliveries",
            "webhook_endpoints"
        ]
    );
    Ok(())
}
