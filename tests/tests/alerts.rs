//! The Prometheus alerting rules in `deploy/prometheus/`: valid for promtool, firing as their
//! unit tests expect, and about metrics the service really exports.

use std::path::Path;
use std::process::Command;

use exports_tests::TestEnv;

fn promtool(args: &[&str]) -> String {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let output = Command::new("promtool")
        .args(args)
        .current_dir(&directory)
        .output()
        .expect("promtool runs (scripts/tools.sh installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    assert!(promtool(&["check", "rules", "alerts.yml"]).contains("SUCCESS: 2 rules found"));
    assert!(promtool(&["test", "rules", "alerts.test.yml"]).contains("SUCCESS"));
}

#[tokio::test]
async fn the_rules_use_metrics_the_service_exports() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let exposed = env.raw().get(env.url("/metrics")).send().await?.text().await?;
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml"),
    )?;
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("exports_") && word.len() > "exports_".len())
        .collect();
    assert!(used.contains("exports_queue_depth"), "{used:?}");
    for metric in used {
        assert!(
            exposed
                .lines()
                .any(|line| line.starts_with(&format!("# TYPE {metric} "))),
            "{metric} is not exported:\n{exposed}"
        );
    }
    env.finish().await
}

#[tokio::test]
async fn a_workers_own_metrics_address_serves_them() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let metrics = std::sync::Arc::new(exports_server::metrics::Metrics::new());
    metrics.job_succeeded(
        exports_server::model::ExportFormat::Csv,
        12,
        std::time::Duration::from_millis(300),
    );
    let metrics_listener = exports_server::metrics::serve("127.0.0.1:0".parse()?, metrics).await?;
    let addr = metrics_listener.local_addr();
    let response = reqwest::get(format!("http://{addr}/metrics")).await?;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()?
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await?;
    assert!(
        text.contains("exports_jobs_succeeded_total{format=\"csv\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("exports_rows_written_total{format=\"csv\"} 12"),
        "{text}"
    );
    assert!(text.contains("exports_queue_depth 0"), "{text}");
    assert_eq!(reqwest::get(format!("http://{addr}/other")).await?.status(), 404);
    env.finish().await
}
