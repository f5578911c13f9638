//! The migrations apply, roll back and apply again; concurrent runs wait for each other.

use exports_server::db;
use exports_tests::TestDatabase;

async fn tables(url: &str) -> anyhow::Result<Vec<String>> {
    let pool = db::pool(url, 1)?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name IN ('users', 'api_keys', 'exports')
             ORDER BY table_name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[tokio::test]
async fn up_down_up() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let applied = db::migrate(&database.url).await?;
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert_eq!(tables(&database.url).await?, ["api_keys", "exports", "users"]);

    assert_eq!(db::rollback(&database.url, 2).await?, [3]);
    assert_eq!(tables(&database.url).await?, ["api_keys", "users"]);
    assert_eq!(db::rollback(&database.url, 0).await?, [2, 1]);
    assert!(tables(&database.url).await?.is_empty());

    assert_eq!(db::migrate(&database.url).await?.len(), 3);
    assert_eq!(tables(&database.url).await?, ["api_keys", "exports", "users"]);
    assert!(
        db::migrate(&database.url).await?.is_empty(),
        "nothing left to apply"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_migrations_apply_once() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let runs = futures::future::join_all((0..4).map(|_| db::migrate(&database.url))).await;
    let applied: usize = runs
        .into_iter()
        .map(|run| run.map(|applied| applied.len()))
        .sum::<anyhow::Result<usize>>()?;
    assert_eq!(applied, 3, "each migration applied by exactly one run");
    assert_eq!(tables(&database.url).await?, ["api_keys", "exports", "users"]);
    Ok(())
}
