//! Personal data is kept only as long as promised, however large the backlog: one sweep
//! expires every export past `expires_at` (deleting its file) and deletes every webhook
//! delivery that ended longer ago than the retention, batch after batch.

use std::time::Duration;

use exports_server::worker::WorkerArgs;
use exports_tests::{quick_worker, stored_objects, until, TestEnv};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use uuid::Uuid;

/// More than the sweeper takes in one statement (`worker::SWEEP_BATCH`, 100).
const BACKLOG: usize = 250;
const SWEPT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn one_sweep_expires_every_due_export_and_purges_every_old_delivery_past_one_batch(
) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let client = env.pool.get().await?;
    let store = env.storage.object_store();

    // Finished exports past their expiry, each with its file, and one not yet due.
    let key = |id: Uuid| format!("exports/{id}/attempt-1.csv");
    let not_due = Uuid::new_v4();
    for n in 0..=BACKLOG {
        let (id, expires_in) = match n {
            0 => (not_due, "1 hour"),
            _ => (Uuid::new_v4(), "-1 hour"),
        };
        store.put(&Path::from(key(id)), "id\n".into()).await?;
        client
            .execute(
                "INSERT INTO exports (id, user_id, type, format, status, file_key, expires_at)
                 VALUES ($1, $2, 'users', 'csv', 'done', $3, now() + $4::text::interval)",
                &[&id, &user.id, &key(id), &expires_in],
            )
            .await?;
    }

    // Deliveries that ended 31 days ago (delivered or given up), beyond the 30 days kept, and
    // one delivered 29 days ago and one still pending, which stay.
    let endpoint = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO webhook_endpoints (id, user_id, url, event_types, secret)
             VALUES ($1, $2, 'https://receiver.example/hook', '{export.done}', 'whsec_dGVzdA==')",
            &[&endpoint, &user.id],
        )
        .await?;
    client
        .execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, export, occurred_at,
                                             delivered_at, gave_up_at)
             SELECT gen_random_uuid(), $1, 'export.done', '{}', now() - interval '31 days',
                    CASE WHEN n % 2 = 0 THEN now() - interval '31 days' END,
                    CASE WHEN n % 2 = 1 THEN now() - interval '31 days' END
             FROM generate_series(1, $2::int) AS n",
            &[&endpoint, &(BACKLOG as i32)],
        )
        .await?;
    let kept = [Uuid::new_v4(), Uuid::new_v4()];
    client
        .execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_type, export, delivered_at)
             VALUES ($1, $3, 'export.done', '{}', now() - interval '29 days'),
                    ($2, $3, 'export.done', '{}', NULL)",
            &[&kept[0], &kept[1], &endpoint],
        )
        .await?;

    // One sweep: the worker sweeps as it starts, and not again for an hour.
    let worker = env
        .start_worker(WorkerArgs {
            sweep_interval_secs: 3600,
            ..quick_worker()
        })
        .await?;
    until(
        SWEPT,
        "every due export expired and every old delivery deleted",
        async || {
            let expired = env
                .count("SELECT count(*) FROM exports WHERE status = 'expired'")
                .await?;
            let old = env
                .count(
                    "SELECT count(*) FROM webhook_deliveries
                 WHERE coalesce(delivered_at, gave_up_at) < now() - interval '30 days'",
                )
                .await?;
            Ok(expired == BACKLOG as i64 && old == 0)
        },
    )
    .await?;
    worker.shutdown(std::future::pending()).await;

    assert_eq!(
        stored_objects(&env.storage).await?,
        vec![(key(not_due), 3)],
        "only the file of the export not yet due is left"
    );
    let status: String = client
        .query_one("SELECT status FROM exports WHERE id = $1", &[&not_due])
        .await?
        .get(0);
    assert_eq!(status, "done");
    let left = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE id = ANY($1)",
            &[&kept.as_slice()],
        )
        .await?
        .get::<_, i64>(0);
    assert_eq!(
        left, 2,
        "the delivery within the retention and the pending one stay"
    );
    drop(client);
    env.finish().await
}
