//! The server serves its contract (issue 12, item 4): `/openapi.yaml` exactly as written,
//! `/openapi.json` the same document, `/docs` the reference page the mock serves too, all
//! without a key.

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
