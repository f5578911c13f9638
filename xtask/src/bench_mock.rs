//! `cargo xtask bench mock`: requests/s, p50/p99 and peak RSS of the mock server for a static
//! GET and a validated POST under concurrent connections, and the same load against Prism
//! (Stoplight's Node mock server, installed from the npm registry into ~/.cache/exports/prism)
//! on the same spec, for the ratio; and the static GET against a bare hyper handler
//! (`mock-server/examples/bare_handler.rs`, release, as the mock), the limit a mock can
//! approach, for `mock_vs_bare`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::bench::{measure, unexpected_answers, wait_until_ready, IdempotencyKeys, Scenario, CREATE_BODY};
use exports_tests::ChildProcess;

pub struct MockBenchOptions {
    pub connections: usize,
    pub seconds: u64,
}

const PRISM_VERSION: &str = "5.16.0";

fn scenarios() -> [Scenario; 2] {
    let key = vec!["exk_benchmark".to_string()];
    [
        Scenario {
            name: "static_get",
            target: None,
            method: http::Method::GET,
            path: "/health/live".into(),
            body: None,
            expect: 200,
            keys: key.clone(),
            idempotency: IdempotencyKeys::None,
        },
        Scenario {
            name: "validated_post",
            target: None,
            method: http::Method::POST,
            path: "/api/v1/exports/users".into(),
            body: Some(CREATE_BODY),
            expect: 202,
            keys: key,
            idempotency: IdempotencyKeys::None,
        },
    ]
}

/// The peak resident set of a process, in MiB (Linux `VmHWM`).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// The line the mock logs once listening (JSON, through tracing).
fn mock_listening(line: &str) -> Option<SocketAddr> {
    let record: Value = serde_json::from_str(line).ok()?;
    if record["message"] != "mock server listening" {
        return None;
    }
    record["address"].as_str()?.parse().ok()
}

/// The line the bare handler prints once bound: `listening on 127.0.0.1:41234`.
fn bare_listening(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix("listening on ")?.parse().ok()
}

/// The line Prism prints once listening: `… Prism is listening on http://127.0.0.1:41691`
/// (with `--port 0`, the port it bound).
fn prism_listening(line: &str) -> Option<SocketAddr> {
    let (_, url) = line.split_once("Prism is listening on http://")?;
    url.split_whitespace().next()?.trim_end_matches('/').parse().ok()
}

/// Prism's launcher, installed on first use; `None` (and why) when it cannot be had.
fn prism(cache: &Path) -> Result<PathBuf> {
    let launcher = cache.join("node_modules/.bin/prism");
    if !launcher.exists() {
        println!(
            "installing Prism {PRISM_VERSION} from the npm registry into {} ...",
            cache.display()
        );
        std::fs::create_dir_all(cache)?;
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(cache)
            .arg(format!("@stoplight/prism-cli@{PRISM_VERSION}"))
            .stdout(Stdio::null())
            .status()
            .context("running npm")?;
        anyhow::ensure!(
            status.success() && launcher.exists(),
            "npm could not install Prism"
        );
    }
    Ok(launcher)
}

/// Fails (after the figures) when any request to the mock got another status than expected;
/// Prism's unexpected answers are only reported.
pub fn run(root: &Path, options: MockBenchOptions) -> Result<ExitCode> {
    println!("building the release mock server ...");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "exports-mock",
            "--bins",
            "--example",
            "bare_handler",
        ])
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), "building exports-mock failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let spec = root.join("spec/openapi.yaml");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!(
            "{} connections, {} s per operation",
            options.connections, options.seconds
        );
        let (mock, addr) = ChildProcess::start_listening(
            Command::new(target.join("release/exports-mock"))
                .arg("--spec")
                .arg(&spec)
                .args(["--port", "0"]),
            "exports-mock",
            mock_listening,
        )?;
        wait_until_ready(addr, "/health/live", 10).await?;
        let mut ours = measure(addr, &scenarios(), options.connections, options.seconds, "mock").await?;
        let unexpected = unexpected_answers(&ours);
        let rss = peak_rss_mib(mock.0.id());
        println!(
            "  mock peak RSS: {} MiB",
            rss.map_or("unknown".into(), |r| r.to_string())
        );
        ours.insert("peak_rss_mib".into(), json!(rss));
        drop(mock);

        let (bare, addr) = ChildProcess::start_listening(
            Command::new(target.join("release/examples/bare_handler")).args(["--port", "0"]),
            "the bare handler",
            bare_listening,
        )?;
        let static_get = scenarios().into_iter().take(1).collect::<Vec<_>>();
        let bare_figures = measure(addr, &static_get, options.connections, options.seconds, "bare").await?;
        drop(bare);

        let cache = std::env::var("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/exports/prism");
        let theirs = match prism(&cache) {
            Err(error) => {
                println!("Prism unavailable: {error:#}");
                None
            }
            Ok(launcher) => {
                let (prism, addr) = ChildProcess::start_listening(
                    Command::new(launcher)
                        .args(["mock", "--host", "127.0.0.1", "--port", "0"])
                        .arg(&spec)
                        .stderr(Stdio::null()),
                    "Prism",
                    prism_listening,
                )?;
                wait_until_ready(addr, "/health/live", 60).await?;
                let figures =
                    measure(addr, &scenarios(), options.connections, options.seconds, "prism").await?;
                drop(prism);
                Some(figures)
            }
        };
        let ratio = |name: &str| -> Value {
            let rate =
                |figures: &serde_json::Map<String, Value>| figures[name]["requests_per_second"].as_f64();
            match (rate(&ours), theirs.as_ref().and_then(rate)) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => json!((ours / theirs * 10.0).round() / 10.0),
                _ => Value::Null,
            }
        };
        let static_rate =
            |figures: &serde_json::Map<String, Value>| figures["static_get"]["requests_per_second"].as_f64();
        let mock_vs_bare = match (static_rate(&ours), static_rate(&bare_figures)) {
            (Some(ours), Some(bare)) if bare > 0.0 => json!((ours / bare * 100.0).round() / 100.0),
            _ => Value::Null,
        };
        println!("static GET: the mock at {mock_vs_bare} of the bare handler");
        let summary = json!({
            "connections": options.connections,
            "seconds": options.seconds,
            "mock": ours,
            "bare": bare_figures,
            "mock_vs_bare": mock_vs_bare,
            "prism": theirs,
            "ratio_to_prism": {"static_get": ratio("static_get"), "validated_post": ratio("validated_post")},
        });
        println!(
            "ratio to Prism: static GET {}x, validated POST {}x",
            summary["ratio_to_prism"]["static_get"], summary["ratio_to_prism"]["validated_post"]
        );
        println!("{summary}");
        Ok(if unexpected == 0 {
            ExitCode::SUCCESS
        } else {
            eprintln!("error: {unexpected} requests to the mock got an unexpected answer");
            ExitCode::FAILURE
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listening_lines_give_the_bound_addresses() {
        let prism = "[8:20:11 AM] › [CLI] ▶  start     Prism is listening on http://127.0.0.1:41691\n";
        assert_eq!(
            super::prism_listening(prism),
            Some("127.0.0.1:41691".parse().unwrap())
        );
        let mock = r#"{"timestamp":"2026-11-24T08:50:00Z","level":"INFO","message":"mock server listening","address":"127.0.0.1:40123","spec":"spec/openapi.yaml"}"#;
        assert_eq!(
            super::mock_listening(mock),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            super::mock_listening(r#"{"message":"request","address":"127.0.0.1:1"}"#),
            None
        );
        assert_eq!(
            super::bare_listening("listening on 127.0.0.1:41234\n"),
            Some("127.0.0.1:41234".parse().unwrap())
        );
    }
}
