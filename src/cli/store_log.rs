//! The object store's retries, on stderr: object_store retries transient failures (timeouts,
//! 5xx, throttling, connection resets) itself and reports each through `tracing`; this layer
//! prints those reports as `dbbackup: object store: <cause>, backing off ..., retry N of M`.

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

struct StoreLog;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for StoreLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("object_store") || *meta.level() > tracing::Level::INFO {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        eprintln!("dbbackup: object store: {}", message.0);
    }
}

/// Installs the layer for the whole process.
pub fn install() {
    let _ = tracing_subscriber::registry().with(StoreLog).try_init();
}
