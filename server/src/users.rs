//! The users table: what is exported, and who requests exports.

use anyhow::Result;
use uuid::Uuid;

/// Returns the id of the user with this email, creating an active user if there is none.
pub async fn ensure_user(client: &tokio_postgres::Client, email: &str, name: &str) -> Result<Uuid> {
    let row = client
        .query_one(
            "INSERT INTO users (email, name, status) VALUES ($1, $2, 'active')
             ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
             RETURNING id",
            &[&email, &name],
        )
        .await?;
    Ok(row.get(0))
}

/// Inserts `count` demo users (`user<N>@example.com`, one in four inactive, created over the
/// past minutes) unless they exist; returns how many were added.
pub async fn seed_demo_users(client: &tokio_postgres::Client, count: i64) -> Result<u64> {
    seed_demo_users_until(client, count, chrono::Utc::now()).await
}

/// Like `seed_demo_users`, with user N created N minutes before `newest`.
pub async fn seed_demo_users_until(
    client: &tokio_postgres::Client,
    count: i64,
    newest: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    Ok(client
        .execute(
            "INSERT INTO users (email, name, status, created_at)
             SELECT 'user' || g || '@example.com',
                    'User ' || g,
                    CASE WHEN g % 4 = 0 THEN 'inactive' ELSE 'active' END,
                    $2::timestamptz - make_interval(mins => g::int)
             FROM generate_series(1, $1::bigint) AS g
             ON CONFLICT (email) DO NOTHING",
            &[&count, &newest],
        )
        .await?)
}
