//! Where the API's and the mock's log lines go: a buffer in memory, which each line is copied
//! into under a short lock, written to stdout in one `write` when it is full or every
//! [`FLUSH_INTERVAL`]. Both log a line per request, so the line must cost the request little:
//! a `write` to stdout for each cost the mock about a third of its throughput, and
//! tracing-appender's writer thread, used before, spins and yields while it waits for lines
//! (about a tenth of the mock's CPU under load). Not lossy: a full buffer is written out by
//! the line that filled it.

use std::io::{BufWriter, Stdout, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a line may wait in the buffer before it reaches stdout.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
const BUFFER_BYTES: usize = 64 * 1024;

/// The writer to give `tracing_subscriber::fmt().with_writer(…)`.
#[derive(Clone)]
pub struct LogWriter(Arc<Mutex<BufWriter<Stdout>>>);

/// Writes what is still buffered when dropped: keep it until the process ends.
pub struct FlushOnDrop(LogWriter);

impl LogWriter {
    /// The writer, with a thread that flushes it every [`FLUSH_INTERVAL`].
    pub fn start() -> (Self, FlushOnDrop) {
        let writer = Self(Arc::new(Mutex::new(BufWriter::with_capacity(
            BUFFER_BYTES,
            std::io::stdout(),
        ))));
        let flushed = writer.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flushed.flush();
            })
            .expect("a thread starts");
        (writer.clone(), FlushOnDrop(writer))
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<Stdout>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn flush(&self) {
        let _ = self.lock().flush();
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// One line being written, the buffer locked meanwhile.
pub struct LogLine<'a>(MutexGuard<'a, BufWriter<Stdout>>);

impl Write for LogLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes)
    }

    /// The flushing thread writes the buffer out; a line does not.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine(self.lock())
    }
}
