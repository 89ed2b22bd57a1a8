//! Capturing what code logs through `tracing`, for tests that check a line's target, level
//! and fields (what an operator greps for) without a formatter.

use std::sync::{Arc, Mutex, PoisonError};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One event as logged: its target, level and fields as text (`message` among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The `tracing` target, e.g. `fabric_gossip_core::handshake`.
    pub target: String,
    /// Its level.
    pub level: tracing::Level,
    /// Each field's name and value, as `Debug` writes it (a string as itself).
    pub fields: Vec<(String, String)>,
}

impl Logged {
    /// The value of field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The event's message.
    pub fn message(&self) -> &str {
        self.field("message").unwrap_or_default()
    }
}

/// Runs `f` with a subscriber that keeps every event of this thread, and returns what `f`
/// returned and the events, oldest first.
///
/// `tracing` caches, per callsite, whether any subscriber wants its events. A test binary
/// runs tests on several threads, and one of them may register a callsite, with no
/// subscriber on its thread ("never"), at the very moment another sets its subscriber: the
/// recomputation of every callsite's interest can then miss the callsite being
/// registered, whose events are skipped for the rest of the run ("connection registered"
/// seen 0 times of 2, a CI run on 2026-12-04). So the cache is rebuilt once more, with
/// this subscriber in place, before `f` runs.
pub fn captured_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<Logged>) {
    let capture = Capture::default();
    let events = capture.0.clone();
    let r = tracing::subscriber::with_default(capture, || {
        tracing::callsite::rebuild_interest_cache();
        f()
    });
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(PoisonError::into_inner));
    (r, events)
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Logged>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let m = event.metadata();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Logged {
                target: m.target().to_owned(),
                level: *m.level(),
                fields,
            });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
