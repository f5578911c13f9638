//! Secrets stay out of logs, `--help` and the process list: a full export flow through the
//! `dev` process (API and worker), with every secret set the way an operator would, leaves
//! none of them in any log line.

use std::process::Command;
use std::time::Duration;

use exports_tests::receiver::{verify, Receiver, Step};
use exports_tests::{
    api_address, demo_key, finished_csv_export, ChildProcess, TestDatabase, TestRedisPrefix,
};

const BINARY: &str = env!("CARGO_BIN_EXE_exports-server-under-test");
/// A generous upper bound for anything that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(60);

struct Secrets {
    database_password: String,
    signing_key: String,
    s3_secret: String,
}

impl Secrets {
    fn new() -> Self {
        let random = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            database_password: format!("pw{}", random()),
            signing_key: format!("sk{}{}", random(), random()),
            s3_secret: format!("s3{}", random()),
        }
    }

    /// `postgres://postgres@…` with the password put in (the machine's PostgreSQL trusts
    /// local connections, so any password is accepted and none is checked).
    fn database_url(&self, database: &TestDatabase) -> String {
        database
            .url
            .replacen("postgres@", &format!("postgres:{}@", self.database_password), 1)
    }

    fn command(&self, database: &TestDatabase, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env_clear()
            .env("EXPORTS_DATABASE_URL", self.database_url(database))
            .env("EXPORTS_DOWNLOAD_SIGNING_KEY", &self.signing_key)
            .env("EXPORTS_S3_SECRET_ACCESS_KEY", &self.s3_secret);
        command
    }
}

/// Stops `dev` as an operator would (SIGTERM, so that it flushes its log) and returns the log.
async fn stop_and_read_log(mut dev: ChildProcess, log_path: &std::path::Path) -> anyhow::Result<String> {
    dev.terminate()?;
    dev.exited(PROMPTLY).await?;
    Ok(std::fs::read_to_string(log_path)?)
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_the_help() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let redis = TestRedisPrefix::new();
    let files = tempfile::tempdir()?;
    let secrets = Secrets::new();
    let mut looked_for = vec![
        secrets.database_password.clone(),
        secrets.signing_key.clone(),
        secrets.s3_secret.clone(),
    ];

    // --help shows where each secret comes from, never its value.
    for subcommand in ["serve", "work", "dev"] {
        let help = secrets.command(&database, &[subcommand, "--help"]).output()?;
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("EXPORTS_DOWNLOAD_SIGNING_KEY"), "{help}");
        for secret in &looked_for {
            assert!(
                !help.contains(secret.as_str()),
                "{subcommand} --help shows a secret:\n{help}"
            );
        }
    }
    // A secret given as a flag is refused, and not echoed.
    let refused = Command::new(BINARY)
        .args(["serve", "--download-signing-key", &secrets.signing_key])
        .output()?;
    let said = String::from_utf8_lossy(&refused.stdout) + String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("EXPORTS_DOWNLOAD_SIGNING_KEY"), "{said}");
    assert!(!said.contains(secrets.signing_key.as_str()), "{said}");
    let database_url = secrets.database_url(&database);
    let refused = Command::new(BINARY)
        .args(["--database-url", &database_url, "migrate"])
        .output()?;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("EXPORTS_DATABASE_URL"), "{said}");
    assert!(!said.contains(secrets.database_password.as_str()), "{said}");

    // The whole flow, logged as an operator would run it.
    let log_path = files.path().join("dev.log");
    let log = std::fs::File::create(&log_path)?;
    let storage = files.path().join("files");
    let mut dev = secrets.command(
        &database,
        &["dev", "--listen", "127.0.0.1:0", "--demo-users", "50"],
    );
    dev.args(["--redis-prefix", &redis.prefix])
        .arg("--storage-dir")
        .arg(&storage)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone()?)
        .stderr(log);
    let dev = ChildProcess::spawn(dev)?;
    let address = api_address(&log_path, PROMPTLY).await?;
    let key = demo_key(&log_path)?;
    looked_for.push(key.clone());

    let http = reqwest::Client::new();
    let api = format!("http://{address}/api/v1/exports/users");
    let (export_url, export) = finished_csv_export(&http, address, &key, PROMPTLY).await?;
    assert_eq!(export["status"], "done", "{export}");
    let link = export["download_url"].as_str().unwrap_or_default().to_string();
    let signature = url::Url::parse(&link)?
        .query_pairs()
        .find(|(name, _)| name == "signature")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| anyhow::anyhow!("no signature in {link}"))?;
    looked_for.push(signature.clone());
    assert_eq!(http.get(&link).send().await?.status(), 200);
    // Another first digit, whatever its case: hex is read either way, so `a` for `A` alters nothing.
    let other_digit = if signature.starts_with('0') { "1" } else { "0" };
    let altered = link.replace(&signature, &format!("{other_digit}{}", &signature[1..]));
    assert_eq!(http.get(&altered).send().await?.status(), 403);
    let response = http
        .get(format!("{export_url}/download"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let wrong_key = http.get(&api).bearer_auth(format!("{key}x")).send().await?;
    assert_eq!(wrong_key.status(), 401);

    // Every log line (the demo key is printed on purpose, as text, once, for the developer).
    let output = stop_and_read_log(dev, &log_path).await?;
    let log_lines: Vec<&str> = output.lines().filter(|line| line.starts_with('{')).collect();
    assert!(
        log_lines
            .iter()
            .any(|line| line.contains("\"operation\":\"downloadByLink\"")),
        "the flow was logged:\n{output}"
    );
    for line in log_lines {
        for secret in &looked_for {
            assert!(!line.contains(secret.as_str()), "a secret in a log line: {line}");
        }
    }
    Ok(())
}

/// The same, with files in S3 (an s3s-fs server of the test's own, so the S3 secret is in
/// use) and webhooks registered, failing, delivered and rotated: no log line, and no
/// delivery's error as the API shows it, carries the S3 secret, a `whsec_` secret, the API
/// key, a link's signature, or the secret a receiver keeps in its URL's path or query.
#[tokio::test]
async fn no_secret_reaches_a_log_line_with_s3_and_failing_webhooks() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let redis = TestRedisPrefix::new();
    let files = tempfile::tempdir()?;
    let s3 = exports_tests::TestS3::start().await?;
    let storage = s3.args();
    let s3_secret = storage.s3_secret_access_key.clone().unwrap_or_default();
    let secrets = Secrets {
        s3_secret: s3_secret.clone(),
        ..Secrets::new()
    };
    let mut looked_for = vec![
        secrets.database_password.clone(),
        secrets.signing_key.clone(),
        s3_secret,
    ];

    let log_path = files.path().join("dev.log");
    let log = std::fs::File::create(&log_path)?;
    let mut dev = secrets.command(
        &database,
        &["dev", "--listen", "127.0.0.1:0", "--demo-users", "50"],
    );
    dev.args(["--redis-prefix", &redis.prefix])
        .args([
            "--s3-bucket",
            &s3.bucket,
            "--s3-endpoint",
            &s3.endpoint(),
            "--s3-path-style",
        ])
        .args([
            "--s3-access-key-id",
            storage.s3_access_key_id.as_deref().unwrap_or_default(),
        ])
        .args(["--webhook-backoff-ms", "50", "--webhook-poll-ms", "20"])
        .env("RUST_LOG", "info")
        .stdout(log.try_clone()?)
        .stderr(log);
    let dev = ChildProcess::spawn(dev)?;
    let address = api_address(&log_path, PROMPTLY).await?;
    let key = demo_key(&log_path)?;
    looked_for.push(key.clone());

    // Receivers that keep a secret in their URL, as Slack's do: one down once, then failing
    // once, then taking the event; one that nothing listens for (its connection refused).
    let path_secret = format!("path{}", uuid::Uuid::new_v4().simple());
    let query_secret = format!("query{}", uuid::Uuid::new_v4().simple());
    let mut flaky = Receiver::start(vec![Step::Drop, Step::Answer(500)]).await?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let closed_port = closed.local_addr()?.port();
    drop(closed);
    looked_for.extend([path_secret.clone(), query_secret.clone()]);
    let http = reqwest::Client::new();
    let endpoints = format!("http://{address}/api/v1/webhooks/endpoints");
    let register = |url: String| {
        let (http, endpoints, key) = (http.clone(), endpoints.clone(), key.clone());
        async move {
            let created: serde_json::Value = http
                .post(&endpoints)
                .bearer_auth(&key)
                .json(&serde_json::json!({"url": url}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok((
                created["endpoint_id"].as_str().unwrap_or_default().to_string(),
                created["secret"].as_str().unwrap_or_default().to_string(),
            ))
        }
    };
    let (flaky_id, flaky_secret) = register(format!(
        "http://{}/services/T000/B000/{path_secret}?token={query_secret}",
        flaky.addr
    ))
    .await?;
    let (refused_id, refused_secret) = register(format!(
        "http://127.0.0.1:{closed_port}/services/T000/B000/{path_secret}?token={query_secret}"
    ))
    .await?;
    let rotated: serde_json::Value = http
        .post(format!("{endpoints}/{flaky_id}/rotate-secret"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let rotated_secret = rotated["secret"].as_str().unwrap_or_default().to_string();
    for secret in [&flaky_secret, &refused_secret, &rotated_secret] {
        assert!(secret.starts_with("whsec_"), "{secret}");
        looked_for.push(secret.clone());
    }

    // The export, stored in S3, and its link, signed by S3's rules.
    let (_, export) = finished_csv_export(&http, address, &key, PROMPTLY).await?;
    assert_eq!(export["status"], "done", "{export}");
    let link = export["download_url"].as_str().unwrap_or_default().to_string();
    assert!(link.starts_with(&s3.endpoint()), "the file is in S3: {link}");
    let signature = url::Url::parse(&link)?
        .query_pairs()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-amz-signature"))
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| anyhow::anyhow!("no signature in {link}"))?;
    looked_for.push(signature);
    assert_eq!(http.get(&link).send().await?.status(), 200);

    // The flaky receiver fails once and then takes the event, signed with the rotated secret.
    let failed = flaky.next().await?;
    let delivered = flaky.next().await?;
    verify(&rotated_secret, &delivered).map_err(|e| anyhow::anyhow!("not verified: {e:?}"))?;
    assert_eq!(failed.headers["webhook-id"], delivered.headers["webhook-id"]);
    // The refused one has failed at least twice; what the API says of it names the origin only.
    let deliveries = format!("{endpoints}/{refused_id}/deliveries");
    let error = tokio::time::timeout(PROMPTLY, async {
        loop {
            let listed: serde_json::Value = http
                .get(&deliveries)
                .bearer_auth(&key)
                .send()
                .await?
                .json()
                .await?;
            let delivery = &listed["items"][0];
            if delivery["attempts"].as_u64().unwrap_or(0) >= 2 {
                return anyhow::Ok(delivery["last_error"].as_str().unwrap_or_default().to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;
    assert!(
        error.starts_with(&format!("http://127.0.0.1:{closed_port}: ")),
        "{error}"
    );
    for secret in &looked_for {
        assert!(
            !error.contains(secret.as_str()),
            "a secret in the error shown: {error}"
        );
    }
    assert!(
        !error.contains("/services/"),
        "the URL's path in the error shown: {error}"
    );

    let output = stop_and_read_log(dev, &log_path).await?;
    let log_lines: Vec<&str> = output.lines().filter(|line| line.starts_with('{')).collect();
    assert!(
        log_lines
            .iter()
            .any(|line| line.contains("webhook: attempt failed")),
        "the failed attempts were logged:\n{output}"
    );
    for line in log_lines {
        for secret in &looked_for {
            assert!(!line.contains(secret.as_str()), "a secret in a log line: {line}");
        }
        assert!(
            !line.contains("/services/T000"),
            "a webhook URL's path in a log line: {line}"
        );
    }
    drop(s3);
    Ok(())
}
