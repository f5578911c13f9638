//! Creating, reading, listing and cancelling exports through the generated client, against the
//! real server, PostgreSQL and Redis.

use std::num::NonZeroU32;

use exports_client::types::{CreateUserExport, ExportFormat, ExportStatus, UserExportFilters, UserStatus};
use exports_tests::{error_of, TestEnv};
use futures::TryStreamExt;

fn csv(status: Option<UserStatus>) -> CreateUserExport {
    CreateUserExport {
        format: ExportFormat::Csv,
        filters: Some(UserExportFilters {
            created_after: None,
            status,
        }),
        columns: None,
        compression: None,
    }
}

#[tokio::test]
async fn create_records_queues_once_and_reads_back() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.seed_users(200).await?;
    let alice = env.writer().await?;
    let client = env.client(&alice);

    let accepted = client
        .create_user_export(None, &csv(Some(UserStatus::Inactive)))
        .await?;
    assert_eq!(accepted.status().as_u16(), 202);
    let accepted = accepted.into_inner();
    assert_eq!(accepted.status, ExportStatus::Pending);
    assert!(accepted.estimated_seconds >= 1);

    // The row: pending, owned by the caller, with the matching rows counted.
    let row = env
        .pool
        .get()
        .await?
        .query_one(
            "SELECT user_id, status, format, filters, rows_total FROM exports WHERE id = $1",
            &[&accepted.export_id],
        )
        .await?;
    assert_eq!(row.get::<_, uuid::Uuid>(0), alice.id);
    assert_eq!(row.get::<_, String>(1), "pending");
    assert_eq!(row.get::<_, String>(2), "csv");
    assert_eq!(
        row.get::<_, serde_json::Value>(3),
        serde_json::json!({"status": "inactive"})
    );
    let inactive = env
        .count("SELECT count(*) FROM users WHERE status = 'inactive'")
        .await?;
    assert_eq!(inactive, 50, "one seeded user in four is inactive");
    assert_eq!(row.get::<_, i64>(4), inactive);

    // The job: exactly one stream entry, naming the row.
    let jobs = env.queued_jobs().await?;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].1, accepted.export_id.to_string());

    let export = client.get_export(&accepted.export_id).await?.into_inner();
    assert_eq!(export.export_id, accepted.export_id);
    assert_eq!(export.status, ExportStatus::Pending);
    assert_eq!(export.format, ExportFormat::Csv);
    assert_eq!(export.filters.status, Some(UserStatus::Inactive));
    assert_eq!(export.progress.rows_total, inactive);
    assert_eq!(export.progress.rows_written, 0);
    assert!(export.progress.estimated_seconds_remaining.is_some());
    assert!(export.download_url.is_none());

    let listed = client.list_exports(None, None).await?.into_inner();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].export_id, accepted.export_id);
    assert!(listed.next_page.is_none());
    env.finish().await
}

#[tokio::test]
async fn filters_select_the_rows_counted() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 10).await?;
    env.seed_users(100).await?;
    let client = env.client(&env.writer().await?);
    // Seeded users are created one minute apart going back from now; the caller is new.
    let all = env.count("SELECT count(*) FROM users").await?;
    let active = env
        .count("SELECT count(*) FROM users WHERE status = 'active'")
        .await?;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    let cases = [
        (None, None, all),
        (Some(UserStatus::Active), None, active),
        (None, Some(tomorrow), 0),
    ];
    for (status, created_after, expected) in cases {
        let request = CreateUserExport {
            format: ExportFormat::Xlsx,
            filters: Some(UserExportFilters {
                created_after,
                status,
            }),
            columns: None,
            compression: None,
        };
        let id = client
            .create_user_export(None, &request)
            .await?
            .into_inner()
            .export_id;
        let export = client.get_export(&id).await?.into_inner();
        assert_eq!(
            export.progress.rows_total, expected,
            "{status:?} {created_after:?}"
        );
    }
    env.finish().await
}

#[tokio::test]
async fn estimates_follow_measured_throughput() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.seed_users(2000).await?;
    let user = env.writer().await?;
    // A finished CSV export of 1,000 rows that took 10 s: 100 rows/s measured.
    env.pool
        .get()
        .await?
        .execute(
            "INSERT INTO exports (id, user_id, type, format, status, rows_total, rows_written, started_at, finished_at)
             VALUES ($1, $2, 'users', 'csv', 'done', 1000, 1000, now() - interval '10 seconds', now())",
            &[&uuid::Uuid::new_v4(), &user.id],
        )
        .await?;
    let client = env.client(&user);
    let accepted = client.create_user_export(None, &csv(None)).await?.into_inner();
    let rows = env.count("SELECT count(*) FROM users").await? as f64;
    let expected = (rows / 100.0).ceil() as i64 + 1;
    assert_eq!(
        accepted.estimated_seconds, expected,
        "{rows} rows at 100 rows/s plus start-up"
    );
    env.finish().await
}

#[tokio::test]
async fn pending_limit_gives_429_with_retry_after() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 2).await?;
    let client = env.client(&env.writer().await?);
    client.create_user_export(None, &csv(None)).await?;
    client.create_user_export(None, &csv(None)).await?;
    let (status, body, headers) = error_of(client.create_user_export(None, &csv(None)).await);
    assert_eq!(status, 429);
    assert_eq!(body.error.code, "too_many_pending_exports");
    assert!(
        body.error.message.contains("2 pending exports"),
        "{}",
        body.error.message
    );
    let retry_after: i64 = headers["retry-after"].to_str()?.parse()?;
    assert!(retry_after >= 1);
    assert_eq!(body.error.retry_after_seconds, Some(retry_after));
    assert!(!body.error.request_id.is_empty());
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 2);
    assert_eq!(env.queued_jobs().await?.len(), 2);
    env.finish().await
}

#[tokio::test]
async fn the_limit_holds_under_concurrency() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 3).await?;
    let client = env.client(&env.writer().await?);
    let request = csv(None);
    let results = futures::future::join_all((0..50).map(|_| client.create_user_export(None, &request))).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.status().map(|s| s.as_u16()) == Some(429)))
        .count();
    assert_eq!((accepted, limited), (3, 47));
    assert_eq!(env.count("SELECT count(*) FROM exports").await?, 3);
    assert_eq!(env.queued_jobs().await?.len(), 3);
    env.finish().await
}

#[tokio::test]
async fn cancelled_and_finished_exports_free_the_limit() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 1).await?;
    let client = env.client(&env.writer().await?);
    let first = client
        .create_user_export(None, &csv(None))
        .await?
        .into_inner()
        .export_id;
    assert_eq!(error_of(client.create_user_export(None, &csv(None)).await).0, 429);

    let cancelled = client.cancel_export(&first).await?.into_inner();
    assert_eq!(cancelled.status, ExportStatus::Cancelled);
    assert!(cancelled.progress.estimated_seconds_remaining.is_none());
    let (status, body, _) = error_of(client.cancel_export(&first).await);
    assert_eq!((status, body.error.code.as_str()), (409, "export_finished"));
    let (status, body, _) = error_of(client.download_export(&first).await);
    assert_eq!((status, body.error.code.as_str()), (409, "export_not_ready"));

    let second = client
        .create_user_export(None, &csv(None))
        .await?
        .into_inner()
        .export_id;
    let (status, body, _) = error_of(client.download_export(&second).await);
    assert_eq!((status, body.error.code.as_str()), (409, "export_not_ready"));
    env.pool
        .get()
        .await?
        .execute("UPDATE exports SET status = 'expired' WHERE id = $1", &[&second])
        .await?;
    let (status, body, _) = error_of(client.download_export(&second).await);
    assert_eq!((status, body.error.code.as_str()), (410, "export_expired"));
    env.finish().await
}

#[tokio::test]
async fn exports_are_private_to_their_owner() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let (alice, bob) = (env.writer().await?, env.writer().await?);
    let alice_client = env.client(&alice);
    let bob_client = env.client(&bob);
    let id = alice_client
        .create_user_export(None, &csv(None))
        .await?
        .into_inner()
        .export_id;

    for (status, body, _) in [
        error_of(bob_client.get_export(&id).await),
        error_of(bob_client.cancel_export(&id).await),
        error_of(bob_client.download_export(&id).await),
    ] {
        assert_eq!((status, body.error.code.as_str()), (404, "not_found"));
    }
    // Unknown ids look exactly the same.
    let (status, _, _) = error_of(bob_client.get_export(&uuid::Uuid::new_v4()).await);
    assert_eq!(status, 404);
    assert!(bob_client
        .list_exports(None, None)
        .await?
        .into_inner()
        .items
        .is_empty());
    let status: String = env
        .pool
        .get()
        .await?
        .query_one("SELECT status FROM exports WHERE id = $1", &[&id])
        .await?
        .get(0);
    assert_eq!(status, "pending", "bob's cancel changed nothing");
    env.finish().await
}

#[tokio::test]
async fn pagination_walks_every_export_once_newest_first() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|s| s.max_pending_per_user = 100).await?;
    let user = env.writer().await?;
    let client = env.client(&user);
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(
            client
                .create_user_export(None, &csv(None))
                .await?
                .into_inner()
                .export_id,
        );
    }
    // Someone else's exports never show up.
    env.client(&env.writer().await?)
        .create_user_export(None, &csv(None))
        .await?;
    // Creation times one second apart, in creation order: two creates can share a clock tick.
    let client_db = env.pool.get().await?;
    for (second, id) in created.iter().enumerate() {
        client_db
            .execute(
                "UPDATE exports SET created_at = '2025-01-01T00:00:00Z'::timestamptz + $2 * interval '1 second'
                 WHERE id = $1",
                &[id, &(second as f64)],
            )
            .await?;
    }

    let limit = NonZeroU32::new(3);
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client.list_exports(limit, token.as_deref()).await?.into_inner();
        pages.push(page.items.iter().map(|e| e.export_id).collect::<Vec<_>>());
        match page.next_page {
            Some(next) => token = Some(next),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let walked: Vec<_> = pages.concat();
    let newest_first: Vec<_> = created.iter().rev().copied().collect();
    assert_eq!(walked, newest_first);

    // A new export created mid-walk does not shift later pages (keyset, not offset).
    let first = client.list_exports(limit, None).await?.into_inner();
    client.create_user_export(None, &csv(None)).await?;
    let second = client
        .list_exports(limit, first.next_page.as_deref())
        .await?
        .into_inner();
    let second_ids: Vec<_> = second.items.iter().map(|e| e.export_id).collect();
    assert_eq!(second_ids, pages[1]);

    // The generated stream helper follows the tokens too.
    let streamed: Vec<_> = client.list_exports_stream(limit).try_collect().await?;
    assert_eq!(streamed.len(), 8);
    env.finish().await
}
