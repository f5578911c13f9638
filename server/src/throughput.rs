//! How fast the worker writes rows, per format: measured from recent finished exports, with
//! figures benchmarked on this project's reference machine until there are any. Estimates
//! (`estimated_seconds`, remaining time, `Retry-After`) derive from it.

use std::time::Duration;

use crate::model::ExportFormat;

/// Rows per second before any export has finished: `cargo xtask bench export` on the 2-core
/// development machine (medians 873,000 and 229,000 end to end), rounded down.
const DEFAULT_CSV_ROWS_PER_SECOND: f64 = 800_000.0;
const DEFAULT_XLSX_ROWS_PER_SECOND: f64 = 200_000.0;
/// JSON Lines is written like CSV, row by row on the worker's task: CSV's figure until measured.
const DEFAULT_JSONL_ROWS_PER_SECOND: f64 = DEFAULT_CSV_ROWS_PER_SECOND;
/// Measurements are refreshed at most this often, so estimates cost no query per request.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Queueing and start-up time of a job, on top of writing its rows.
const JOB_OVERHEAD_SECONDS: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub csv: f64,
    pub xlsx: f64,
    pub jsonl: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            csv: DEFAULT_CSV_ROWS_PER_SECOND,
            xlsx: DEFAULT_XLSX_ROWS_PER_SECOND,
            jsonl: DEFAULT_JSONL_ROWS_PER_SECOND,
        }
    }
}

impl Rates {
    pub fn rows_per_second(&self, format: ExportFormat) -> f64 {
        match format {
            ExportFormat::Csv => self.csv,
            ExportFormat::Xlsx => self.xlsx,
            ExportFormat::Jsonl => self.jsonl,
        }
    }

    /// Seconds to write `rows` rows in `format`, start-up included.
    pub fn seconds_for(&self, format: ExportFormat, rows: u64) -> u64 {
        (rows as f64 / self.rows_per_second(format)).ceil() as u64 + JOB_OVERHEAD_SECONDS
    }
}

/// The measured rates, refreshed at most every `REFRESH_EVERY`.
pub struct Throughput {
    measured: moka::future::Cache<(), Rates>,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            measured: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(REFRESH_EVERY)
                .build(),
        }
    }
}

impl Throughput {
    pub async fn rates(&self, client: &tokio_postgres::Client) -> Rates {
        // One measurement at a time; a failed one is not kept, so the next request measures.
        let measured = self.measured.try_get_with((), measure(client)).await;
        measured.unwrap_or_else(|error| {
            tracing::warn!(%error, "measuring export throughput failed; using the reference figures");
            Rates::default()
        })
    }
}

/// Rows per second of the exports finished in the last day, per format.
async fn measure(client: &tokio_postgres::Client) -> crate::db::Result<Rates> {
    let mut rates = Rates::default();
    for (format, rate) in crate::db::exports::recent_throughput(client).await? {
        match format {
            ExportFormat::Csv if rate > 0.0 => rates.csv = rate,
            ExportFormat::Xlsx if rate > 0.0 => rates.xlsx = rate,
            ExportFormat::Jsonl if rate > 0.0 => rates.jsonl = rate,
            _ => {}
        }
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_grow_with_rows_and_differ_by_format() {
        let rates = Rates {
            csv: 1000.0,
            xlsx: 250.0,
            jsonl: 1000.0,
        };
        assert_eq!(rates.seconds_for(ExportFormat::Csv, 0), 1);
        assert_eq!(rates.seconds_for(ExportFormat::Csv, 1000), 2);
        assert_eq!(rates.seconds_for(ExportFormat::Csv, 1001), 3);
        assert_eq!(rates.seconds_for(ExportFormat::Xlsx, 1000), 5);
    }
}
