//! Rate limiting of library log floods. openraft logs a WARN for every failed heartbeat to a
//! dead peer (`HeartbeatWorker(id=1, target=2) failed to send a heartbeat: ...`), about 20
//! lines a second with 50 ms Raft heartbeats, for as long as the peer is down: the journal
//! fills with one fact. [`RateLimited`] wraps the output layer (text, JSON or journald): the
//! first event of a kind goes through, then at most one per [`FLOOD_INTERVAL`], which says
//! how many it stood for: `... (suppressed 97 similar messages)`.
//!
//! A kind is the event's target plus its message up to the first `": "` (openraft puts the
//! peer before it and the changing error detail after it), so each peer and each message has
//! its own budget. Only openraft's WARN and lower events are limited; errors always pass.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// At most one event of a kind per this interval (after the first).
pub const FLOOD_INTERVAL: Duration = Duration::from_secs(5);
/// Kinds remembered at most; past it, kinds idle for an interval are forgotten, and if none
/// is, the event goes through untracked (better a line too many than a lost one).
pub const MAX_KINDS: usize = 1024;
/// Longest message prefix used as (part of) a kind.
const MAX_KEY_CHARS: usize = 200;

/// The pure decision: per key, the first occurrence passes, then one per `interval`, which
/// reports how many were held back since the previous one.
pub struct Limiter {
    interval: Duration,
    max_keys: usize,
    /// key -> (when the last admitted one passed, suppressed since).
    seen: HashMap<String, (Instant, u64)>,
}

impl Limiter {
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        Limiter {
            interval,
            max_keys,
            seen: HashMap::new(),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged (with the number held back
    /// since the last one logged), `None` when it is suppressed.
    pub fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some((at, suppressed)) = self.seen.get_mut(key) {
            if now.saturating_duration_since(*at) < self.interval {
                *suppressed += 1;
                return None;
            }
            let n = *suppressed;
            *at = now;
            *suppressed = 0;
            return Some(n);
        }
        if self.seen.len() >= self.max_keys {
            let interval = self.interval;
            self.seen
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < interval);
            if self.seen.len() >= self.max_keys {
                return Some(0);
            }
        }
        self.seen.insert(key.to_string(), (now, 0));
        Some(0)
    }

    pub fn kinds(&self) -> usize {
        self.seen.len()
    }
}

/// Whether an event is subject to the limiter: openraft's WARN, INFO, DEBUG and TRACE.
fn limited(meta: &Metadata<'_>) -> bool {
    *meta.level() >= Level::WARN
        && (meta.target() == "openraft" || meta.target().starts_with("openraft::"))
}

/// The kind of an event with this message.
fn kind(target: &str, message: &str) -> String {
    let head = message.split(": ").next().unwrap_or(message);
    let head: String = head.chars().take(MAX_KEY_CHARS).collect();
    format!("{target}|{head}")
}

/// Collects an event's message and whether it has other fields.
#[derive(Default)]
struct MessageOnly {
    message: String,
    other_fields: bool,
}

impl Visit for MessageOnly {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.other_fields = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use fmt::Write as _;
            let _ = write!(self.message, "{value:?}");
        } else {
            self.other_fields = true;
        }
    }
}

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Wraps an output layer and rate-limits openraft's repeated events on their way to it.
pub struct RateLimited<L> {
    inner: L,
    limiter: Mutex<Limiter>,
    clock: Clock,
}

impl<L> RateLimited<L> {
    pub fn new(inner: L) -> Self {
        RateLimited::with_clock(inner, FLOOD_INTERVAL, Arc::new(Instant::now))
    }

    fn with_clock(inner: L, interval: Duration, clock: Clock) -> Self {
        RateLimited {
            inner,
            limiter: Mutex::new(Limiter::new(interval, MAX_KINDS)),
            clock,
        }
    }
}

impl<S, L> Layer<S> for RateLimited<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber)
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber)
    }

    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, ctx)
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_record(span, values, ctx)
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_follows_from(span, follows, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !limited(meta) {
            return self.inner.on_event(event, ctx);
        }
        let mut v = MessageOnly::default();
        event.record(&mut v);
        let key = kind(meta.target(), &v.message);
        let verdict = match self.limiter.lock() {
            Ok(mut l) => l.admit(&key, (self.clock)()),
            Err(_) => Some(0),
        };
        let suppressed = match verdict {
            None => return,
            Some(0) => return self.inner.on_event(event, ctx),
            Some(n) => n,
        };
        // Rewrite the message to say what was held back. Events with structured fields
        // besides the message pass as they are (openraft's use only the message).
        let Some(field) = meta.fields().field("message") else {
            return self.inner.on_event(event, ctx);
        };
        if v.other_fields {
            return self.inner.on_event(event, ctx);
        }
        let text = format!(
            "{} (suppressed {suppressed} similar messages in the last {:?})",
            v.message,
            self.limiter
                .lock()
                .map(|l| l.interval)
                .unwrap_or(FLOOD_INTERVAL)
        );
        let value: &dyn tracing::Value = &text.as_str();
        let values = [(&field, Some(value))];
        let set = meta.fields().value_set(&values);
        let rewritten = if event.is_contextual() {
            Event::new(meta, &set)
        } else {
            Event::new_child_of(event.parent().cloned(), meta, &set)
        };
        self.inner.on_event(&rewritten, ctx)
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx)
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx)
    }

    fn on_id_change(&self, old: &tracing::span::Id, new: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.inner.max_level_hint()
    }

    /// # Safety
    /// As `Layer::downcast_raw`: answers for this type, else asks the wrapped layer.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded unchanged to the wrapped layer, which upholds the contract.
        unsafe { self.inner.downcast_raw(id) }
    }
}

/// How the daemon writes its log when not under journald (`quorate run --log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn first_passes_then_one_per_interval_with_the_count() {
        let mut l = Limiter::new(Duration::from_secs(5), 16);
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(l.admit("a", s(0)), Some(0));
        for i in 1..=99 {
            assert_eq!(l.admit("a", s(i * 50)), None, "occurrence {i}");
        }
        // Another kind (another peer) has its own budget.
        assert_eq!(l.admit("b", s(100)), Some(0));
        assert_eq!(l.admit("a", s(5_000)), Some(99));
        assert_eq!(l.admit("a", s(5_001)), None);
        assert_eq!(l.admit("a", s(10_001)), Some(1));
        // Quiet for long: the next one passes and reports nothing held back.
        assert_eq!(l.admit("a", s(60_000)), Some(0));
    }

    #[test]
    fn the_kind_table_is_bounded() {
        let mut l = Limiter::new(Duration::from_secs(5), 4);
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(l.admit(&format!("k{i}"), t0), Some(0));
        }
        // Full and nothing idle: passes untracked.
        assert_eq!(l.admit("k9", t0), Some(0));
        assert_eq!(l.admit("k9", t0), Some(0));
        assert_eq!(l.kinds(), 4);
        // An interval later the idle kinds make room.
        let later = t0 + Duration::from_secs(6);
        assert_eq!(l.admit("k9", later), Some(0));
        assert_eq!(l.admit("k9", later), None);
        assert!(l.kinds() <= 4);
    }

    #[test]
    fn kinds_split_on_peer_and_message_not_on_detail() {
        let t = "openraft::core::heartbeat::worker";
        let a = kind(
            t,
            "HeartbeatWorker(id=1, target=2) failed to send a heartbeat: Ok(Err(X))",
        );
        let b = kind(
            t,
            "HeartbeatWorker(id=1, target=2) failed to send a heartbeat: Ok(Err(Y))",
        );
        let c = kind(
            t,
            "HeartbeatWorker(id=1, target=3) failed to send a heartbeat: Ok(Err(X))",
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// A shared buffer the fmt layer writes into.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Through a real fmt layer: a flood of one openraft warning becomes its first line and
    /// one line per interval that counts the rest; other targets and errors are untouched.
    #[test]
    fn a_flood_through_the_layer_becomes_a_few_counted_lines() {
        let buf = Buf::default();
        let w = buf.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || w.clone());
        let t0 = Instant::now();
        let ms = Arc::new(AtomicU64::new(0));
        let clock_ms = ms.clone();
        let clock: Clock =
            Arc::new(move || t0 + Duration::from_millis(clock_ms.load(Ordering::Relaxed)));
        let layer = RateLimited::with_clock(fmt, Duration::from_secs(5), clock);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..200u64 {
                ms.store(i * 50, Ordering::Relaxed);
                tracing::warn!(
                    target: "openraft::core::heartbeat::worker",
                    "HeartbeatWorker(id=1, target=2) failed to send a heartbeat: Err({i})"
                );
                tracing::warn!(target: "quorate::node", "our own warning {i}");
            }
            tracing::error!(target: "openraft::core", "an openraft error");
            tracing::error!(target: "openraft::core", "an openraft error");
        });
        let text = String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        let hb: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("failed to send a heartbeat"))
            .collect();
        // 0 ms passes; 5000 ms reports 99 held back; 9950 ms (the last) is held back.
        assert_eq!(hb.len(), 2, "{text}");
        assert!(
            hb[0].contains("Err(0)") && !hb[0].contains("suppressed"),
            "{text}"
        );
        assert!(
            hb[1].contains("Err(100)") && hb[1].contains("(suppressed 99 similar messages"),
            "{text}"
        );
        assert_eq!(text.matches("our own warning").count(), 200);
        assert_eq!(text.matches("an openraft error").count(), 2);
    }
}
