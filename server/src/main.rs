#[tokio::main]
async fn main() -> anyhow::Result<()> {
    exports_server::startup::main().await
}
