//! Webhook endpoints through the API (issue 13, item 1 and the registration half of item 5),
//! against the real server and PostgreSQL, with the generated client: register (the secret
//! shown once, in Standard Webhooks' form), list without secrets, rotate, delete; URLs that
//! could reach the server's own network refused; endpoints belong to their user; the scope.

use exports_client::types::{CreateWebhookEndpoint, WebhookEventType};
use exports_tests::{error_of, TestEnv};

const PUBLIC_URL: &str = "https://93.184.215.14/hooks/exports";

fn endpoint(url: &str, event_types: Vec<WebhookEventType>) -> CreateWebhookEndpoint {
    CreateWebhookEndpoint {
        url: url.parse().expect("a valid URL"),
        event_types,
    }
}

/// The secret as Standard Webhooks defines it: `whsec_` and base64 of 24 to 64 bytes.
fn secret_bytes(secret: &str) -> usize {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64")
        .len()
}

#[tokio::test]
async fn endpoints_are_registered_listed_rotated_and_deleted() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.user(&["webhooks:manage"]).await?;
    let client = env.client(&user);

    let created = client
        .create_webhook_endpoint(&endpoint(PUBLIC_URL, vec![WebhookEventType::ExportDone]))
        .await?;
    assert_eq!(created.status().as_u16(), 201);
    let created = created.into_inner();
    assert_eq!(created.url, PUBLIC_URL);
    assert_eq!(created.event_types, [WebhookEventType::ExportDone]);
    assert_eq!(secret_bytes(&created.secret), 24);

    // Each type once, in the order asked.
    let repeated = client
        .create_webhook_endpoint(&endpoint(
            PUBLIC_URL,
            vec![
                WebhookEventType::ExportDone,
                WebhookEventType::ExportFailed,
                WebhookEventType::ExportDone,
            ],
        ))
        .await?
        .into_inner();
    assert_eq!(
        repeated.event_types,
        [WebhookEventType::ExportDone, WebhookEventType::ExportFailed]
    );
    client.delete_webhook_endpoint(&repeated.endpoint_id).await?;

    // All events when none are named; listed oldest first, without secrets.
    let all = client
        .create_webhook_endpoint(&endpoint(PUBLIC_URL, vec![]))
        .await?
        .into_inner();
    assert_eq!(all.event_types.len(), 4);
    let listed = client.list_webhook_endpoints().await?.into_inner().items;
    let ids: Vec<_> = listed.iter().map(|e| e.endpoint_id).collect();
    assert_eq!(ids, [created.endpoint_id, all.endpoint_id]);
    let raw = env
        .raw()
        .get(env.url("/api/v1/webhooks/endpoints"))
        .bearer_auth(&user.key)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        !raw.contains(created.secret.as_str()) && !raw.contains("secret"),
        "{raw}"
    );

    let rotated = client
        .rotate_webhook_secret(&created.endpoint_id)
        .await?
        .into_inner();
    assert_eq!(rotated.endpoint_id, created.endpoint_id);
    assert_ne!(rotated.secret, created.secret);
    let stored: String = env
        .pool
        .get()
        .await?
        .query_one(
            "SELECT secret FROM webhook_endpoints WHERE id = $1",
            &[&created.endpoint_id],
        )
        .await?
        .get(0);
    assert_eq!(
        stored,
        rotated.secret.as_str(),
        "the new secret is the one that signs"
    );

    assert_eq!(
        client
            .delete_webhook_endpoint(&created.endpoint_id)
            .await?
            .status()
            .as_u16(),
        204
    );
    let listed = client.list_webhook_endpoints().await?.into_inner().items;
    assert_eq!(listed.len(), 1);
    let (status, error, _) = error_of(client.delete_webhook_endpoint(&created.endpoint_id).await);
    assert_eq!((status, error.error.code.as_str()), (404, "not_found"));
    let (status, _, _) = error_of(client.rotate_webhook_secret(&created.endpoint_id).await);
    assert_eq!(status, 404);
    env.finish().await
}

#[tokio::test]
async fn urls_that_reach_the_servers_own_network_are_refused() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.user(&["webhooks:manage"]).await?;
    let client = env.client(&user);
    for (url, words) in [
        ("http://93.184.215.14/hook", "must be an https URL"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.0.0.7/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://user:secret@93.184.215.14/hook", "user name or password"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ] {
        let (status, error, _) = error_of(client.create_webhook_endpoint(&endpoint(url, vec![])).await);
        assert_eq!(
            (status, error.error.code.as_str()),
            (422, "webhook_url_refused"),
            "{url}"
        );
        let detail = &error.error.details[0];
        assert!(
            detail.field == "url" && detail.issue.contains(words),
            "{url}: {detail:?}"
        );
        // A name is answered with the kind of address it resolves to, never the address:
        // the server's own DNS is nobody else's business (issue 22).
        if url.contains("localhost") {
            let said = format!("{} {}", error.error.message, detail.issue);
            assert!(
                !said.contains("127.0.0.1") && !said.contains("::1"),
                "{url}: {said}"
            );
        }
    }
    let count: i64 = env
        .pool
        .get()
        .await?
        .query_one("SELECT count(*) FROM webhook_endpoints", &[])
        .await?
        .get(0);
    assert_eq!(count, 0, "a refused request writes nothing");
    env.finish().await
}

#[tokio::test]
async fn local_development_may_register_private_http_endpoints() -> anyhow::Result<()> {
    let env = TestEnv::start_with(|settings| settings.webhook_urls.allow_private = true).await?;
    let user = env.user(&["webhooks:manage"]).await?;
    let created = env
        .client(&user)
        .create_webhook_endpoint(&endpoint("http://127.0.0.1:9/hook", vec![]))
        .await?;
    assert_eq!(created.status().as_u16(), 201);
    env.finish().await
}

#[tokio::test]
async fn endpoints_belong_to_their_user_and_need_the_scope() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let (alice, bob) = (
        env.user(&["webhooks:manage"]).await?,
        env.user(&["webhooks:manage"]).await?,
    );
    let created = env
        .client(&alice)
        .create_webhook_endpoint(&endpoint(PUBLIC_URL, vec![]))
        .await?
        .into_inner();
    let bobs = env.client(&bob);
    assert!(bobs.list_webhook_endpoints().await?.into_inner().items.is_empty());
    let (status, _, _) = error_of(bobs.delete_webhook_endpoint(&created.endpoint_id).await);
    assert_eq!(status, 404, "another user's endpoint is not found");
    let (status, _, _) = error_of(bobs.rotate_webhook_secret(&created.endpoint_id).await);
    assert_eq!(status, 404);

    let exporter = env.writer().await?;
    let (status, error, _) = error_of(env.client(&exporter).list_webhook_endpoints().await);
    assert_eq!(
        (status, error.error.message.as_str()),
        (403, "This API key lacks the webhooks:manage scope.")
    );

    // At most ten per user.
    let alices = env.client(&alice);
    for _ in 1..10 {
        alices
            .create_webhook_endpoint(&endpoint(PUBLIC_URL, vec![]))
            .await?;
    }
    let (status, error, _) = error_of(
        alices
            .create_webhook_endpoint(&endpoint(PUBLIC_URL, vec![]))
            .await,
    );
    assert_eq!(
        (status, error.error.code.as_str()),
        (409, "too_many_webhook_endpoints")
    );
    env.finish().await
}
