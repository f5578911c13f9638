//! Redis: the connection pool and the job streams. A job is one stream entry naming an export
//! row; the row in PostgreSQL stays the source of truth.
//!
//! Jobs wait in one of two lanes, each a stream: exports of at most `SMALL_EXPORT_ROWS`
//! matching users (the create's count) in the small lane, the others in the bulk lane. A
//! worker with a free slot takes the small lane's oldest job before the bulk lane's, so a
//! small export waits for a slot, never behind a queue of big ones.

use anyhow::{ensure, Context, Result};
use clap::Args;
use fred::prelude::*;
use fred::types::config::TlsConnector;
use fred::types::streams::{XReadResponse, XReadValue, XID};
use fred::types::Builder;
use fred::types::{Expiration, SetOptions, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

use crate::tls;

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`rediss://` for TLS); one with a password belongs in the environment.
    #[arg(
        long,
        env = "EXPORTS_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Prefix of every Redis key this deployment uses.
    #[arg(long, env = "EXPORTS_REDIS_PREFIX", default_value = "exports:")]
    pub redis_prefix: String,
    #[arg(long, env = "EXPORTS_REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,
    /// PEM file of CA certificates trusted, beside the system's, for Redis's certificate
    /// (with a `rediss://` URL).
    #[arg(long, env = "EXPORTS_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    pub fn redis(&self) -> anyhow::Result<Redis> {
        Redis::new(&self.redis_url, self.redis_ca_file.as_deref())
    }
}

/// One Redis server: its connection settings, with a verifying TLS connector for `rediss://`.
#[derive(Clone)]
pub struct Redis {
    config: Config,
}

impl Redis {
    /// Reads a Redis URL. `rediss://` verifies the server's certificate and host name against
    /// the system's CAs and `ca_file`; fred would build its own TLS settings (system CAs
    /// only), so it is given the URL without the `s` and our settings.
    pub fn new(redis_url: &str, ca_file: Option<&Path>) -> Result<Self> {
        let plain_url = ["rediss", "valkeys"]
            .into_iter()
            .find(|scheme| redis_url.starts_with(scheme))
            .map(|scheme| redis_url.replacen(scheme, &scheme[..scheme.len() - 1], 1));
        let mut config =
            Config::from_url(plain_url.as_deref().unwrap_or(redis_url)).context("parsing the Redis URL")?;
        if plain_url.is_some() {
            config.tls = Some(TlsConnector::from(tls::client_config("Redis", ca_file)?).into());
        } else {
            ensure!(
                ca_file.is_none(),
                "a Redis CA file is given but the Redis URL does not ask for TLS (use rediss://)"
            );
            for server in config.server.hosts() {
                if !tls::is_loopback(&server.host.to_string()) {
                    tracing::warn!(host = %server.host, "Redis is reached without TLS; use a rediss:// URL");
                }
            }
        }
        Ok(Redis { config })
    }

    /// Connected now, or why not (tools and tests).
    pub async fn pool(&self, pool_size: usize) -> Result<Pool> {
        let pool = self.builder(Duration::from_secs(2), true).build_pool(pool_size)?;
        pool.init().await.context("connecting to Redis")?;
        Ok(pool)
    }

    /// What the service runs on: connected in the background, so that a process started
    /// while Redis is down runs, its commands failing within their timeout, until Redis
    /// answers (`Dependencies::report_unreachable` says so once, in the log).
    pub fn pool_connecting(&self, pool_size: usize) -> Result<Pool> {
        let pool = self
            .builder(Duration::from_secs(2), false)
            .build_pool(pool_size)?;
        pool.connect();
        Ok(pool)
    }

    /// A connection of its own, for blocking reads (which would hold a pooled one), connected
    /// in the background as `pool_connecting`'s are, or now.
    pub async fn dedicated(&self, block: Duration, in_background: bool) -> Result<Client> {
        let client = self
            .builder(block + Duration::from_secs(5), !in_background)
            .build()?;
        if in_background {
            client.connect();
        } else {
            client.init().await.context("connecting to Redis")?;
        }
        Ok(client)
    }

    /// Bounded waits: with Redis down, requests fail fast instead of hanging. Without
    /// `fail_fast`, the first connection is retried as a lost one is, with the same backoff.
    fn builder(&self, command_timeout: Duration, fail_fast: bool) -> Builder {
        let mut config = self.config.clone();
        config.fail_fast = fail_fast;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(2);
                connection.internal_command_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = command_timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
        builder
    }
}

/// Exports of up to this many matching users are small: a worker takes them first. At the
/// reference rate of 800,000 CSV rows a second, a small export takes a few hundredths of a
/// second, about what it waits for a slot.
pub const SMALL_EXPORT_ROWS: u64 = 50_000;

/// The stream a job waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Small,
    Bulk,
}

impl Lane {
    /// The lane of an export of `rows` matching users.
    pub fn for_rows(rows: u64) -> Self {
        if rows <= SMALL_EXPORT_ROWS {
            Lane::Small
        } else {
            Lane::Bulk
        }
    }
}

#[derive(Clone)]
pub struct JobQueue {
    redis: Pool,
    /// The bulk lane's stream keeps the name of the one stream before lanes, so jobs queued
    /// then are read after an upgrade.
    bulk: String,
    small: String,
    group: String,
}

/// One job as read from a stream: its lane, its entry id and the export it names (None when
/// the entry is malformed, which is acknowledged and dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub lane: Lane,
    pub entry_id: String,
    pub export_id: Option<Uuid>,
}

/// Which job `read_lanes` takes when both lanes answer.
#[derive(Clone, Copy)]
enum Order {
    SmallFirst,
    Oldest,
}

/// An entry id's time and sequence (`1718000000000-3`), to order entries of two streams.
fn entry_time(entry_id: &str) -> (u64, u64) {
    let (millis, sequence) = entry_id.split_once('-').unwrap_or((entry_id, "0"));
    (millis.parse().unwrap_or(u64::MAX), sequence.parse().unwrap_or(0))
}

/// Where `claim_stale`'s scans of the two lanes' pending entries have got to.
#[derive(Debug, Clone)]
pub struct StaleScan {
    small: String,
    bulk: String,
}

impl Default for StaleScan {
    fn default() -> Self {
        Self {
            small: "0-0".into(),
            bulk: "0-0".into(),
        }
    }
}

/// An entry's one field: the export it names.
const EXPORT_ID: &str = "export_id";

/// The export an entry's fields name, if they name one.
fn export_id_of(fields: &HashMap<String, String>) -> Option<Uuid> {
    Uuid::parse_str(fields.get(EXPORT_ID)?).ok()
}

impl Job {
    fn new(lane: Lane, entry_id: String, fields: &HashMap<String, String>) -> Self {
        Self {
            lane,
            export_id: export_id_of(fields),
            entry_id,
        }
    }
}

impl JobQueue {
    /// All keys of one deployment (or one test) start with `prefix`.
    pub fn new(redis: Pool, prefix: &str) -> Self {
        Self {
            redis,
            bulk: format!("{prefix}jobs"),
            small: format!("{prefix}jobs:small"),
            group: format!("{prefix}workers"),
        }
    }

    /// The stream of `lane`.
    pub fn stream_key(&self, lane: Lane) -> &str {
        match lane {
            Lane::Small => &self.small,
            Lane::Bulk => &self.bulk,
        }
    }

    fn lane_of(&self, stream: &str) -> Lane {
        if stream == self.small {
            Lane::Small
        } else {
            Lane::Bulk
        }
    }

    /// Appends a job for this export, of `rows` matching users, to its lane and returns its
    /// stream entry id.
    pub async fn enqueue(&self, export_id: Uuid, rows: u64) -> Result<String> {
        self.append(Lane::for_rows(rows), export_id).await
    }

    async fn append(&self, lane: Lane, export_id: Uuid) -> Result<String> {
        let entry_id: String = self
            .redis
            .xadd(
                self.stream_key(lane),
                false,
                None,
                "*",
                vec![(EXPORT_ID, export_id.to_string())],
            )
            .await
            .context("queueing the export job")?;
        Ok(entry_id)
    }

    /// Creates the consumer group (and the stream) of each lane unless it exists. It starts at
    /// the stream's beginning, so jobs queued before the first worker started are not skipped.
    pub async fn ensure_group(&self) -> Result<()> {
        for stream in [&self.small, &self.bulk] {
            let created: Result<Value, Error> =
                self.redis.xgroup_create(stream, &self.group, "0", true).await;
            match created {
                Ok(_) => {}
                Err(error) if error.details().starts_with("BUSYGROUP") => {}
                Err(error) => return Err(error).context("creating the consumer group"),
            }
        }
        Ok(())
    }

    /// The next new job for `consumer`: the small lane's oldest if it has one, else the first
    /// of either lane to come within `block`, on the dedicated `reader`. A stream or group
    /// that vanished (Redis restarted or flushed) is created again.
    pub async fn read(&self, reader: &Client, consumer: &str, block: Duration) -> Result<Option<Job>> {
        if let Some(job) = self
            .read_lanes(reader, consumer, None, &[Lane::Small], Order::SmallFirst)
            .await?
        {
            return Ok(Some(job));
        }
        self.read_lanes(
            reader,
            consumer,
            Some(block),
            &[Lane::Small, Lane::Bulk],
            Order::SmallFirst,
        )
        .await
    }

    /// The oldest new job of either lane, by its entry id (the time it was queued): first in,
    /// first out, for comparisons (`WorkerArgs::fifo`).
    pub async fn read_fifo(&self, reader: &Client, consumer: &str, block: Duration) -> Result<Option<Job>> {
        self.read_lanes(
            reader,
            consumer,
            Some(block),
            &[Lane::Small, Lane::Bulk],
            Order::Oldest,
        )
        .await
    }

    async fn read_lanes(
        &self,
        reader: &Client,
        consumer: &str,
        block: Option<Duration>,
        lanes: &[Lane],
        order: Order,
    ) -> Result<Option<Job>> {
        let keys: Vec<&str> = lanes.iter().map(|lane| self.stream_key(*lane)).collect();
        let ids: Vec<XID> = lanes.iter().map(|_| XID::NewInGroup).collect();
        let read: Result<Value, Error> = reader
            .xreadgroup(
                &self.group,
                consumer,
                Some(1),
                block.map(|block| block.as_millis() as u64),
                false,
                keys,
                ids,
            )
            .await;
        let reply = match read {
            // The block timed out with no new entry: no job, which is not an error.
            Ok(Value::Null) => return Ok(None),
            Ok(reply) => reply,
            Err(error) if error.details().starts_with("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(None);
            }
            Err(error) => return Err(error).context("reading the job streams"),
        };
        let entries: XReadResponse<String, String, String, String> = reply
            .into_xread_response()
            .context("reading the job streams' reply")?;
        let mut jobs: Vec<Job> = entries
            .into_iter()
            .flat_map(|(stream, entries)| {
                let lane = self.lane_of(&stream);
                entries
                    .into_iter()
                    .map(move |(entry_id, fields)| Job::new(lane, entry_id, &fields))
            })
            .collect();
        // Both lanes can answer one blocking read (a job came to each while it waited): one is
        // taken, the other goes back to the end of its lane, since an entry read cannot be
        // unread.
        match order {
            Order::SmallFirst => jobs.sort_by_key(|job| job.lane != Lane::Small),
            Order::Oldest => jobs.sort_by_key(|job| entry_time(&job.entry_id)),
        }
        let mut jobs = jobs.into_iter();
        let taken = jobs.next();
        for job in jobs {
            self.put_back(&job).await?;
        }
        Ok(taken)
    }

    /// Puts a job read but not run back at the end of its lane.
    pub async fn put_back(&self, job: &Job) -> Result<()> {
        if let Some(export_id) = job.export_id {
            self.append(job.lane, export_id).await?;
        }
        self.acknowledge(job).await
    }

    /// Takes over one job that another consumer has held for longer than `min_idle` without
    /// touching it: its worker died. The small lane is looked at first. Redis looks at a few
    /// pending entries per call, so `scan` carries the scans on from call to call.
    pub async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        scan: &mut StaleScan,
    ) -> Result<Option<Job>> {
        if let Some(job) = self
            .claim_stale_in(Lane::Small, consumer, min_idle, &mut scan.small)
            .await?
        {
            return Ok(Some(job));
        }
        self.claim_stale_in(Lane::Bulk, consumer, min_idle, &mut scan.bulk)
            .await
    }

    /// `claim_stale` in one lane, its scan at `cursor` (starting at, and wrapping to, `0-0`).
    async fn claim_stale_in(
        &self,
        lane: Lane,
        consumer: &str,
        min_idle: Duration,
        cursor: &mut String,
    ) -> Result<Option<Job>> {
        let claimed: Result<Value, Error> = self
            .redis
            .xautoclaim(
                self.stream_key(lane),
                &self.group,
                consumer,
                min_idle.as_millis() as u64,
                cursor.as_str(),
                Some(1),
                false,
            )
            .await;
        let reply = match claimed {
            Ok(reply) => reply,
            Err(error) if error.details().starts_with("NOGROUP") => {
                *cursor = "0-0".into();
                return Ok(None);
            }
            Err(error) => return Err(error).context("claiming stale jobs"),
        };
        // [next-start, [[id, [field, value, ...]], ...], deleted-ids]
        let Value::Array(mut parts) = reply else {
            return Ok(None);
        };
        if parts.len() < 2 {
            return Ok(None);
        }
        *cursor = parts[0].as_string().unwrap_or_else(|| "0-0".into());
        let Value::Array(entries) = parts.swap_remove(1) else {
            return Ok(None);
        };
        Ok(entries.into_iter().find_map(|entry| {
            let Value::Array(mut entry) = entry else {
                return None;
            };
            if entry.len() != 2 {
                return None;
            }
            let fields: HashMap<String, String> = entry
                .pop()?
                .into_array()
                .chunks(2)
                .filter_map(|pair| Some((pair[0].as_string()?, pair.get(1)?.as_string()?)))
                .collect();
            Some(Job::new(lane, entry.pop()?.as_string()?, &fields))
        }))
    }

    /// Resets the idle time of a job this consumer is running, so nobody takes it over.
    pub async fn touch(&self, consumer: &str, job: &Job) -> Result<()> {
        let _: Value = self
            .redis
            .xclaim(
                self.stream_key(job.lane),
                &self.group,
                consumer,
                0,
                &job.entry_id,
                None,
                None,
                None,
                false,
                true,
            )
            .await
            .context("renewing the job's claim")?;
        Ok(())
    }

    /// Acknowledges and deletes a handled job: the streams hold only jobs not yet done.
    pub async fn acknowledge(&self, job: &Job) -> Result<()> {
        let stream = self.stream_key(job.lane);
        let _: Value = self.redis.xack(stream, &self.group, &job.entry_id).await?;
        let _: Value = self.redis.xdel(stream, &job.entry_id).await?;
        Ok(())
    }

    /// Every export that has an entry on either stream (queued or being worked on).
    pub async fn queued_exports(&self) -> Result<HashSet<Uuid>> {
        let mut queued = HashSet::new();
        for stream in [&self.small, &self.bulk] {
            let mut start = "-".to_string();
            loop {
                let page: Vec<XReadValue<String, String, String>> =
                    self.redis.xrange_values(stream, &start, "+", Some(1000)).await?;
                let Some((last, _)) = page.last() else { break };
                start = format!("({last}");
                let full = page.len() == 1000;
                queued.extend(page.iter().filter_map(|(_, fields)| export_id_of(fields)));
                if !full {
                    break;
                }
            }
        }
        Ok(queued)
    }

    /// Takes a short lock named `name` for `ttl`, so one process of the deployment runs a
    /// periodic task at a time; false when another holds it.
    pub async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let set: Option<String> = self
            .redis
            .set(
                self.lock_key(name),
                holder,
                Some(Expiration::PX(ttl.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(set.is_some())
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.bulk)
    }

    /// Removes the streams and every job on them (benchmarks and tests clean up with this).
    pub async fn delete_stream(&self) -> Result<()> {
        let _: i64 = self
            .redis
            .del(vec![
                self.small.clone(),
                self.bulk.clone(),
                self.lock_key("sweep"),
            ])
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = self.redis.ping(None).await?;
        Ok(())
    }
}
