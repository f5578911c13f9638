//! The binary as an operator uses it: migrate, issue and revoke keys, serve, stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_exports-server");

fn postgres_url(database: &str) -> String {
    let base = std::env::var("EXPORTS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    format!("{base}/{database}")
}

fn run(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(BINARY)
        .arg("--database-url")
        .arg(database_url)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {output}"))
}

/// Drops the test database however the test ends.
struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-q", &postgres_url("postgres"), "-c"])
            .arg(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.0))
            .status();
    }
}

#[tokio::test]
async fn operator_workflow() {
    let database = Database(format!("exports_test_cli_{}", uuid::Uuid::new_v4().simple()));
    let url = postgres_url(&database.0);
    run(&url, &["migrate"]);
    run(&url, &["migrate"]); // idempotent

    let issued = run(
        &url,
        &[
            "keys",
            "issue",
            "--email",
            "ops@example.com",
            "--scope",
            "exports:read",
        ],
    );
    let (key_id, key) = (
        field(&issued, "key id").to_string(),
        field(&issued, "key").to_string(),
    );
    assert_eq!(field(&issued, "scopes"), "exports:read");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefix = format!("exports:test:{}:", uuid::Uuid::new_v4().simple());
    let mut server = Command::new(BINARY)
        .args([
            "--database-url",
            &url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--redis-prefix", &prefix])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/health/ready")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let list = format!("{base}/api/v1/exports/users");
    assert_eq!(
        http.get(&list).bearer_auth(&key).send().await.unwrap().status(),
        200
    );
    let create = http
        .post(&list)
        .bearer_auth(&key)
        .json(&serde_json::json!({"format": "csv"}));
    assert_eq!(
        create.send().await.unwrap().status(),
        403,
        "a read-only key cannot create"
    );

    run(&url, &["keys", "revoke", &key_id]);
    assert_eq!(
        http.get(&list).bearer_auth(&key).send().await.unwrap().status(),
        401
    );
    let again = Command::new(BINARY)
        .args(["--database-url", &url, "keys", "revoke", &key_id])
        .output()
        .unwrap();
    assert!(!again.status.success(), "revoking twice is an error");

    // SIGTERM: a clean exit, after saying so.
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        logs.contains("\"operation\":\"listExports\""),
        "request lines are logged: {logs}"
    );

    let undone = Command::new(BINARY)
        .args(["--database-url", &url, "migrate", "--rollback-to", "0"])
        .status();
    assert!(undone.unwrap().success());
}
