//! The server serves its contract (issue 12, item 4): `/openapi.yaml` exactly as written,
//! `/openapi.json` the same document, `/docs` the reference page the mock serves too, all
//! without a key; and the page loads in a real browser with no network.

use exports_spec::{Spec, OPENAPI_YAML};
use exports_tests::TestEnv;

#[tokio::test]
async fn the_server_serves_its_contract_without_a_key() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let http = env.raw();
    let yaml = http.get(env.url("/openapi.yaml")).send().await?;
    assert_eq!(yaml.status(), 200);
    assert_eq!(yaml.headers()["content-type"], "application/yaml");
    assert_eq!(
        yaml.text().await?,
        OPENAPI_YAML,
        "the document exactly as written"
    );

    let json: serde_json::Value = http.get(env.url("/openapi.json")).send().await?.json().await?;
    assert_eq!(&json, Spec::bundled().document());

    let docs = http.get(env.url("/docs")).send().await?;
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()["content-type"].to_str()?.starts_with("text/html"));
    let page = docs.text().await?;
    assert_eq!(
        page,
        String::from_utf8(Spec::bundled().served("/docs").unwrap().1)?,
        "the mock's page"
    );
    for operation in Spec::bundled().operations() {
        assert!(page.contains(operation.id), "{} is on the page", operation.id);
    }
    env.finish().await
}

/// The reference page in headless Chromium (Debian's, which scripts/tools.sh installs), with
/// every host name unresolvable: it loads, logs no console message or failed load, and the
/// browser's DOM holds every operation and schema.
#[tokio::test]
async fn the_reference_page_loads_offline_in_a_browser() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let page = env.raw().get(env.url("/docs")).send().await?.text().await?;
    let directory = tempfile::tempdir()?;
    let file = directory.path().join("docs.html");
    std::fs::write(&file, page)?;
    let browser = tokio::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args([
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            directory.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), browser)
        .await?
        .map_err(|error| anyhow::anyhow!("running chromium (scripts/tools.sh installs it): {error}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    for line in log.lines() {
        assert!(
            !line.contains("CONSOLE") && !line.contains("Failed to load") && !line.contains("net::ERR_"),
            "the page logged: {line}"
        );
    }
    let dom = String::from_utf8(output.stdout)?;
    let spec = Spec::bundled();
    for operation in spec.operations() {
        assert!(
            dom.contains(&format!("id=\"{}\"", operation.id)),
            "{} is in the page",
            operation.id
        );
    }
    for (name, _) in spec.document()["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert!(
            dom.contains(&format!("id=\"schema-{name}\"")),
            "schema {name} is in the page"
        );
    }
    assert!(
        dom.contains("<h2>Authentication</h2>"),
        "the Markdown is rendered"
    );
    env.finish().await
}
