//! One export file: rows streamed out of PostgreSQL, written as CSV, JSON Lines or XLSX with
//! the export's columns, gzip-compressed as they are written when asked, uploaded in parts
//! while they are written. Neither the rows nor the file are ever all in memory.
//!
//! - CSV: UTF-8, a header row, RFC 3339 UTC timestamps; chunks of a few hundred KiB go to the
//!   upload as soon as they are full.
//! - JSON Lines: one object per user and line, members in the columns' order, written like
//!   CSV (chunk by chunk), strings escaped by serde_json exactly as JSON requires.
//! - gzip (CSV and JSON Lines): each chunk goes through one gzip stream on its way to the
//!   upload, so the file is compressed as it is written, never after.
//! - XLSX: written on a blocking thread by `xlsx`, straight into a zip that goes to the
//!   upload as it is compressed; a sheet holds at most 1,048,575 data rows under its header,
//!   then the next sheet starts.
//!
//! Cells that a spreadsheet would run as a formula (OWASP's CSV injection: a value starting
//! with `=`, `+`, `-`, `@`, tab or carriage return) are defused. CSV has no other defence than
//! a leading `'`, which a spreadsheet shows as text. An XLSX string cell is never a formula:
//! the value is written unchanged, with Excel's quote-prefix cell format, so that editing the
//! cell cannot turn it into one either. JSON Lines is for programs: values are written as
//! stored. XLSX cells are limited to 32,767 characters (Excel's limit): a longer value is cut
//! to 32,766 and ends in `…` (CSV and JSON Lines keep it whole).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{pin_mut, TryStreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db::exports::Checkpoint;
use crate::db::users::{UserKey, UserQuery};
use crate::model::{ExportCompression, ExportFile, ExportFormat, UserColumn, UserExportFilters};
use crate::storage::{FileWriter, PartsDone};

mod cells;
mod xlsx;

pub use cells::{neutralise, write_timestamp, Cell};
use xlsx::XlsxWriter;

/// Bytes of CSV or JSON Lines gathered before they go to the upload (through gzip, if asked).
const CHUNK_BYTES: usize = 256 * 1024;
/// Rows handed to the XLSX thread at once.
const XLSX_BATCH_ROWS: usize = 1024;
/// gzip's level. zlib-rs on a 1M-user CSV (102 MiB, in chunks like ours): level 1 packs it
/// 2.30 times in 0.50 s, level 2 3.33 times in 0.87 s, level 6 (gzip's default) 3.40 times in
/// 1.33 s. Level 2 is nearly level 6's file for two thirds of its CPU.
const GZIP_LEVEL: u32 = 2;

/// What an attempt logs once it holds at the fault-injection point, for tests to wait on.
#[cfg(feature = "fault-injection")]
pub const HELD: &str = "fault injection: the export holds here";

/// Fault injection for tests: once a count (rows written, parts completed) reaches `at`, the
/// export holds there until it is cancelled, interrupted or timed out (or `release` says so),
/// so a test can act on an export under way however fast the machine is. Compiled only with
/// the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
pub struct Hold {
    at: Option<u64>,
    release: Option<tokio::sync::watch::Receiver<bool>>,
    held: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "fault-injection")]
impl Hold {
    pub fn new(at: Option<u64>, release: Option<tokio::sync::watch::Receiver<bool>>) -> Self {
        Self {
            at,
            release,
            held: Default::default(),
        }
    }

    /// Holds, once, when `count` reaches the point.
    pub async fn reached(&self, what: &str, count: u64) {
        if self.at.is_some_and(|at| count >= at) && !self.held.swap(true, Ordering::Relaxed) {
            tracing::warn!(what, count, "{HELD}");
            match self.release.clone() {
                Some(mut release) => drop(release.wait_for(|released| *released).await),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// How far one attempt has got: the rows written so far, which the worker records as the
/// export's progress.
#[derive(Debug, Default)]
pub struct Progress {
    rows: AtomicU64,
    #[cfg(feature = "fault-injection")]
    hold: Hold,
}

impl Progress {
    #[cfg(feature = "fault-injection")]
    pub fn holding_after(rows: Option<u64>, release: Option<tokio::sync::watch::Receiver<bool>>) -> Self {
        Self {
            rows: AtomicU64::new(0),
            hold: Hold::new(rows, release),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// An attempt going on from a checkpoint starts with its rows.
    pub fn resume_at(&self, rows: u64) {
        self.rows.store(rows, Ordering::Relaxed);
    }

    async fn record(&self, rows: u64) {
        self.rows.store(rows, Ordering::Relaxed);
        #[cfg(feature = "fault-injection")]
        self.hold.reached("rows", rows).await;
    }
}

/// Streams the matching users into `upload` as `file` says, recording the rows written in
/// `progress` as they go; after `from`, when the upload goes on from an earlier attempt's
/// checkpoint (CSV and JSON Lines, uncompressed). Returns the number of rows in the file; the
/// caller completes or aborts the upload.
pub async fn write_export(
    client: &tokio_postgres::Client,
    filters: &UserExportFilters,
    file: &ExportFile,
    upload: &mut Upload,
    progress: &Progress,
    from: Option<&Checkpoint>,
) -> Result<u64> {
    let query = UserQuery::new(filters).after(from.map(|from| from.after));
    // With checkpoints, each row's key is read too, for the chunk it ends.
    let read = match upload.checkpoints.is_some() {
        true => UserKey::with_key_columns(&file.columns),
        false => file.columns.clone(),
    };
    let keyed = upload.checkpoints.is_some().then_some(read.as_slice());
    // Until the rows start coming; reading them is the attempt's `export.file`.
    let step = crate::telemetry::step("export.query");
    let rows = async {
        let statement = client
            .prepare(&query.select_sql(&read))
            .await
            .context("preparing the export query")?;
        client
            .query_raw(&statement, query.params())
            .await
            .context("running the export query")
    }
    .await;
    crate::telemetry::end_step(step, &rows);
    let rows = rows?.map_err(|error| anyhow::Error::new(error).context("reading users"));
    let out = Compressor::new(file.compression);
    match file.format {
        // CSV and JSON Lines borrow each row's text; XLSX rows cross to another thread, so
        // they are owned.
        ExportFormat::Csv => {
            let lines = Csv::new(&file.columns);
            write_lines(rows, lines, out, upload, progress, from, keyed).await
        }
        ExportFormat::Jsonl => {
            let lines = Jsonl::new(&file.columns);
            write_lines(rows, lines, out, upload, progress, from, keyed).await
        }
        ExportFormat::Xlsx => {
            anyhow::ensure!(from.is_none(), "an XLSX file is not resumed");
            let columns = file.columns.clone();
            let rows = rows.map_ok(move |row| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(index, column)| Cell::read(&row, index, *column).into_owned())
                    .collect::<Vec<Cell>>()
            });
            write_xlsx(rows, &file.columns, upload, progress).await
        }
    }
}

/// Records a checkpoint of the upload with this id (the worker: in the export's row,
/// conditional on the attempt); an error stops the file.
pub type RecordCheckpoint = Box<dyn FnMut(String, Checkpoint) -> BoxFuture<'static, Result<()>> + Send>;

/// The object being uploaded, and how many bytes went into it.
pub struct Upload {
    writer: FileWriter,
    pub bytes: u64,
    /// The upload was abandoned and the store confirmed it: nothing of it is left.
    pub aborted: bool,
    /// None when no checkpoints are kept: the next attempt writes the file from the start.
    checkpoints: Option<Checkpoints>,
}

/// Where each chunk sent ends in the file, with the rows up to its end and the last of them,
/// until a completed part ends there and makes it a checkpoint.
struct Checkpoints {
    chunk_ends: VecDeque<(u64, u64, UserKey)>,
    record: RecordCheckpoint,
    /// The parts in the last checkpoint recorded.
    recorded: usize,
}

impl Upload {
    pub fn new(writer: FileWriter) -> Self {
        Self {
            writer,
            bytes: 0,
            aborted: false,
            checkpoints: None,
        }
    }

    /// An upload whose completed parts are checkpoints, going on after `from` if given.
    pub fn with_checkpoints(writer: FileWriter, record: RecordCheckpoint, from: Option<&Checkpoint>) -> Self {
        Self {
            writer,
            bytes: from.map_or(0, |from| from.bytes),
            aborted: false,
            checkpoints: Some(Checkpoints {
                chunk_ends: VecDeque::new(),
                record,
                recorded: from.map_or(0, |from| from.parts.len()),
            }),
        }
    }

    /// Adds a chunk to the file; `end` is its rows so far and its last row's key, when it ends
    /// at a row.
    async fn put(&mut self, bytes: Vec<u8>, end: Option<(u64, UserKey)>) -> Result<()> {
        self.bytes += bytes.len() as u64;
        if let (Some(checkpoints), Some((rows, key))) = (&mut self.checkpoints, end) {
            checkpoints.chunk_ends.push_back((self.bytes, rows, key));
        }
        match self.writer.put(Bytes::from(bytes)).await? {
            Some(done) => self.record(done).await,
            None => Ok(()),
        }
    }

    /// Waits for the parts in flight and records the checkpoint they make: a worker stopping
    /// hands its export back with all it uploaded.
    pub async fn settle(&mut self) -> Result<()> {
        match self.writer.settle().await? {
            Some(done) => self.record(done).await,
            None => Ok(()),
        }
    }

    async fn record(&mut self, done: PartsDone) -> Result<()> {
        let Some(checkpoints) = &mut self.checkpoints else {
            return Ok(());
        };
        if done.parts.len() <= checkpoints.recorded {
            return Ok(());
        }
        while checkpoints
            .chunk_ends
            .front()
            .is_some_and(|(end, ..)| *end < done.bytes)
        {
            checkpoints.chunk_ends.pop_front();
        }
        // Parts are cut where chunks end, and chunks where rows end.
        let Some(&(end, rows, after)) = checkpoints.chunk_ends.front() else {
            return Ok(());
        };
        if end != done.bytes {
            return Ok(());
        }
        let parts = done.parts.len();
        let checkpoint = Checkpoint {
            parts: done.parts,
            bytes: done.bytes,
            rows,
            after,
        };
        (checkpoints.record)(done.upload_id, checkpoint).await?;
        checkpoints.recorded = parts;
        Ok(())
    }

    pub fn upload_id(&self) -> Option<String> {
        self.writer.upload_id()
    }

    /// Stops uploading and leaves the upload open for the next attempt to go on with.
    pub async fn leave_open(&mut self) {
        self.writer.leave_open().await
    }
}

/// A format written line by line into chunks: CSV or JSON Lines.
trait Lines {
    /// What comes before the first row (CSV's header row).
    fn start(&mut self, chunk: &mut Vec<u8>) -> Result<()>;
    /// One user's line, from a row of the export's query.
    fn row(&mut self, chunk: &mut Vec<u8>, row: &tokio_postgres::Row) -> Result<()>;
    /// After the last row: whatever is still held.
    fn end(&mut self, chunk: &mut Vec<u8>) -> Result<()>;
}

/// CSV of the export's columns.
struct Csv<'c> {
    columns: &'c [UserColumn],
    writer: csv::Writer<Vec<u8>>,
    created_at: String,
}

impl<'c> Csv<'c> {
    fn new(columns: &'c [UserColumn]) -> Self {
        Self {
            columns,
            writer: csv::Writer::from_writer(Vec::with_capacity(4096)),
            created_at: String::with_capacity(32),
        }
    }

    /// Moves what the writer holds to the end of `chunk`.
    fn drain_into(&mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.writer.flush()?;
        let written = std::mem::replace(&mut self.writer, csv::Writer::from_writer(Vec::new()))
            .into_inner()
            .map_err(|error| anyhow::anyhow!("writing CSV: {}", error.error()))?;
        chunk.extend_from_slice(&written);
        let mut reused = written;
        reused.clear();
        self.writer = csv::Writer::from_writer(reused);
        Ok(())
    }
}

impl Lines for Csv<'_> {
    fn start(&mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.writer
            .write_record(self.columns.iter().map(|column| column.as_str()))?;
        self.drain_into(chunk)
    }

    fn row(&mut self, chunk: &mut Vec<u8>, row: &tokio_postgres::Row) -> Result<()> {
        let mut id = Uuid::encode_buffer();
        for (index, column) in self.columns.iter().enumerate() {
            match Cell::read(row, index, *column) {
                Cell::Id(user_id) => {
                    let id = user_id.hyphenated().encode_lower(&mut id);
                    self.writer.write_field(id.as_bytes())?;
                }
                Cell::Time(at) => {
                    self.created_at.clear();
                    write_timestamp(&mut self.created_at, &at);
                    self.writer.write_field(self.created_at.as_bytes())?;
                }
                Cell::Text(text) => self.writer.write_field(neutralise(text).as_bytes())?,
            }
        }
        self.writer.write_record(None::<&[u8]>)?;
        // Held in the writer, they join the chunk a few at a time.
        if self.writer.get_ref().len() >= 64 * 1024 {
            self.drain_into(chunk)?;
        }
        Ok(())
    }

    fn end(&mut self, chunk: &mut Vec<u8>) -> Result<()> {
        self.drain_into(chunk)
    }
}

/// JSON Lines of the export's columns: `{"email":"…","created_at":"…"}` and a line feed.
struct Jsonl {
    /// Each column and its member name, quoted, with its colon, and the comma before all but
    /// the first: `{"id":`, `,"email":`.
    keys: Vec<(UserColumn, String)>,
    created_at: String,
}

impl Jsonl {
    fn new(columns: &[UserColumn]) -> Self {
        let keys = columns
            .iter()
            .enumerate()
            .map(|(position, column)| {
                let lead = if position == 0 { "{" } else { "," };
                (*column, format!("{lead}\"{}\":", column.as_str()))
            })
            .collect();
        Self {
            keys,
            created_at: String::with_capacity(32),
        }
    }
}

impl Lines for Jsonl {
    fn start(&mut self, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn row(&mut self, chunk: &mut Vec<u8>, row: &tokio_postgres::Row) -> Result<()> {
        let mut id = Uuid::encode_buffer();
        for (index, (column, key)) in self.keys.iter().enumerate() {
            chunk.extend_from_slice(key.as_bytes());
            // Ids and timestamps hold nothing JSON escapes; text goes through serde_json.
            match Cell::read(row, index, *column) {
                Cell::Id(user_id) => quoted(chunk, user_id.hyphenated().encode_lower(&mut id)),
                Cell::Time(at) => {
                    self.created_at.clear();
                    write_timestamp(&mut self.created_at, &at);
                    quoted(chunk, &self.created_at);
                }
                Cell::Text(text) => serde_json::to_writer(&mut *chunk, text)?,
            }
        }
        chunk.extend_from_slice(b"}\n");
        Ok(())
    }

    fn end(&mut self, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

fn quoted(chunk: &mut Vec<u8>, text: &str) {
    chunk.push(b'"');
    chunk.extend_from_slice(text.as_bytes());
    chunk.push(b'"');
}

/// The file's bytes on their way to the upload: as they are, or through one gzip stream.
enum Compressor {
    None,
    Gzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
}

impl Compressor {
    fn new(compression: ExportCompression) -> Self {
        match compression {
            ExportCompression::None => Compressor::None,
            ExportCompression::Gzip => Compressor::Gzip(Box::new(flate2::write::GzEncoder::new(
                Vec::with_capacity(CHUNK_BYTES),
                flate2::Compression::new(GZIP_LEVEL),
            ))),
        }
    }

    /// Sends `chunk` on (compressed, when asked) and leaves it empty for reuse. `end`: its
    /// rows so far and its last row's key, for checkpoints (of uncompressed files only).
    async fn send(
        &mut self,
        upload: &mut Upload,
        chunk: &mut Vec<u8>,
        end: Option<(u64, UserKey)>,
    ) -> Result<()> {
        match self {
            Compressor::None => {
                let full = std::mem::replace(chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
                upload.put(full, end).await
            }
            Compressor::Gzip(gzip) => {
                gzip.write_all(chunk)?;
                chunk.clear();
                let compressed = std::mem::replace(gzip.get_mut(), Vec::with_capacity(CHUNK_BYTES));
                if compressed.is_empty() {
                    return Ok(());
                }
                upload.put(compressed, None).await
            }
        }
    }

    /// Sends what is left, and gzip's trailer.
    async fn finish(self, upload: &mut Upload, mut chunk: Vec<u8>) -> Result<()> {
        match self {
            Compressor::None => upload.put(chunk, None).await,
            Compressor::Gzip(mut gzip) => {
                gzip.write_all(&chunk)?;
                chunk.clear();
                upload.put(gzip.finish()?, None).await
            }
        }
    }
}

/// After `from`, when it goes on from an earlier attempt's checkpoint (no header again, its
/// rows counted). `keyed`: the columns read, when each chunk's last row's key is to be known
/// (checkpoints).
async fn write_lines(
    rows: impl futures::Stream<Item = Result<tokio_postgres::Row>>,
    mut lines: impl Lines,
    mut out: Compressor,
    upload: &mut Upload,
    progress: &Progress,
    from: Option<&Checkpoint>,
    keyed: Option<&[UserColumn]>,
) -> Result<u64> {
    pin_mut!(rows);
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    if from.is_none() {
        lines.start(&mut chunk)?;
    }
    let mut count = from.map_or(0, |from| from.rows);
    while let Some(row) = rows.try_next().await? {
        lines.row(&mut chunk, &row)?;
        count += 1;
        if chunk.len() >= CHUNK_BYTES {
            let end = keyed.map(|read| (count, UserKey::of_row(&row, read)));
            out.send(upload, &mut chunk, end).await?;
            progress.record(count).await;
        }
    }
    lines.end(&mut chunk)?;
    out.finish(upload, chunk).await?;
    progress.record(count).await;
    Ok(count)
}

enum XlsxInput {
    Rows(Vec<Vec<Cell>>),
    /// Every row was sent: save the workbook. A closed channel without it means "abandon".
    Finish,
}

async fn write_xlsx(
    rows: impl futures::Stream<Item = Result<Vec<Cell>>>,
    columns: &[UserColumn],
    upload: &mut Upload,
    progress: &Progress,
) -> Result<u64> {
    pin_mut!(rows);
    let (rows_tx, rows_rx) = mpsc::channel::<XlsxInput>(4);
    let (bytes_tx, mut bytes_rx) = mpsc::channel::<Vec<u8>>(4);
    let written = Arc::new(AtomicU64::new(0));
    let thread_written = written.clone();
    let thread_columns = columns.to_vec();
    let builder = tokio::task::spawn_blocking(move || {
        build_xlsx(
            rows_rx,
            bytes_tx,
            &thread_written,
            &thread_columns,
            xlsx::ROWS_PER_SHEET,
        )
    });

    // Feed the rows to the thread, then forward the zip it writes to the upload; both sides
    // are bounded channels, so a slow upload slows the query instead of filling memory.
    let feed_written = written.clone();
    let feed = async move {
        let mut batch = Vec::with_capacity(XLSX_BATCH_ROWS);
        while let Some(row) = rows.try_next().await? {
            batch.push(row);
            if batch.len() == XLSX_BATCH_ROWS {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(XLSX_BATCH_ROWS));
                if rows_tx.send(XlsxInput::Rows(full)).await.is_err() {
                    break; // the thread stopped; its error is reported below
                }
                progress.record(feed_written.load(Ordering::Relaxed)).await;
            }
        }
        let _ = rows_tx.send(XlsxInput::Rows(batch)).await;
        let _ = rows_tx.send(XlsxInput::Finish).await;
        anyhow::Ok(())
    };
    // Each side owns its channel end, so when one fails the other (and the thread) stops.
    let forward_written = written;
    let forward = async move {
        while let Some(chunk) = bytes_rx.recv().await {
            progress.record(forward_written.load(Ordering::Relaxed)).await;
            upload.put(chunk, None).await?;
        }
        anyhow::Ok(())
    };
    let (fed, forwarded) = tokio::join!(feed, forward);
    let built = builder.await.context("the XLSX thread panicked")?;
    fed?;
    forwarded?;
    let count = built?;
    progress.record(count).await;
    Ok(count)
}

/// Sends the workbook's bytes down a channel in chunks as the zip is written.
struct ChannelWriter {
    chunk: Vec<u8>,
    sender: mpsc::Sender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunk.extend_from_slice(buf);
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.chunk.is_empty() {
            let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
            self.sender
                .blocking_send(chunk)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))?;
        }
        Ok(())
    }
}

/// `rows_per_sheet` counts the header: Excel's limit, or a small one in tests.
fn build_xlsx(
    mut rows: mpsc::Receiver<XlsxInput>,
    bytes: mpsc::Sender<Vec<u8>>,
    written: &AtomicU64,
    columns: &[UserColumn],
    rows_per_sheet: u32,
) -> Result<u64> {
    let out = ChannelWriter {
        chunk: Vec::with_capacity(CHUNK_BYTES + 4096),
        sender: bytes,
    };
    let mut xlsx = XlsxWriter::new(out, columns, rows_per_sheet).context("writing the XLSX file")?;
    let mut count = 0u64;
    loop {
        let batch = match rows.blocking_recv() {
            Some(XlsxInput::Rows(batch)) => batch,
            Some(XlsxInput::Finish) => break,
            None => anyhow::bail!("the export stopped before its last row"),
        };
        for row in &batch {
            xlsx.write_row(row).context("writing the XLSX file")?;
        }
        count += batch.len() as u64;
        written.store(count, Ordering::Relaxed);
    }
    let mut out = xlsx.finish().context("writing the XLSX file")?;
    out.flush()?;
    Ok(count)
}

/// Completes the upload, or aborts it so no partial object is left, and returns the rows.
pub async fn finish_upload(upload: &mut Upload, written: Result<u64>) -> Result<u64> {
    match written {
        Ok(rows) => {
            upload.writer.complete().await?;
            Ok(rows)
        }
        Err(error) => {
            match upload.writer.abort().await {
                Ok(()) => upload.aborted = true,
                Err(abort) => tracing::warn!(
                    error = %format!("{abort:#}"),
                    "aborting the upload failed; it goes when the export is taken over or swept"
                ),
            }
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cells::UserRow;
    use chrono::Utc;

    #[test]
    fn full_sheets_continue_on_a_new_sheet_with_its_own_header() {
        use calamine::Reader;
        let (rows_tx, rows_rx) = mpsc::channel(4);
        let (bytes_tx, mut bytes_rx) = mpsc::channel(4);
        let users: Vec<UserRow> = (0..7)
            .map(|n| UserRow {
                id: Uuid::new_v4(),
                email: format!("user{n}@example.com"),
                name: format!("User {n}"),
                status: "active".into(),
                created_at: Utc::now(),
            })
            .collect();
        let columns = [UserColumn::Name, UserColumn::Email];
        let rows = users.iter().map(|user| user.cells(&columns)).collect();
        rows_tx.blocking_send(XlsxInput::Rows(rows)).unwrap();
        rows_tx.blocking_send(XlsxInput::Finish).unwrap();
        let written = AtomicU64::new(0);
        // Three users and the header per sheet.
        let builder = std::thread::spawn(move || build_xlsx(rows_rx, bytes_tx, &written, &columns, 4));
        let mut file = Vec::new();
        while let Some(chunk) = bytes_rx.blocking_recv() {
            file.extend(chunk);
        }
        assert_eq!(builder.join().unwrap().unwrap(), 7);
        let mut workbook: calamine::Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(file)).unwrap();
        assert_eq!(workbook.sheet_names(), ["Sheet1", "Sheet2", "Sheet3"]);
        let mut emails = Vec::new();
        for name in workbook.sheet_names() {
            let range = workbook.worksheet_range(&name).unwrap();
            let mut rows = range.rows();
            let header: Vec<String> = rows.next().unwrap().iter().map(|cell| cell.to_string()).collect();
            assert_eq!(header, ["name", "email"]);
            emails.extend(rows.map(|row| row[1].to_string()));
        }
        let sent: Vec<String> = users.iter().map(|user| user.email.clone()).collect();
        assert_eq!(emails, sent);
    }
}
