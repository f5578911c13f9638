//! Keys have a life: they can expire, their use is recorded, and an inactive user's keys no
//! longer work.

use exports_server::db::keys;
use exports_tests::{error_of, TestEnv};

#[tokio::test]
async fn an_expired_key_is_refused_and_one_not_yet_expired_works() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let writer = env.writer().await?;
    let client = env.pool.get().await?;
    let scopes = vec![keys::SCOPE_READ.to_string()];
    let hour = chrono::Duration::hours(1);
    let expired = keys::issue_key(
        &client,
        writer.id,
        "old",
        &scopes,
        Some(chrono::Utc::now() - hour),
    )
    .await?;
    let current = keys::issue_key(
        &client,
        writer.id,
        "new",
        &scopes,
        Some(chrono::Utc::now() + hour),
    )
    .await?;

    let (status, body, _) = error_of(env.client_with_key(&expired.token).list_exports(None, None).await);
    assert_eq!((status, body.error.code.as_str()), (401, "unauthorized"));
    assert!(
        body.error.details[0].issue.contains("expired"),
        "{:?}",
        body.error.details
    );
    env.client_with_key(&current.token)
        .list_exports(None, None)
        .await?;
    env.finish().await
}

#[tokio::test]
async fn an_inactive_users_keys_are_refused() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let writer = env.writer().await?;
    env.client(&writer).list_exports(None, None).await?;
    env.pool
        .get()
        .await?
        .execute(
            "UPDATE users SET status = 'inactive' WHERE id = $1",
            &[&writer.id],
        )
        .await?;
    let (status, _, _) = error_of(env.client(&writer).list_exports(None, None).await);
    assert_eq!(status, 401);
    env.finish().await
}

#[tokio::test]
async fn a_keys_last_use_is_recorded_and_listed_without_its_secret() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let writer = env.writer().await?;
    let client = env.pool.get().await?;
    let email: String = client
        .query_one("SELECT email FROM users WHERE id = $1", &[&writer.id])
        .await?
        .get(0);
    let listed = keys::list_keys(&client, Some(&email)).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, None);
    assert!(!format!("{listed:?}").contains(&writer.key));

    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    env.client(&writer).list_exports(None, None).await?;
    let listed = keys::list_keys(&client, Some(&email)).await?;
    let used = listed[0].last_used_at.expect("the use is recorded");
    assert!(used >= before, "{used}");
    env.finish().await
}
