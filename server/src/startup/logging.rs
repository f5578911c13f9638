//! One stream of logs through `tracing` (`exports_listener::log::init`: JSON, or text for
//! people on a terminal); dropshot's slog records are bridged into it.

use std::fmt::Write as _;

/// dropshot logs through slog. Its per-request lines would duplicate ours (which carry the
/// user and operation), so only its warnings and errors are forwarded.
pub fn dropshot_logger() -> slog::Logger {
    use slog::Drain;
    let drain = slog::LevelFilter::new(DropshotDrain, slog::Level::Warning).fuse();
    slog::Logger::root(drain, slog::o!())
}

/// dropshot's records as `tracing` events of the `dropshot` target, their key-value pairs in
/// one `dropshot` field. The `uri` dropshot puts on every request's records loses its query
/// string: a download link's query carries its signature, which must never reach a log.
struct DropshotDrain;

impl slog::Drain for DropshotDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let (message, fields) = (record.msg().to_string(), fields.0);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "dropshot", dropshot = %fields, "{message}")
            }
            slog::Level::Warning => tracing::warn!(target: "dropshot", dropshot = %fields, "{message}"),
            slog::Level::Info => tracing::info!(target: "dropshot", dropshot = %fields, "{message}"),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::debug!(target: "dropshot", dropshot = %fields, "{message}")
            }
        }
        Ok(())
    }
}

struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let mut value = value.to_string();
        if key == "uri" {
            if let Some(query) = value.find('?') {
                value.replace_range(query.., "?…");
            }
        }
        let separator = if self.0.is_empty() { "" } else { " " };
        let _ = write!(self.0, "{separator}{key}={value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dropshot_records_lose_the_query_of_their_uri() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let request_log = super::dropshot_logger().new(slog::o!(
                "method" => "GET",
                "uri" => "/downloads/5f0c?expires=1790000000&signature=c2VjcmV0LXNpZ25hdHVyZQ",
            ));
            slog::warn!(request_log, "request handling cancelled (client disconnected)");
            slog::info!(request_log, "request completed");
        });
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "only warnings and errors: {logged}");
        assert!(logged.contains("request handling cancelled"), "{logged}");
        assert!(logged.contains("uri=/downloads/5f0c?…"), "{logged}");
        assert!(!logged.contains("signature"), "{logged}");
        assert!(!logged.contains("c2VjcmV0"), "{logged}");
    }
}
