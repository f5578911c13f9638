//! `exports-server` itself, built inside this package so that its tests can start worker
//! processes (`CARGO_BIN_EXE_exports-server-under-test`) and kill them.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    exports_server::startup::main().await
}
