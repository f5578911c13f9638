//! Prometheus metrics of the export jobs, one registry per process (per test in tests), in the
//! text exposition format at `/metrics`. The API serves them, and so does each worker process
//! on its own `--metrics-listen` address; `dev` runs both in one process and one registry.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::model::ExportFormat;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    succeeded: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    rows: IntCounterVec,
    duration: HistogramVec,
    pub in_flight: IntGauge,
    queue_depth: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let by_format = |name: &str, help: &str| {
            let counter = IntCounterVec::new(Opts::new(name, help), &["format"]).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let succeeded = by_format(
            "exports_jobs_succeeded_total",
            "Export jobs that finished with a file.",
        );
        let failed = by_format(
            "exports_jobs_failed_total",
            "Export jobs that failed for good (retries exhausted, or over the time limit).",
        );
        let retried = by_format(
            "exports_job_retries_total",
            "Failed attempts of export jobs that were scheduled to run again.",
        );
        let rows = by_format(
            "exports_rows_written_total",
            "Rows written into finished export files.",
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "exports_job_duration_seconds",
                "Time from a job's start to its file being stored, for successful attempts.",
            )
            .buckets(vec![
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["format"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        let in_flight = IntGauge::new(
            "exports_jobs_in_flight",
            "Export jobs this process is running now.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("registered once");
        let queue_depth = IntGauge::new(
            "exports_queue_depth",
            "Exports waiting for a worker (status pending), across the deployment.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(queue_depth.clone()))
            .expect("registered once");
        // Every format appears from the start, so rates and alerts see zeros, not gaps.
        for format in [ExportFormat::Csv, ExportFormat::Xlsx] {
            for counter in [&succeeded, &failed, &retried, &rows] {
                counter.with_label_values(&[format.as_str()]);
            }
        }
        Self {
            registry,
            succeeded,
            failed,
            retried,
            rows,
            duration,
            in_flight,
            queue_depth,
        }
    }

    pub fn job_succeeded(&self, format: ExportFormat, rows: u64, took: Duration) {
        self.succeeded.with_label_values(&[format.as_str()]).inc();
        self.rows.with_label_values(&[format.as_str()]).inc_by(rows);
        self.duration
            .with_label_values(&[format.as_str()])
            .observe(took.as_secs_f64());
    }

    pub fn job_failed(&self, format: ExportFormat) {
        self.failed.with_label_values(&[format.as_str()]).inc();
    }

    pub fn job_retried(&self, format: ExportFormat) {
        self.retried.with_label_values(&[format.as_str()]).inc();
    }

    /// The text exposition, with the queue depth read from PostgreSQL (the source of truth,
    /// which outlives a wiped Redis) when it can be.
    pub async fn render(&self, pool: &deadpool_postgres::Pool) -> String {
        match queue_depth(pool).await {
            Ok(depth) => self.queue_depth.set(depth),
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "queue depth not measured"),
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes to memory");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

async fn queue_depth(pool: &deadpool_postgres::Pool) -> anyhow::Result<i64> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT count(*) FROM exports WHERE status = 'pending'", &[])
        .await?;
    Ok(row.get(0))
}

/// Serves `GET /metrics` on `listen` (a worker has no API of its own); anything else is 404.
pub async fn serve(
    listen: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
    pool: deadpool_postgres::Pool,
) -> anyhow::Result<std::net::SocketAddr> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, "metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, pool) = (metrics.clone(), pool.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (metrics, pool) = (metrics.clone(), pool.clone());
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            http::Response::builder()
                                .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                                .body(Full::new(bytes::Bytes::from(metrics.render(&pool).await)))
                        } else {
                            http::Response::builder()
                                .status(http::StatusCode::NOT_FOUND)
                                .body(Full::new(bytes::Bytes::from_static(b"not found\n")))
                        };
                        response
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local_addr)
}
