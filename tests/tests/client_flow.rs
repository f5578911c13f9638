//! The client's whole job (issue 11, item 4) against the real server: create (retried under
//! one `Idempotency-Key`), wait and download; the typed outcomes of an export that did not
//! finish; the API's codes as an enum; and the crate's example, run as a user would.

use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportFormat};
use exports_client::{ErrorCode, FlowError, Retries};
use exports_tests::{quick_worker, Setup, TestEnv};

const PROMPTLY: Duration = Duration::from_secs(60);

fn every_user_as_csv() -> CreateUserExport {
    CreateUserExport {
        format: ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    }
}

#[tokio::test]
async fn create_wait_and_download_in_three_calls() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        worker: Some(quick_worker()),
        ..Default::default()
    })
    .await?;
    env.seed_users(200).await?;
    let client = env.client(&env.writer().await?);
    let accepted = client
        .create_export(&every_user_as_csv(), Retries::default())
        .await?;
    let export = client.wait_for_export(&accepted.export_id, PROMPTLY).await?;
    let mut file = Vec::new();
    let mut reports = Vec::new();
    let bytes = client
        .download_export_to(&export.export_id, &mut file, |written, total| {
            reports.push((written, total))
        })
        .await?;
    assert_eq!(bytes, file.len() as u64);
    let users = env.count("SELECT count(*) FROM users").await?;
    assert_eq!(
        String::from_utf8(file)?.lines().count() as i64,
        users + 1,
        "a header and a row per user"
    );
    assert_eq!(reports.last().copied(), Some((bytes, Some(bytes))));
    assert!(
        reports.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{reports:?}"
    );
    env.finish().await
}

#[tokio::test]
async fn an_export_that_does_not_finish_is_a_typed_error() -> anyhow::Result<()> {
    // No worker: exports stay pending until the test changes them.
    let env = TestEnv::start().await?;
    let client = env.client(&env.writer().await?);
    let request = every_user_as_csv();
    let create = || client.create_export(&request, Retries::default());

    let pending = create().await?.export_id;
    match client.wait_for_export(&pending, Duration::ZERO).await {
        Err(FlowError::OutOfTime(export)) => assert_eq!(export.export_id, pending),
        other => panic!("expected out of time, got {other:?}"),
    }
    client.cancel_export(&pending).await?;
    assert!(matches!(
        client.wait_for_export(&pending, PROMPTLY).await,
        Err(FlowError::Cancelled(_))
    ));

    let failed = create().await?.export_id;
    let fail = format!(
        "WITH failed AS (UPDATE exports SET status = 'failed', error_message = 'The export failed: a test said so.'
                         WHERE id = '{failed}' RETURNING 1) SELECT count(*) FROM failed"
    );
    assert_eq!(env.count(&fail).await?, 1);
    match client.wait_for_export(&failed, PROMPTLY).await {
        Err(FlowError::Failed(export)) => {
            assert_eq!(
                export.error_message.as_deref(),
                Some("The export failed: a test said so.")
            )
        }
        other => panic!("expected failed, got {other:?}"),
    }

    // The API's own errors come with their code as an enum.
    let unknown = uuid::Uuid::new_v4();
    match client.wait_for_export(&unknown, PROMPTLY).await {
        Err(FlowError::Api { status, code, .. }) => assert_eq!((status, code), (404, ErrorCode::NotFound)),
        other => panic!("expected 404, got {other:?}"),
    }
    env.finish().await
}

/// Every code the spec lists is one the client names (a newer server's would be `Other`).
#[test]
fn the_client_names_every_code_of_the_spec() {
    let spec = exports_spec::Spec::bundled();
    let table = spec
        .document()
        .pointer("/components/schemas/ErrorBody/properties/code/description")
        .and_then(|description| description.as_str())
        .expect("the codes table");
    let codes: Vec<&str> = table
        .lines()
        .filter_map(|line| line.trim().strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(codes.len() >= 20, "{codes:?}");
    for code in codes {
        assert!(
            !matches!(ErrorCode::from(code), ErrorCode::Other(_)),
            "{code} has no name"
        );
    }
}

/// Relays connections to `upstream`, but drops the first connection's first response: the
/// server has done the work, the client never hears of it.
async fn lose_the_first_answer(upstream: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            if std::mem::take(&mut first) {
                // Forward the request; wait for the answer to begin, then hang up on both.
                let mut request = vec![0; 64 * 1024];
                let Ok(read) = client.read(&mut request).await else {
                    continue;
                };
                if server.write_all(&request[..read]).await.is_err() {
                    continue;
                }
                let _ = server.read(&mut [0; 1]).await;
                continue;
            }
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    Ok(address)
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_retried_without_a_second_export() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let relay = lose_the_first_answer(env.server_addr).await?;
    let client = exports_client::connect(&format!("http://{relay}"), &user.key, PROMPTLY)?;
    let retries = Retries {
        backoff: Duration::from_millis(10),
        ..Retries::default()
    };
    let accepted = client.create_export(&every_user_as_csv(), retries).await?;
    assert_eq!(
        env.count("SELECT count(*) FROM exports").await?,
        1,
        "the retry was a replay"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM exports WHERE id = '{}'",
            accepted.export_id
        ))
        .await?,
        1
    );
    assert_eq!(env.count("SELECT count(*) FROM idempotency_keys").await?, 1);
    env.finish().await
}

#[tokio::test]
async fn the_crates_example_exports_every_user() -> anyhow::Result<()> {
    let env = TestEnv::start_setup(Setup {
        worker: Some(quick_worker()),
        ..Default::default()
    })
    .await?;
    env.seed_users(50).await?;
    let user = env.writer().await?;
    // Examples are built by `cargo test` beside the test binaries: target/debug/examples.
    let example = std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(|debug| debug.join("examples/export_users"))
        .filter(|path| path.exists())
        .ok_or_else(|| anyhow::anyhow!("client/examples/export_users is not built (cargo test builds it)"))?;
    let directory = tempfile::tempdir()?;
    let file = directory.path().join("users.csv");
    let output = tokio::process::Command::new(example)
        .arg(&file)
        .env_clear()
        .env("EXPORTS_URL", format!("http://{}", env.server_addr))
        .env("EXPORTS_API_KEY", &user.key)
        .output()
        .await?;
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    let users = env.count("SELECT count(*) FROM users").await?;
    assert_eq!(std::fs::read_to_string(&file)?.lines().count() as i64, users + 1);
    assert!(String::from_utf8(output.stdout)?.contains(&format!("{users} users")));
    env.finish().await
}
