//! The client works outside this workspace, over HTTPS (issue 11, item 1). Inside the
//! workspace other crates turn reqwest's TLS on; a crate of its own, depending on
//! `exports-client` alone, shows what an embedding service gets. It is built (offline, with
//! the workspace's Cargo.lock) and run against the API behind a TLS front whose certificate
//! comes from a CA the test makes, trusted the way an operator would: `SSL_CERT_FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use exports_tests::tls::TlsFront;
use exports_tests::TestEnv;

const MANIFEST: &str = r#"[package]
name = "exports-client-outside"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
exports-client = { path = "CLIENT" }
tokio = { version = "1", features = ["macros", "rt"] }

[workspace]
"#;

const PROGRAM: &str = r#"
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let Err(error) = run().await else { return std::process::ExitCode::SUCCESS };
    let mut cause: Option<&dyn std::error::Error> = Some(error.as_ref());
    while let Some(error) = cause {
        eprintln!("{error}");
        cause = error.source();
    }
    std::process::ExitCode::FAILURE
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("EXPORTS_URL")?;
    let key = std::env::var("EXPORTS_KEY")?;
    let client = exports_client::connect(&url, &key, std::time::Duration::from_secs(30))?;
    let request = exports_client::types::CreateUserExport {
        format: exports_client::types::ExportFormat::Csv,
        filters: None,
        columns: None,
        compression: None,
    };
    let accepted = client.create_user_export(None, &request).await?.into_inner();
    let export = client.get_export(&accepted.export_id).await?.into_inner();
    println!("{}", export.export_id);
    Ok(())
}
"#;

/// Builds the crate in `directory` and returns its binary. Its build directory sits beside
/// the workspace's (outside the source tree, reused by later runs), or in `directory`.
fn build_outside_crate(directory: &Path) -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace");
    let client = workspace.join("client");
    std::fs::write(
        directory.join("Cargo.toml"),
        MANIFEST.replace("CLIENT", &client.display().to_string()),
    )?;
    std::fs::copy(workspace.join("Cargo.lock"), directory.join("Cargo.lock"))?;
    std::fs::create_dir(directory.join("src"))?;
    std::fs::write(directory.join("src/main.rs"), PROGRAM)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| PathBuf::from(dir).join("outside-workspace"))
        .unwrap_or_else(|| directory.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(directory.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()?;
    anyhow::ensure!(
        built.status.success(),
        "building a crate that depends on exports-client alone failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    Ok(target.join("debug/exports-client-outside"))
}

#[tokio::test]
async fn a_crate_outside_the_workspace_reaches_the_api_over_https() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let user = env.writer().await?;
    let front = TlsFront::start(env.server_addr).await?;
    let directory = tempfile::tempdir()?;
    let binary = tokio::task::spawn_blocking({
        let directory = directory.path().to_path_buf();
        move || build_outside_crate(&directory)
    })
    .await??;
    // A process of its own, waited for without blocking the runtime the TLS front runs on.
    let run = |ca_file: Option<&Path>| {
        let mut command = tokio::process::Command::new(&binary);
        command
            .env_clear()
            .env("EXPORTS_URL", front.url())
            .env("EXPORTS_KEY", &user.key);
        if let Some(ca_file) = ca_file {
            command.env("SSL_CERT_FILE", ca_file);
        }
        command.output()
    };

    let trusted = run(Some(&front.certificates.ca_file)).await?;
    let said = String::from_utf8_lossy(&trusted.stderr);
    assert!(trusted.status.success(), "{said}");
    let export_id = String::from_utf8(trusted.stdout)?.trim().to_string();
    let rows = env
        .count(&format!("SELECT count(*) FROM exports WHERE id = '{export_id}'"))
        .await?;
    assert_eq!(
        rows, 1,
        "the export {export_id} was created through the HTTPS front"
    );

    // The front's certificate is checked: without its CA the client refuses it.
    let untrusted = run(None).await?;
    assert!(!untrusted.status.success());
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        said.contains("certificate") || said.contains("UnknownIssuer"),
        "{said}"
    );
    env.finish().await
}
