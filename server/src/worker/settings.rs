//! The worker's settings: each flag, with every default stated once (`WorkerArgs::default`).

use std::time::Duration;

use clap::Args;
use exports_spec::webhook_url::UrlPolicy;
use exports_spec::webhooks::Retries;

use super::webhooks::DeliverySettings;

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs this process runs at once.
    #[arg(long, env = "EXPORTS_WORKER_CONCURRENCY", default_value_t = WorkerArgs::default().concurrency)]
    pub concurrency: usize,
    /// Attempts per export before it is `failed` (a crashed worker's attempt counts).
    #[arg(long, env = "EXPORTS_MAX_ATTEMPTS", default_value_t = WorkerArgs::default().max_attempts)]
    pub max_attempts: i32,
    /// Backoff before the first retry, doubled for each later one (with jitter), in ms.
    #[arg(long, env = "EXPORTS_RETRY_BACKOFF_MS", default_value_t = WorkerArgs::default().retry_backoff_ms)]
    pub retry_backoff_ms: u64,
    /// Time limit of one attempt, in seconds; past it the export is `failed`.
    #[arg(long, env = "EXPORTS_JOB_TIMEOUT_SECS", default_value_t = WorkerArgs::default().job_timeout_secs)]
    pub job_timeout_secs: u64,
    /// How long a job stays with a worker that stopped renewing it (crashed), in seconds.
    #[arg(long, env = "EXPORTS_LEASE_SECS", default_value_t = WorkerArgs::default().lease_secs)]
    pub lease_secs: u64,
    /// How often the sweeper runs (re-queueing lost jobs and due retries, deleting expired files).
    #[arg(long, env = "EXPORTS_SWEEP_INTERVAL_SECS", default_value_t = WorkerArgs::default().sweep_interval_secs)]
    pub sweep_interval_secs: u64,
    /// How long finished files are kept, in seconds.
    #[arg(long, env = "EXPORTS_FILE_TTL_SECS", default_value_t = WorkerArgs::default().file_ttl_secs)]
    pub file_ttl_secs: u64,
    /// Size of the upload's parts, in MiB (S3 needs at least 5).
    #[arg(long, env = "EXPORTS_UPLOAD_PART_MIB", default_value_t = WorkerArgs::default().upload_part_mib)]
    pub upload_part_mib: usize,
    /// Backoff after a webhook delivery's first failed attempt, doubled for each later one
    /// (with equal jitter), in ms.
    #[arg(long, env = "EXPORTS_WEBHOOK_BACKOFF_MS", default_value_t = WorkerArgs::default().webhook_backoff_ms)]
    pub webhook_backoff_ms: u64,
    /// The longest backoff between two attempts of a webhook delivery, in seconds.
    #[arg(long, env = "EXPORTS_WEBHOOK_MAX_BACKOFF_SECS", default_value_t = WorkerArgs::default().webhook_max_backoff_secs)]
    pub webhook_max_backoff_secs: u64,
    /// How long after its event a webhook delivery is still attempted, in seconds.
    #[arg(long, env = "EXPORTS_WEBHOOK_RETRY_FOR_SECS", default_value_t = WorkerArgs::default().webhook_retry_for_secs, value_parser = clap::value_parser!(u64).range(86400..))]
    pub webhook_retry_for_secs: u64,
    /// How long delivered and given-up webhook deliveries (each holding a snapshot of its
    /// export) are kept, in days; the sweeper deletes older ones.
    #[arg(long, env = "EXPORTS_WEBHOOK_DELIVERY_RETENTION_DAYS", default_value_t = WorkerArgs::default().webhook_delivery_retention_days, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_delivery_retention_days: u64,
    /// Webhook deliveries this process attempts at once.
    #[arg(long, env = "EXPORTS_WEBHOOK_CONCURRENCY", default_value_t = WorkerArgs::default().webhook_concurrency)]
    pub webhook_concurrency: usize,
    /// Webhook deliveries attempted at once for one endpoint, across the workers: a slow or
    /// failing endpoint holds at most this many of the attempts in flight.
    #[arg(long, env = "EXPORTS_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = WorkerArgs::default().webhook_endpoint_concurrency)]
    pub webhook_endpoint_concurrency: usize,
    /// How often an idle worker looks for due webhook deliveries, in ms.
    #[arg(long, env = "EXPORTS_WEBHOOK_POLL_MS", default_value_t = WorkerArgs::default().webhook_poll_ms)]
    pub webhook_poll_ms: u64,
    /// From `--webhooks-allow-private` (shared with the API).
    #[arg(skip)]
    pub webhook_urls: UrlPolicy,
    /// Seconds running exports have to finish after SIGTERM; those still running then are
    /// handed back to the queue for another worker (a second signal cuts it short).
    #[arg(long, env = "EXPORTS_JOB_GRACE_SECS", default_value_t = WorkerArgs::default().job_grace_secs)]
    pub job_grace_secs: u64,
    /// Take jobs first in, first out: no small lane first, no user deferred for another.
    /// Only for `cargo xtask bench fairness`, which compares the two.
    #[arg(long, env = "EXPORTS_WORKER_FIFO", hide = true)]
    pub fifo: bool,
    /// Fault injection for tests: every export holds once this many rows are written, until
    /// it is cancelled, interrupted or timed out (see `export_file::Progress`).
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub hold_after_rows: Option<u64>,
    /// Fault injection for tests: every export holds once this many of its upload's parts are
    /// completed and recorded as its checkpoint (on S3, for the files that keep checkpoints).
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    pub hold_after_parts: Option<u64>,
    /// Fault injection for tests: held exports go on once this says `true`.
    #[cfg(feature = "fault-injection")]
    #[arg(skip)]
    pub release_hold: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Every default of the worker, stated once: each flag's default is read from here.
impl Default for WorkerArgs {
    fn default() -> Self {
        Self {
            concurrency: 2,
            max_attempts: 4,
            retry_backoff_ms: 2000,
            job_timeout_secs: 600,
            lease_secs: 30,
            sweep_interval_secs: 5,
            file_ttl_secs: 24 * 3600,
            upload_part_mib: 8,
            webhook_backoff_ms: 5000,
            webhook_max_backoff_secs: 3600,
            webhook_retry_for_secs: 24 * 3600,
            webhook_delivery_retention_days: 30,
            webhook_concurrency: 512,
            webhook_endpoint_concurrency: 32,
            webhook_poll_ms: 200,
            webhook_urls: UrlPolicy::default(),
            // Under Kubernetes' default termination grace period of 30 s.
            job_grace_secs: 25,
            fifo: false,
            #[cfg(feature = "fault-injection")]
            hold_after_rows: None,
            #[cfg(feature = "fault-injection")]
            hold_after_parts: None,
            #[cfg(feature = "fault-injection")]
            release_hold: None,
        }
    }
}

impl WorkerArgs {
    pub(super) fn webhook_delivery(&self) -> DeliverySettings {
        DeliverySettings {
            policy: self.webhook_urls.clone(),
            retries: Retries {
                first_backoff: Duration::from_millis(self.webhook_backoff_ms),
                max_backoff: Duration::from_secs(self.webhook_max_backoff_secs),
                retry_for: Duration::from_secs(self.webhook_retry_for_secs),
            },
            concurrency: self.webhook_concurrency.max(1),
            per_endpoint: self.webhook_endpoint_concurrency.max(1),
            poll: Duration::from_millis(self.webhook_poll_ms.max(1)),
        }
    }

    pub(super) fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }

    /// A job is renewed this often, and so its progress is recorded this often.
    pub(super) fn heartbeat(&self) -> Duration {
        (self.lease() / 3).min(Duration::from_secs(1))
    }

    /// Backoff before attempt `attempt + 1` (`exports_spec::backoff`), so that exports failing
    /// together (a storage outage) do not retry together.
    pub(super) fn backoff(&self, attempt: i32) -> Duration {
        exports_spec::backoff::equal_jitter(
            Duration::from_millis(self.retry_backoff_ms),
            attempt.max(1) as u32,
            MAX_RETRY_BACKOFF,
        )
    }
}

/// The longest backoff between two attempts of an export.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5 * 60);
