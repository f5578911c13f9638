//! The binary as an operator uses it: migrate, issue and revoke keys, serve, stop on SIGTERM.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
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

/// `exports-server serve` on a port it picks itself (`--listen 127.0.0.1:0`), so no other
/// process can take the port between a choice and the bind; killed however the test ends.
struct Server {
    process: Child,
    /// What it logged, whole once its stdout closes.
    log: Option<JoinHandle<String>>,
    /// Its file storage (the signing key of local links goes there), removed on drop.
    _storage: tempfile::TempDir,
}

impl Server {
    /// Starts it and waits for the log line that says where it listens.
    fn start(database_url: &str, redis_prefix: &str) -> (Self, SocketAddr) {
        let storage = tempfile::tempdir().unwrap();
        let mut process = Command::new(BINARY)
            .args(["--database-url", database_url, "serve", "--listen", "127.0.0.1:0"])
            .args(["--redis-prefix", redis_prefix])
            .arg("--storage-dir")
            .arg(storage.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (found, listening) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = api_listening(&line) {
                    let _ = found.send(address);
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        let server = Self {
            process,
            log: Some(log),
            _storage: storage,
        };
        let address = listening
            .recv_timeout(Duration::from_secs(20))
            .expect("the server did not say where it listens");
        (server, address)
    }

    /// Everything it logged; waits for it to exit.
    fn log(&mut self) -> String {
        self.log.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The public address in the server's `"message":"API listening"` line (tracing's JSON).
fn api_listening(line: &str) -> Option<SocketAddr> {
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    if record["message"] != "API listening" {
        return None;
    }
    record["local_addr"].as_str()?.parse().ok()
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

    let listed = run(&url, &["keys", "list", "--email", "ops@example.com"]);
    assert!(listed.contains(&key_id), "{listed}");
    assert!(!listed.contains(&key), "keys list shows no secret: {listed}");
    assert!(listed.contains("never"), "not used yet, and no expiry: {listed}");

    let prefix = format!("exports:test:{}:", uuid::Uuid::new_v4().simple());
    let (mut server, address) = Server::start(&url, &prefix);
    let base = format!("http://{address}");
    let http = reqwest::Client::new();

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
    let pid = server.process.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.process.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let logs = server.log();
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
