//! Create, wait and download: every user into a file, as its name says: CSV (`.csv`), XLSX
//! (`.xlsx`) or JSON Lines (`.jsonl`), gzip-compressed for a name ending in `.gz`.
//!
//! Against the server `scripts/dev.sh` starts (it prints a demo key):
//!
//! ```sh
//! EXPORTS_API_KEY=exk_… cargo run -p exports-client --example export_users -- users.csv
//! ```
//!
//! `EXPORTS_URL` names another server (default `http://127.0.0.1:8080`).

use std::time::Duration;

use exports_client::types::{CreateUserExport, ExportCompression, ExportFormat};
use exports_client::Retries;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("EXPORTS_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key =
        std::env::var("EXPORTS_API_KEY").map_err(|_| "set EXPORTS_API_KEY (scripts/dev.sh prints one)")?;
    let path = std::env::args().nth(1).unwrap_or_else(|| "users.csv".into());
    let (name, compression) = match path.strip_suffix(".gz") {
        Some(name) => (name, ExportCompression::Gzip),
        None => (path.as_str(), ExportCompression::None),
    };
    let format = if name.ends_with(".xlsx") {
        ExportFormat::Xlsx
    } else if name.ends_with(".jsonl") {
        ExportFormat::Jsonl
    } else {
        ExportFormat::Csv
    };

    let client = exports_client::connect(&url, &key, Duration::from_secs(30))?;
    let request = CreateUserExport::new(format).with_compression(compression);
    let accepted = client.create_export(&request, Retries::default()).await?;
    eprintln!(
        "export {} accepted, done in about {} s",
        accepted.export_id, accepted.estimated_seconds
    );
    let export = client
        .wait_for_export(&accepted.export_id, Duration::from_secs(600))
        .await?;
    let mut file = tokio::fs::File::create(&path).await?;
    let mut shown = 0;
    let bytes = client
        .download_export_to(&export.export_id, &mut file, |written, total| {
            // A line per tenth of the file, or per MiB when the size is unknown.
            let step = total.map_or(1 << 20, |total| (total / 10).max(1));
            if written / step > shown {
                shown = written / step;
                eprintln!(
                    "{written} of {} bytes",
                    total.map_or("?".into(), |t| t.to_string())
                );
            }
        })
        .await?;
    println!("{path}: {bytes} bytes, {} users", export.progress.rows_written);
    Ok(())
}
