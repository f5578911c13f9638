//! Where the API's and the mock's log lines go: a buffer in memory, which each line is copied
//! into under a short lock, written to stdout in one `write` when it is full or every
//! [`FLUSH_INTERVAL`]. Both log a line per request, so the line must cost the request little:
//! a `write` to stdout for each cost the mock about a third of its throughput, and
//! tracing-appender's writer thread, used before, spins and yields while it waits for lines
//! (about a tenth of the mock's CPU under load). Not lossy: a full buffer is written out by
//! the line that filled it.

use std::io::{Stdout, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a line may wait in the buffer before it reaches stdout.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
const BUFFER_BYTES: usize = 64 * 1024;

/// The writer to give `tracing_subscriber::fmt().with_writer(…)`.
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

struct Shared {
    /// Lines not yet written.
    buffer: Mutex<Vec<u8>>,
    /// Held while a full buffer is written, so buffers reach stdout in order; lines go on
    /// into the next buffer meanwhile (stdout may be a pipe its reader drains late).
    stdout: Mutex<Stdout>,
}

/// Writes what is still buffered when dropped: keep it until the process ends.
pub struct FlushOnDrop(LogWriter);

impl LogWriter {
    /// The writer, with a thread that flushes it every [`FLUSH_INTERVAL`].
    pub fn start() -> (Self, FlushOnDrop) {
        let writer = Self(Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(BUFFER_BYTES)),
            stdout: Mutex::new(std::io::stdout()),
        }));
        let flushed = writer.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flushed.write_out(flushed.buffer());
            })
            .expect("a thread starts");
        (writer.clone(), FlushOnDrop(writer))
    }

    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the buffer's lines to stdout, releasing the buffer first.
    fn write_out(&self, mut buffer: MutexGuard<'_, Vec<u8>>) {
        if buffer.is_empty() {
            return;
        }
        let lines = std::mem::replace(&mut *buffer, Vec::with_capacity(BUFFER_BYTES));
        let mut stdout = self.0.stdout.lock().unwrap_or_else(PoisonError::into_inner);
        drop(buffer);
        let _ = stdout.write_all(&lines);
        let _ = stdout.flush();
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.write_out(self.0.buffer());
    }
}

/// One line being written: the buffer is locked meanwhile, and written out after the line
/// when full.
pub struct LogLine<'a> {
    writer: &'a LogWriter,
    buffer: Option<MutexGuard<'a, Vec<u8>>>,
}

impl Write for LogLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer
            .get_or_insert_with(|| self.writer.buffer())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    /// The flushing thread writes the buffer out; a line does not.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            if buffer.len() >= BUFFER_BYTES {
                self.writer.write_out(buffer);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine {
            writer: self,
            buffer: None,
        }
    }
}
