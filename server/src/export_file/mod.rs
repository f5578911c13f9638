//! One export file: rows streamed out of PostgreSQL, written as CSV or XLSX, uploaded in parts
//! while they are written. Neither the rows nor the file are ever all in memory.
//!
//! - CSV: UTF-8, a header row, RFC 3339 UTC timestamps; chunks of a few hundred KiB go to the
//!   upload as soon as they are full.
//! - XLSX: written on a blocking thread by `xlsx`, straight into a zip that goes to the
//!   upload as it is compressed; a sheet holds at most 1,048,575 data rows under its header,
//!   then the next sheet starts.
//!
//! Cells that a spreadsheet would run as a formula (OWASP's CSV injection: a value starting
//! with `=`, `+`, `-`, `@`, tab or carriage return) are defused. CSV has no other defence than
//! a leading `'`, which a spreadsheet shows as text. An XLSX string cell is never a formula:
//! the value is written unchanged, with Excel's quote-prefix cell format, so that editing the
//! cell cannot turn it into one either. XLSX cells are limited to 32,767 characters (Excel's
//! limit): a longer value is cut to 32,766 and ends in `…` (CSV keeps it whole).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{pin_mut, TryStreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db::users::UserQuery;
use crate::model::{ExportFormat, UserExportFilters};
use crate::storage::FileWriter;

mod cells;
mod xlsx;

pub use cells::{neutralise, write_timestamp, UserRow, HEADER};
use xlsx::XlsxWriter;

/// Bytes of CSV gathered before they go to the upload.
const CSV_CHUNK_BYTES: usize = 256 * 1024;
/// Rows handed to the XLSX thread at once.
const XLSX_BATCH_ROWS: usize = 1024;

/// What an attempt logs once it holds at the fault-injection point, for tests to wait on.
#[cfg(feature = "fault-injection")]
pub const HELD: &str = "fault injection: the export holds here";

/// How far one attempt has got: the rows written so far, which the worker records as the
/// export's progress.
#[derive(Debug, Default)]
pub struct Progress {
    rows: AtomicU64,
    /// Fault injection for tests: once this many rows are recorded, the export holds there
    /// until it is cancelled, interrupted or timed out (or `release` says so), so a test can
    /// act on an export under way however fast the machine is. Compiled only with the
    /// `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    hold_after_rows: Option<u64>,
    #[cfg(feature = "fault-injection")]
    release: Option<tokio::sync::watch::Receiver<bool>>,
    #[cfg(feature = "fault-injection")]
    held: std::sync::atomic::AtomicBool,
}

impl Progress {
    #[cfg(feature = "fault-injection")]
    pub fn holding_after(rows: Option<u64>, release: Option<tokio::sync::watch::Receiver<bool>>) -> Self {
        Self {
            hold_after_rows: rows,
            release,
            ..Self::default()
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    async fn record(&self, rows: u64) {
        self.rows.store(rows, Ordering::Relaxed);
        #[cfg(feature = "fault-injection")]
        if self.hold_after_rows.is_some_and(|hold| rows >= hold) && !self.held.swap(true, Ordering::Relaxed) {
            tracing::warn!(rows, "{HELD}");
            match self.release.clone() {
                Some(mut release) => drop(release.wait_for(|released| *released).await),
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// Streams the matching users into `upload` as `format`, recording the rows written in
/// `progress` as they go. Returns the number of rows; the caller completes or aborts the upload.
pub async fn write_export(
    client: &tokio_postgres::Client,
    filters: &UserExportFilters,
    format: ExportFormat,
    upload: &mut Upload,
    progress: &Progress,
) -> Result<u64> {
    let query = UserQuery::new(filters);
    // Until the rows start coming; reading them is the attempt's `export.file`.
    let step = crate::telemetry::step("export.query");
    let rows = async {
        let statement = client
            .prepare(&query.select_sql())
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
    match format {
        // CSV borrows each row's text; XLSX rows cross to another thread, so they are owned.
        ExportFormat::Csv => write_csv(rows, upload, progress).await,
        ExportFormat::Xlsx => {
            let rows = rows.map_ok(|row| UserRow {
                id: row.get(0),
                email: row.get(1),
                name: row.get(2),
                status: row.get(3),
                created_at: row.get(4),
            });
            write_xlsx(rows, upload, progress).await
        }
    }
}

/// The object being uploaded, and how many bytes went into it.
pub struct Upload {
    writer: FileWriter,
    pub bytes: u64,
    /// The upload was abandoned and the store confirmed it: nothing of it is left.
    pub aborted: bool,
}

impl Upload {
    pub fn new(writer: FileWriter) -> Self {
        Self {
            writer,
            bytes: 0,
            aborted: false,
        }
    }
}

async fn put(upload: &mut Upload, bytes: Vec<u8>) -> Result<()> {
    upload.bytes += bytes.len() as u64;
    upload.writer.put(Bytes::from(bytes)).await
}

pub async fn write_csv(
    rows: impl futures::Stream<Item = Result<tokio_postgres::Row>>,
    upload: &mut Upload,
    progress: &Progress,
) -> Result<u64> {
    pin_mut!(rows);
    let new_chunk = || csv::Writer::from_writer(Vec::with_capacity(CSV_CHUNK_BYTES + 4096));
    let mut csv = new_chunk();
    csv.write_record(HEADER)?;
    let mut count = 0u64;
    let mut id = Uuid::encode_buffer();
    let mut created_at = String::with_capacity(32);
    while let Some(row) = rows.try_next().await? {
        let id = row.get::<_, Uuid>(0).hyphenated().encode_lower(&mut id);
        created_at.clear();
        write_timestamp(&mut created_at, &row.get(4));
        csv.write_record([
            id.as_bytes(),
            neutralise(row.get(1)).as_bytes(),
            neutralise(row.get(2)).as_bytes(),
            neutralise(row.get(3)).as_bytes(),
            created_at.as_bytes(),
        ])?;
        count += 1;
        if csv.get_ref().len() >= CSV_CHUNK_BYTES {
            let chunk = std::mem::replace(&mut csv, new_chunk());
            put(upload, csv_bytes(chunk)?).await?;
            progress.record(count).await;
        }
    }
    put(upload, csv_bytes(csv)?).await?;
    progress.record(count).await;
    Ok(count)
}

fn csv_bytes(csv: csv::Writer<Vec<u8>>) -> Result<Vec<u8>> {
    csv.into_inner()
        .map_err(|error| anyhow::anyhow!("writing CSV: {}", error.error()))
}

enum XlsxInput {
    Rows(Vec<UserRow>),
    /// Every row was sent: save the workbook. A closed channel without it means "abandon".
    Finish,
}

pub async fn write_xlsx(
    rows: impl futures::Stream<Item = Result<UserRow>>,
    upload: &mut Upload,
    progress: &Progress,
) -> Result<u64> {
    pin_mut!(rows);
    let (rows_tx, rows_rx) = mpsc::channel::<XlsxInput>(4);
    let (bytes_tx, mut bytes_rx) = mpsc::channel::<Vec<u8>>(4);
    let written = Arc::new(AtomicU64::new(0));
    let thread_written = written.clone();
    let builder = tokio::task::spawn_blocking(move || {
        build_xlsx(rows_rx, bytes_tx, &thread_written, xlsx::ROWS_PER_SHEET)
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
            put(upload, chunk).await?;
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
        if self.chunk.len() >= CSV_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.chunk.is_empty() {
            let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CSV_CHUNK_BYTES + 4096));
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
    rows_per_sheet: u32,
) -> Result<u64> {
    let out = ChannelWriter {
        chunk: Vec::with_capacity(CSV_CHUNK_BYTES + 4096),
        sender: bytes,
    };
    let mut xlsx = XlsxWriter::new(out, rows_per_sheet).context("writing the XLSX file")?;
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
        rows_tx.blocking_send(XlsxInput::Rows(users.clone())).unwrap();
        rows_tx.blocking_send(XlsxInput::Finish).unwrap();
        let written = AtomicU64::new(0);
        // Three users and the header per sheet.
        let builder = std::thread::spawn(move || build_xlsx(rows_rx, bytes_tx, &written, 4));
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
            assert_eq!(rows.next().unwrap()[1].to_string(), "email");
            emails.extend(rows.map(|row| row[1].to_string()));
        }
        let sent: Vec<String> = users.iter().map(|user| user.email.clone()).collect();
        assert_eq!(emails, sent);
    }
}
