#[tokio::main]
async fn main() -> anyhow::Result<()> {
    exports_server::cli::main().await
}
