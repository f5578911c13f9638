//! Prometheus metrics of the export jobs, one registry per process (per test in tests), in the
//! text exposition format at `/metrics`. The API serves them, and so does each worker process
//! on its own `--metrics-listen` address; `dev` runs both in one process and one registry.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
    api_key_lookups: IntCounter,
    webhooks: IntCounterVec,
    webhook_delay: prometheus::Histogram,
    pub webhooks_waiting: IntGauge,
}

/// How often a process that serves metrics counts the pending exports: a scrape only reads the
/// last count, so scrapes, which need no key, never reach PostgreSQL.
pub const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(15);

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
        let api_key_lookups = IntCounter::new(
            "exports_api_key_lookups_total",
            "API keys looked up in PostgreSQL (a key found unknown is not looked up again for a minute).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(api_key_lookups.clone()))
            .expect("registered once");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "exports_webhook_deliveries_total",
                "Webhook attempts by outcome: delivered, failed (to be tried again) and given_up.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhooks.clone()))
            .expect("registered once");
        for outcome in ["delivered", "failed", "given_up"] {
            webhooks.with_label_values(&[outcome]);
        }
        let webhook_delay = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "exports_webhook_delay_seconds",
                "Time from an export's status change to the delivery of its webhook event.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0, 3600.0, 86400.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhook_delay.clone()))
            .expect("registered once");
        let webhooks_waiting = IntGauge::new(
            "exports_webhooks_waiting",
            "Webhook events not yet delivered nor given up, across the deployment (counted by the workers' sweepers).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhooks_waiting.clone()))
            .expect("registered once");
        // Every format appears from the start, so rates and alerts see zeros, not gaps.
        for format in ExportFormat::NAMES {
            for counter in [&succeeded, &failed, &retried, &rows] {
                counter.with_label_values(&[*format]);
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
            api_key_lookups,
            webhooks,
            webhook_delay,
            webhooks_waiting,
        }
    }

    pub fn webhook_delivered(&self, delay: Duration) {
        self.webhooks.with_label_values(&["delivered"]).inc();
        self.webhook_delay.observe(delay.as_secs_f64());
    }

    pub fn webhook_attempt_failed(&self) {
        self.webhooks.with_label_values(&["failed"]).inc();
    }

    pub fn webhook_given_up(&self) {
        self.webhooks.with_label_values(&["given_up"]).inc();
    }

    pub fn api_key_looked_up(&self) {
        self.api_key_lookups.inc();
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

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes to memory");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Counts the pending exports in PostgreSQL (the source of truth, which outlives a wiped
    /// Redis) for the queue-depth gauge.
    pub async fn refresh_queue_depth(&self, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        self.queue_depth
            .set(crate::db::exports::count_pending(&client).await?);
        Ok(())
    }

    /// Refreshes the queue depth every `QUEUE_DEPTH_EVERY` until the task is aborted.
    pub fn keep_queue_depth_fresh(
        self: std::sync::Arc<Self>,
        pool: deadpool_postgres::Pool,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(QUEUE_DEPTH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = self.refresh_queue_depth(&pool).await {
                    tracing::warn!(error = %format!("{error:#}"), "queue depth not measured");
                }
            }
        })
    }
}

/// Serves `GET /metrics` on `listen`, apart from the API (a worker has no API of its own, and
/// an operator may keep the API's metrics off its public address); anything else is 404.
pub async fn serve(
    listen: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> anyhow::Result<exports_listener::Serving> {
    use http_body_util::Full;

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let limits = exports_listener::Limits::default();
    let serving = exports_listener::serve(listener, limits, move |request, _peer| {
        let response = if request.uri().path() == "/metrics" {
            http::Response::builder()
                .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(Full::new(bytes::Bytes::from(metrics.render())))
        } else {
            http::Response::builder()
                .status(http::StatusCode::NOT_FOUND)
                .body(Full::new(bytes::Bytes::from_static(b"not found\n")))
        };
        std::future::ready(response.expect("a valid response"))
    })?;
    tracing::info!(local_addr = %serving.local_addr(), "metrics listening");
    Ok(serving)
}
