//! Where the API's and the mock's log lines go: a buffer in memory, which each line is copied
//! into under a short lock, written to stdout in one `write` when it is full or every
//! [`FLUSH_INTERVAL`]. Both log a line per request, so the line must cost the request little:
//! a `write` to stdout for each cost the mock about a third of its throughput, and
//! tracing-appender's writer thread, used before, spins and yields while it waits for lines
//! (about a tenth of the mock's CPU under load). Not lossy: a full buffer is written out by
//! the line that filled it.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
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
    /// Stdout, held while a full buffer is written, so buffers reach it in order; lines go
    /// on into the next buffer meanwhile (stdout may be a pipe its reader drains late).
    out: Mutex<Box<dyn Write + Send>>,
}

/// Writes what is still buffered when dropped: keep it until the process ends.
pub struct FlushOnDrop(LogWriter);

impl LogWriter {
    /// The writer, with a thread that flushes it every [`FLUSH_INTERVAL`].
    pub fn start() -> (Self, FlushOnDrop) {
        Self::writing_to(Box::new(std::io::stdout()))
    }

    fn writing_to(out: Box<dyn Write + Send>) -> (Self, FlushOnDrop) {
        let writer = Self(Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(BUFFER_BYTES)),
            out: Mutex::new(out),
        }));
        let flushed: Weak<Shared> = Arc::downgrade(&writer.0);
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_INTERVAL);
                let Some(shared) = flushed.upgrade() else {
                    break; // every writer is gone
                };
                let writer = LogWriter(shared);
                writer.write_out(writer.buffer());
            })
            .expect("a thread starts");
        (writer.clone(), FlushOnDrop(writer))
    }

    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the buffer's lines out, releasing the buffer first.
    fn write_out(&self, mut buffer: MutexGuard<'_, Vec<u8>>) {
        if buffer.is_empty() {
            return;
        }
        let lines = std::mem::replace(&mut *buffer, Vec::with_capacity(BUFFER_BYTES));
        let mut out = self.0.out.lock().unwrap_or_else(PoisonError::into_inner);
        drop(buffer);
        let _ = out.write_all(&lines);
        let _ = out.flush();
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

/// How log lines are written: JSON for machines (one object a line, its fields at the top
/// level), text for people (a time, a level, a target and the fields, coloured on a terminal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Text when stdout is a terminal, JSON when it is not (a file, a pipe, an orchestrator).
    Auto,
    Json,
    Text,
}

/// The variable that asks for a format: `auto` (the default), `json` or `text`.
pub const LOG_FORMAT_VARIABLE: &str = "EXPORTS_LOG_FORMAT";

impl LogFormat {
    /// The format `EXPORTS_LOG_FORMAT` asks for; `Auto` when it is unset.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(LOG_FORMAT_VARIABLE) {
            Err(_) => Ok(Self::Auto),
            Ok(value) => match value.as_str() {
                "" | "auto" => Ok(Self::Auto),
                "json" => Ok(Self::Json),
                "text" => Ok(Self::Text),
                other => Err(format!(
                    "{LOG_FORMAT_VARIABLE} is `auto`, `json` or `text`, not `{other}`"
                )),
            },
        }
    }

    /// Whether lines are text for people, when stdout is (or is not) a terminal.
    pub fn is_text(self, terminal: bool) -> bool {
        match self {
            Self::Auto => terminal,
            Self::Json => false,
            Self::Text => true,
        }
    }
}

/// Starts the process's `tracing` logs, as the API, the worker and the mock write them: in
/// `EXPORTS_LOG_FORMAT`'s format, at `RUST_LOG`'s level (`info` by default), through a
/// [`LogWriter`] on stdout. Keep the guard until the process ends: dropping it writes out what
/// is still buffered. A format it does not know is an error, said before any line.
pub fn init() -> Result<FlushOnDrop, String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let format = LogFormat::from_env()?;
    let terminal = std::io::stdout().is_terminal();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (stdout, flushed_on_exit) = LogWriter::start();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stdout);
    let _ = match format.is_text(terminal) {
        true => logs.compact().with_ansi(terminal).try_init(),
        false => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    Ok(flushed_on_exit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// What the writer wrote, for the test to read.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Written {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn log(writer: &LogWriter, line: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_is_written_once_and_in_each_threads_order() {
        let written = Written::default();
        let (writer, flushed_on_exit) = LogWriter::writing_to(Box::new(written.clone()));
        // Four threads, together many buffers' worth, so full buffers are written out while
        // the other threads go on logging.
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for line in 0..20_000 {
                        log(&writer, &format!("thread {thread} line {line}\n"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(flushed_on_exit);
        let text = written.text();
        for thread in 0..4 {
            let prefix = format!("thread {thread} line ");
            let lines: Vec<usize> = text
                .lines()
                .filter_map(|line| line.strip_prefix(&prefix))
                .map(|number| number.parse().unwrap())
                .collect();
            assert_eq!(lines, (0..20_000).collect::<Vec<_>>(), "thread {thread}");
        }
        assert_eq!(text.lines().count(), 80_000);
    }

    #[test]
    fn a_lone_line_is_written_out_without_waiting_for_more() {
        let written = Written::default();
        let (writer, _flushed_on_exit) = LogWriter::writing_to(Box::new(written.clone()));
        log(&writer, "alone\n");
        // A generous bound on the flushing thread's interval, not what is tested.
        let deadline = Instant::now() + Duration::from_secs(30);
        while written.text() != "alone\n" {
            assert!(Instant::now() < deadline, "the line was never written out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn text_on_a_terminal_json_elsewhere_unless_asked() {
        use super::LogFormat;
        assert!(LogFormat::Auto.is_text(true));
        assert!(!LogFormat::Auto.is_text(false));
        assert!(!LogFormat::Json.is_text(true));
        assert!(LogFormat::Text.is_text(false));
    }
}
