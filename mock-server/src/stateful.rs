//! The stateful exports flow: a created export is remembered for its caller (by bearer
//! token), shows `processing` and then `done` once its `estimated_seconds` have passed (scaled
//! by `--speed`), appears in the list, can be cancelled, and downloads as a small real CSV or
//! XLSX file of fake users. Every body is checked against the spec before it is sent; one the
//! spec no longer allows falls back to the spec's own example. Finished and cancelled exports
//! are announced to their owner's webhook endpoints (`webhooks`). An export expires a day
//! after it is done, as on the server, and fails only when the sandbox says so (`sandbox`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use exports_spec::{errors, files};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::outcome::Outcome;
use crate::webhooks::Webhooks;

/// Exports kept at most; the oldest are forgotten first, so a long session stays small.
const MAX_EXPORTS: usize = 10_000;
/// Seconds an export takes at speed 1 when the spec's 202 example gives no estimate.
const DEFAULT_SECONDS: u64 = 10;
/// On the system clock, the finished exports of one tick are announced together.
const ANNOUNCE_TICK: Duration = Duration::from_millis(10);
/// How long a finished file is kept before the export expires, as by the server's default
/// (`--file-ttl-secs`).
const FILE_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

fn file_kept() -> chrono::Duration {
    chrono::Duration::from_std(FILE_KEPT).expect("a day")
}

/// How long an `Idempotency-Key` is remembered, as by the server.
const KEY_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

pub struct Exports {
    speed: f64,
    clock: Clock,
    store: Mutex<Store>,
    webhooks: Arc<Webhooks>,
    /// An export was made that finishes before any other unfinished one.
    sooner: Notify,
}

/// The time the exports flow reads: the machine's, or a manual clock that stands still until a
/// test moves it, so a test sees `processing` and then `done` however fast the machine is, or
/// the machine's moved forward by the sandbox (`ShiftedClock`).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(ManualClock),
    Shifted(ShiftedClock),
}

/// The machine's time, moved forward by a shift that only grows: the sandbox's clock
/// (`POST /__mock/clock`), under which exports go on finishing as time passes and a test can
/// make them finish now. Its clones share one shift.
#[derive(Debug, Clone, Default)]
pub struct ShiftedClock(Arc<watch::Sender<Duration>>);

/// A clock that moves only when `advance` is called; its clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<watch::Sender<Now>>);

#[derive(Debug, Clone, Copy)]
struct Now {
    /// For how long an export has run (monotonic, as the system clock's `Instant` is).
    instant: Instant,
    /// For the timestamps an export shows.
    utc: DateTime<Utc>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Now {
            instant: Instant::now(),
            utc: Utc::now(),
        })))
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        self.0.send_modify(|now| {
            now.instant += by;
            now.utc += chrono::Duration::from_std(by).expect("a duration chrono can hold");
        });
    }
}

impl Clock {
    fn now(&self) -> Now {
        match self {
            Clock::System => Now {
                instant: Instant::now(),
                utc: Utc::now(),
            },
            Clock::Manual(clock) => *clock.0.borrow(),
            Clock::Shifted(clock) => {
                let shift = *clock.0.borrow();
                Now {
                    instant: Instant::now() + shift,
                    utc: Utc::now() + chrono::Duration::from_std(shift).expect("a duration chrono can hold"),
                }
            }
        }
    }

    /// The time it reads now.
    pub fn now_utc(&self) -> DateTime<Utc> {
        self.now().utc
    }

    /// Moves the clock forward; false for the system's own, which only time moves.
    pub fn advance(&self, by: Duration) -> bool {
        match self {
            Clock::System => return false,
            Clock::Manual(clock) => clock.advance(by),
            Clock::Shifted(clock) => clock.0.send_modify(|shift| *shift += by),
        }
        true
    }

    /// Follows the clock's moves (`None` for the system's, which moves by itself only).
    fn moves(&self) -> Option<Moves> {
        match self {
            Clock::System => None,
            Clock::Manual(clock) => Some(Moves::Manual(clock.0.subscribe())),
            Clock::Shifted(clock) => Some(Moves::Shifted(clock.0.subscribe())),
        }
    }

    /// When, on the machine's time, this clock reads `at`; never for a manual clock, which
    /// only a move brings there.
    fn machine_time_of(&self, at: Instant) -> Option<Instant> {
        match self {
            Clock::System => Some(at),
            Clock::Manual(_) => None,
            Clock::Shifted(clock) => Some(at.checked_sub(*clock.0.borrow()).unwrap_or_else(Instant::now)),
        }
    }
}

/// A clock's moves, followed.
enum Moves {
    Manual(watch::Receiver<Now>),
    Shifted(watch::Receiver<Duration>),
}

impl Moves {
    fn seen(&mut self) {
        match self {
            Moves::Manual(moves) => drop(moves.borrow_and_update()),
            Moves::Shifted(moves) => drop(moves.borrow_and_update()),
        }
    }

    async fn changed(&mut self) {
        let _ = match self {
            Moves::Manual(moves) => moves.changed().await,
            Moves::Shifted(moves) => moves.changed().await,
        };
    }
}

#[derive(Default)]
struct Store {
    by_id: HashMap<Uuid, Record>,
    order: VecDeque<Uuid>,
    /// Creates with an `Idempotency-Key`, by caller and key: what was asked
    /// (`exports_spec::files::create_identity`), the answer, and when.
    keys: HashMap<(String, String), (Value, Value, Instant)>,
    /// Exports not yet announced as done, soonest first: when each finishes.
    finishing: BinaryHeap<Reverse<(Instant, Uuid)>>,
    /// Done exports not yet announced as expired, soonest first: when each expires.
    expiring: BinaryHeap<Reverse<(Instant, Uuid)>>,
    /// The messages of the next exports to fail (the sandbox's `/__mock/failing-exports`).
    failing: VecDeque<String>,
}

#[derive(Clone)]
struct Record {
    id: Uuid,
    owner: String,
    format: String,
    filters: Value,
    /// The file's columns, in order (all of them unless the create chose).
    columns: Vec<String>,
    compression: String,
    started: Instant,
    created_at: DateTime<Utc>,
    estimated_seconds: u64,
    cancelled_at: Option<DateTime<Utc>>,
    /// Why it fails instead of finishing, when the sandbox made it fail.
    failure: Option<String>,
    /// The finished file, made once on first need (for its size or its download) and shared
    /// by the record's copies.
    file: Arc<OnceLock<Vec<u8>>>,
}

impl Record {
    fn file(&self) -> &[u8] {
        self.file.get_or_init(|| fake_file(self))
    }
}

/// One request, as the flow needs it.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub operation_id: &'a str,
    /// The caller's credentials: exports are visible to the caller who made them.
    pub owner: &'a str,
    pub export_id: Option<&'a str>,
    pub query: &'a HashMap<String, String>,
    pub body: Option<&'a Value>,
    pub base_url: &'a str,
    /// `estimated_seconds` of the spec's example, the export's duration at speed 1.
    pub example_estimate: Option<u64>,
    /// The `Idempotency-Key` header (checked against the spec already).
    pub idempotency_key: Option<&'a str>,
}

/// The operationId of the create, the one operation of the flow that looks up no export.
const CREATE: &str = "createUserExport";

/// The operations on the caller's exports.
#[derive(Clone, Copy)]
enum OnExports {
    Get,
    Cancel,
    Download,
    DownloadByLink,
    List,
}

impl OnExports {
    fn of(operation_id: &str) -> Option<Self> {
        Some(match operation_id {
            "getExport" => Self::Get,
            "cancelExport" => Self::Cancel,
            "downloadExport" => Self::Download,
            "downloadByLink" => Self::DownloadByLink,
            "listExports" => Self::List,
            _ => return None,
        })
    }
}

fn not_found() -> Outcome {
    Outcome::Error(404, errors::not_found("Export"))
}

impl Exports {
    /// Whether `handle` answers this operation.
    pub fn answers(operation_id: &str) -> bool {
        operation_id == CREATE || OnExports::of(operation_id).is_some()
    }

    pub fn new(speed: f64, clock: Clock, webhooks: Arc<Webhooks>) -> Self {
        Self {
            speed: if speed > 0.0 { speed } else { 1.0 },
            clock,
            store: Mutex::default(),
            webhooks,
            sooner: Notify::new(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Makes the next `count` exports created fail, with `message`, when they would finish
    /// (the sandbox).
    pub fn fail_next(&self, count: usize, message: &str) {
        let mut store = self.store.lock().expect("exports lock");
        store
            .failing
            .extend(std::iter::repeat_n(message.to_string(), count));
    }

    /// Forgets every export and idempotency key (the sandbox's reset).
    pub fn reset(&self) {
        *self.store.lock().expect("exports lock") = Store::default();
    }

    /// Announces each export as it finishes (`export.done`), until `stopped`: when the next
    /// one is due, and whenever the clock is moved.
    pub async fn announce_finished(&self, mut stopped: watch::Receiver<bool>) {
        let mut moves = self.clock.moves();
        loop {
            if let Some(moves) = moves.as_mut() {
                moves.seen();
            }
            let next = self.announce_due();
            let wake = next.and_then(|next| self.clock.machine_time_of(next));
            let due = async {
                // Exports finishing within one tick are announced together, so that a stream
                // of creates does not wake this task once per export.
                let sleeping = async {
                    match wake {
                        Some(at) => {
                            let tick = Instant::now() + ANNOUNCE_TICK;
                            tokio::time::sleep_until(at.max(tick).into()).await
                        }
                        None => std::future::pending().await,
                    }
                };
                match moves.as_mut() {
                    Some(moves) => tokio::select! {
                        _ = moves.changed() => {}
                        _ = sleeping => {}
                    },
                    None => sleeping.await,
                }
            };
            tokio::select! {
                _ = due => {}
                _ = self.sooner.notified() => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// Announces the exports finished (done or failed) and expired by now; returns when the
    /// next one finishes or expires.
    fn announce_due(&self) -> Option<Instant> {
        let now = self.clock.now();
        let mut store = self.store.lock().expect("exports lock");
        while let Some(Reverse((due, id))) = store.finishing.peek().copied() {
            if due > now.instant {
                break;
            }
            store.finishing.pop();
            let Some(record) = store.by_id.get(&id) else {
                continue;
            };
            if record.cancelled_at.is_some() {
                continue;
            }
            let export = || self.view(record, "");
            let finished_at = self.finished_at(record);
            if record.failure.is_some() {
                self.webhooks
                    .announce(&record.owner, "export.failed", finished_at, export);
            } else {
                self.webhooks
                    .announce(&record.owner, "export.done", finished_at, export);
                store.expiring.push(Reverse((due + FILE_KEPT, id)));
            }
        }
        while let Some(Reverse((due, id))) = store.expiring.peek().copied() {
            if due > now.instant {
                break;
            }
            store.expiring.pop();
            if let Some(record) = store.by_id.get(&id) {
                let expired_at = self.finished_at(record) + file_kept();
                let export = || self.view(record, "");
                self.webhooks
                    .announce(&record.owner, "export.expired", expired_at, export);
            }
        }
        let next = |heap: &BinaryHeap<Reverse<(Instant, Uuid)>>| heap.peek().map(|Reverse((due, _))| *due);
        match (next(&store.finishing), next(&store.expiring)) {
            (Some(finishing), Some(expiring)) => Some(finishing.min(expiring)),
            (finishing, expiring) => finishing.or(expiring),
        }
    }

    /// When the export is (or was) done, unless cancelled first.
    fn finished_at(&self, record: &Record) -> DateTime<Utc> {
        record.created_at + chrono::Duration::from_std(self.duration(record)).unwrap_or_default()
    }

    fn duration(&self, record: &Record) -> Duration {
        Duration::from_secs_f64(record.estimated_seconds as f64 / self.speed)
    }

    fn elapsed(&self, record: &Record) -> Duration {
        self.clock.now().instant.duration_since(record.started)
    }

    /// Handles the exports operations by their operationId; `None` for any other operation.
    pub fn handle(&self, call: &Call) -> Option<Outcome> {
        if call.operation_id == CREATE {
            return self.create(call);
        }
        let operation = OnExports::of(call.operation_id)?;
        let Call {
            owner,
            export_id,
            query,
            base_url,
            ..
        } = *call;
        let mut store = self.store.lock().expect("exports lock");
        let found = export_id
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| store.by_id.get(&id))
            .filter(|record| record.owner == owner)
            .cloned();
        Some(match operation {
            OnExports::Get => match found {
                Some(record) => Outcome::Json(200, self.view(&record, base_url)),
                None => not_found(),
            },
            OnExports::Cancel => match found {
                Some(record) if matches!(self.status(&record), "pending" | "processing") => {
                    let record = store.by_id.get_mut(&record.id).expect("found above");
                    let cancelled_at = self.clock.now().utc;
                    record.cancelled_at = Some(cancelled_at);
                    let record = record.clone();
                    let view = self.view(&record, base_url);
                    self.webhooks
                        .announce(owner, "export.cancelled", cancelled_at, || view.clone());
                    Outcome::Json(200, view)
                }
                Some(record) => Outcome::Error(409, errors::export_finished(self.status(&record))),
                None => not_found(),
            },
            OnExports::Download => match found {
                Some(record) if self.status(&record) == "done" => {
                    let bytes = record.file().to_vec();
                    Outcome::File {
                        media_type: files::media_type(&record.format, &record.compression),
                        disposition: files::content_disposition(
                            record.id,
                            &record.format,
                            &record.compression,
                        ),
                        bytes,
                    }
                }
                Some(record) if self.status(&record) == "expired" => {
                    Outcome::Error(410, errors::export_expired())
                }
                Some(record) => Outcome::Error(409, errors::export_not_ready(self.status(&record))),
                None => not_found(),
            },
            // The mock signs no links (its exports download through `downloadExport`), so
            // every link is one it did not make.
            OnExports::DownloadByLink => Outcome::Error(403, errors::invalid_download_link()),
            OnExports::List => {
                let limit = query
                    .get("limit")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(100)
                    .clamp(1, 100);
                let offset = match query.get("page_token") {
                    None => 0,
                    Some(token) => match token
                        .strip_prefix("mock-offset-")
                        .and_then(|n| n.parse::<usize>().ok())
                    {
                        Some(offset) => offset,
                        None => return Some(Outcome::Example(400, "invalid_page_token")),
                    },
                };
                let mine: Vec<&Record> = store
                    .order
                    .iter()
                    .rev()
                    .filter_map(|id| store.by_id.get(id))
                    .filter(|r| r.owner == owner)
                    .collect();
                let items: Vec<Value> = mine
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|record| self.view(record, base_url))
                    .collect();
                let next = (offset + limit < mine.len()).then(|| format!("mock-offset-{}", offset + limit));
                Outcome::Json(200, json!({"items": items, "next_page": next}))
            }
        })
    }

    /// A create: the export and its answer are made before the store is locked, and the
    /// export it forgets to make room is dropped after, so concurrent requests wait little.
    fn create(&self, call: &Call) -> Option<Outcome> {
        let Call {
            owner,
            body,
            example_estimate,
            idempotency_key,
            ..
        } = *call;
        let body = body?;
        let now = self.clock.now();
        // What makes two creates the same request, as on the server.
        let asked = files::create_identity(body);
        let remembered = idempotency_key.map(|key| (owner.to_string(), key.to_string()));
        let record = Record {
            id: exports_spec::random_uuid(),
            owner: owner.to_string(),
            format: body
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or("csv")
                .to_string(),
            filters: body
                .get("filters")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({})),
            columns: match body.get("columns").and_then(Value::as_array) {
                Some(columns) => columns
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                None => files::USER_COLUMNS
                    .iter()
                    .map(|column| column.to_string())
                    .collect(),
            },
            compression: body
                .get("compression")
                .and_then(Value::as_str)
                .unwrap_or(files::NO_COMPRESSION)
                .to_string(),
            started: now.instant,
            created_at: now.utc,
            estimated_seconds: example_estimate.unwrap_or(DEFAULT_SECONDS),
            cancelled_at: None,
            failure: None,
            file: Arc::default(),
        };
        let accepted = json!({
            "export_id": record.id,
            "status": "pending",
            "estimated_seconds": (record.estimated_seconds as f64 / self.speed).ceil() as u64,
        });
        let finishes = now.instant + self.duration(&record);

        let mut store = self.store.lock().expect("exports lock");
        if let Some((earlier, answer, at)) = remembered.as_ref().and_then(|k| store.keys.get(k)) {
            if now.instant.duration_since(*at) < KEY_KEPT {
                return Some(if *earlier == asked {
                    Outcome::Replayed(answer.clone())
                } else {
                    Outcome::Canned(422)
                });
            }
        }
        let forgotten = if store.order.len() >= MAX_EXPORTS {
            let oldest = store.order.pop_front();
            oldest.and_then(|oldest| store.by_id.remove(&oldest))
        } else {
            None
        };
        if store
            .finishing
            .peek()
            .is_none_or(|Reverse((first, _))| finishes < *first)
        {
            self.sooner.notify_one();
        }
        store.finishing.push(Reverse((finishes, record.id)));
        // Forgotten exports are never announced: drop them now and then, so that the queue
        // stays as small as the store.
        if store.finishing.len() > 2 * MAX_EXPORTS {
            let Store { finishing, by_id, .. } = &mut *store;
            finishing.retain(|Reverse((_, id))| by_id.contains_key(id));
        }
        let mut record = record;
        record.failure = store.failing.pop_front();
        store.order.push_back(record.id);
        store.by_id.insert(record.id, record);
        if let Some(remembered) = remembered {
            if store.keys.len() >= MAX_EXPORTS {
                store
                    .keys
                    .retain(|_, (_, _, at)| now.instant.duration_since(*at) < KEY_KEPT);
            }
            store
                .keys
                .insert(remembered, (asked, accepted.clone(), now.instant));
        }
        drop(store);
        drop(forgotten);
        Some(Outcome::Json(202, accepted))
    }

    fn status(&self, record: &Record) -> &'static str {
        let elapsed = self.elapsed(record);
        if record.cancelled_at.is_some() {
            "cancelled"
        } else if elapsed >= self.duration(record) && record.failure.is_some() {
            "failed"
        } else if elapsed >= self.duration(record) + FILE_KEPT {
            "expired"
        } else if elapsed >= self.duration(record) {
            "done"
        } else if self.elapsed(record) < self.duration(record) / 10 {
            // Waiting for a worker, as a real export does at first.
            "pending"
        } else {
            "processing"
        }
    }

    fn view(&self, record: &Record, base_url: &str) -> Value {
        let status = self.status(record);
        let rows_total = fake_users(&record.filters).len() as u64;
        let total = self.duration(record).as_secs_f64().max(f64::EPSILON);
        let fraction = (self.elapsed(record).as_secs_f64() / total).min(1.0);
        // A failed export stopped half-way; a done or expired one wrote every row.
        let (rows_written, percent) = match status {
            "done" | "expired" => (rows_total, 100.0),
            "failed" => (rows_total / 2, 50.0),
            _ => (
                (rows_total as f64 * fraction) as u64,
                (fraction * 1000.0).round() / 10.0,
            ),
        };
        let remaining =
            matches!(status, "pending" | "processing").then(|| (total * (1.0 - fraction)).ceil() as u64);
        let done_at = self.finished_at(record);
        let done = status == "done";
        let now = self.clock.now().utc;
        let updated_at = match status {
            "cancelled" => record.cancelled_at.unwrap_or(now),
            "done" | "failed" => done_at,
            "expired" => done_at + file_kept(),
            _ => now,
        };
        let size = done.then(|| record.file().len());
        let kept_until = matches!(status, "done" | "expired").then(|| (done_at + file_kept()).to_rfc3339());
        json!({
            "export_id": record.id,
            "type": "users",
            "format": record.format,
            "status": status,
            "filters": record.filters,
            "columns": record.columns,
            "compression": record.compression,
            "progress": {
                "rows_written": rows_written,
                "rows_total": rows_total,
                "percent": percent,
                "estimated_seconds_remaining": remaining,
            },
            "download_url": done.then(|| format!("{base_url}/api/v1/exports/users/{}/download", record.id)),
            "download_expires_at": done.then(|| (now + chrono::Duration::minutes(15)).to_rfc3339()),
            "error_message": record.failure.as_ref().filter(|_| status == "failed"),
            "file_size_bytes": size,
            "created_at": record.created_at.to_rfc3339(),
            "updated_at": updated_at.to_rfc3339(),
            "expires_at": kept_until,
        })
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];

/// 24 fake users, filtered like the real export would be.
fn fake_users(filters: &Value) -> Vec<[String; 5]> {
    let status = filters.get("status").and_then(Value::as_str);
    let after = filters.get("created_after").and_then(Value::as_str).unwrap_or("");
    (0..24u32)
        .map(|i| {
            let (first, last) = (FIRST_NAMES[i as usize % 8], LAST_NAMES[(i as usize * 3) % 8]);
            let created = format!("2025-{:02}-{:02}T09:{:02}:00Z", 1 + i % 12, 1 + i % 28, i % 60);
            [
                Uuid::from_u128(0x5eed_0000 + u128::from(i)).to_string(),
                format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase()),
                format!("{first} {last}"),
                if i % 4 == 3 { "inactive" } else { "active" }.to_string(),
                created,
            ]
        })
        .filter(|user| status.is_none_or(|s| user[3] == s) && user[4].as_str() >= after)
        .collect()
}

/// The record's file, as the server would write it for the same options: its columns in
/// order under a header row (CSV, XLSX) or as members (JSON Lines), gzip-compressed when asked.
fn fake_file(record: &Record) -> Vec<u8> {
    let users = fake_users(&record.filters);
    let chosen: Vec<usize> = record
        .columns
        .iter()
        .filter_map(|column| files::USER_COLUMNS.iter().position(|known| known == column))
        .collect();
    let cells = |user: &[String; 5]| chosen.iter().map(|&at| user[at].clone()).collect::<Vec<String>>();
    let file = match record.format.as_str() {
        "xlsx" => {
            let mut workbook = rust_xlsxwriter::Workbook::new();
            let sheet = workbook.add_worksheet();
            for (column, title) in record.columns.iter().enumerate() {
                let _ = sheet.write_string(0, column as u16, title);
            }
            for (row, user) in users.iter().enumerate() {
                for (column, cell) in cells(user).iter().enumerate() {
                    let _ = sheet.write_string(row as u32 + 1, column as u16, cell);
                }
            }
            workbook.save_to_buffer().unwrap_or_default()
        }
        "jsonl" => {
            let mut lines = Vec::new();
            // Members in the columns' order (a JSON map here would sort them).
            for user in &users {
                let members: Vec<String> = record
                    .columns
                    .iter()
                    .zip(cells(user))
                    .map(|(column, cell)| format!("{}:{}", json!(column), json!(cell)))
                    .collect();
                lines.extend(format!("{{{}}}\n", members.join(",")).into_bytes());
            }
            lines
        }
        _ => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            let _ = writer.write_record(&record.columns);
            for user in &users {
                let _ = writer.write_record(cells(user));
            }
            writer.into_inner().unwrap_or_default()
        }
    };
    if record.compression != files::GZIP {
        return file;
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = std::io::Write::write_all(&mut gzip, &file);
    gzip.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_files_are_real_files() {
        let record = |format: &str, filters: Value, columns: &[&str], compression: &str| Record {
            id: Uuid::nil(),
            owner: String::new(),
            format: format.to_string(),
            filters,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            compression: compression.to_string(),
            started: Instant::now(),
            created_at: Utc::now(),
            estimated_seconds: 0,
            cancelled_at: None,
            failure: None,
            file: Arc::default(),
        };
        let every = files::USER_COLUMNS;
        let csv = fake_file(&record("csv", json!({"status": "inactive"}), &every, "none"));
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.starts_with("id,email,name,status,created_at\n"));
        assert_eq!(csv.lines().count(), 1 + 6);
        assert!(csv.lines().skip(1).all(|line| line.contains(",inactive,")));
        let xlsx = fake_file(&record("xlsx", json!({}), &every, "none"));
        assert_eq!(&xlsx[..2], b"PK", "an XLSX file is a zip archive");

        let gzip = fake_file(&record("jsonl", json!({}), &["status", "email"], "gzip"));
        let mut jsonl = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut jsonl).unwrap();
        assert_eq!(jsonl.lines().count(), 24);
        for line in jsonl.lines() {
            let user: Value = serde_json::from_str(line).unwrap();
            assert!(
                user["email"].as_str().unwrap().ends_with("@example.com"),
                "{line}"
            );
            assert!(
                line.starts_with(r#"{"status":""#),
                "in the columns' order: {line}"
            );
        }
    }
}
