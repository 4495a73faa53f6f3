//! Logs go to journald with structured fields (`CAMERA=`, `TRIGGER=`, `EVENT_ID=` from the
//! `log` key-values) when stderr is connected to the journal, and to stderr otherwise.
//! The level comes from `RUST_LOG` (a plain level) when set, else from `log.level`.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

pub fn init(config_level: &str) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| crate::config::log_level(&l))
        .or_else(|| crate::config::log_level(config_level))
        .unwrap_or(LevelFilter::Info);
    let journal = systemd_journal_logger::connected_to_journal()
        .then(systemd_journal_logger::JournalLog::new)
        .and_then(Result::ok);
    let inner: Box<dyn Log> = match journal {
        Some(j) => Box::new(j.with_syslog_identifier("lookout".into())),
        None => Box::new(Stderr),
    };
    if log::set_boxed_logger(Box::new(Filter(inner))).is_ok() {
        log::set_max_level(level);
    }
}

/// Ours at the configured level; dependencies at warn and above only, and never the span
/// enter/exit records that `tracing`'s log bridge emits for rumqttd.
struct Filter(Box<dyn Log>);

impl Log for Filter {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let target = metadata.target();
        target.starts_with("lookout")
            || (metadata.level() <= Level::Warn
                && !target.starts_with("tracing")
                && !target.starts_with("rumqttd"))
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// `time LEVEL message key=value …` on stderr.
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        struct Kv(String);
        impl<'kvs> log::kv::VisitSource<'kvs> for Kv {
            fn visit_pair(
                &mut self,
                key: log::kv::Key<'kvs>,
                value: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push_str(&format!(" {key}={value}"));
                Ok(())
            }
        }
        let mut kv = Kv(String::new());
        let _ = record.key_values().visit(&mut kv);
        let _ = writeln!(
            std::io::stderr().lock(),
            "{} {:5} {}{}",
            crate::clock::rfc3339(std::time::SystemTime::now()),
            record.level(),
            record.args(),
            kv.0
        );
    }

    fn flush(&self) {}
}
