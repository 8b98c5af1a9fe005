//! Watch streams: newline-delimited JSON `WatchEvent`s read from the store's history.
//!
//! The stream is a plain `futures::Stream` owned by the response body: when the client goes away
//! hyper drops the body and with it the stream; no task is spawned per watch.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Metrics;
use super::resources::ResourceDef;
use super::store::{Event, EventKind, Filter, Store};

/// What a watch request asked for.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// The watched resource (its version decides the `apiVersion` of streamed objects).
    pub def: ResourceDef,
    /// Namespace / label / field filter.
    pub filter: Filter,
    /// Start after this resourceVersion; `None` starts with synthetic ADDED events for the
    /// current objects (`resourceVersion` unset or `"0"`).
    pub from: Option<u64>,
    /// `sendInitialEvents=true`: ADDED for current objects, then a BOOKMARK marking their end.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`: the stream ends after this long.
    pub timeout: Duration,
    /// Interval between BOOKMARK events when bookmarks are allowed.
    pub bookmark_interval: Duration,
    /// Stream objects as one-row `Table`s (`kubectl get -w`).
    pub table: bool,
}

/// Counts the watch as open for as long as the stream lives.
struct Guard(Arc<Store>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.watch_closed();
    }
}

struct State {
    store: Arc<Store>,
    req: WatchRequest,
    resource: String,
    queue: VecDeque<Bytes>,
    last: u64,
    rx: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    deadline: Instant,
    next_bookmark: Instant,
    done: bool,
    /// Table column definitions were sent (only the first table event carries them).
    headers_sent: bool,
    _guard: Guard,
}

impl State {
    /// The object as the client wants to see it.
    fn present(&mut self, obj: &Value) -> Value {
        if self.req.table {
            let t = super::table::table(&self.req.def, [obj], None, !self.headers_sent);
            self.headers_sent = true;
            t
        } else {
            as_version(&self.req.def, obj)
        }
    }
}

/// One watch event line, `{"type":…,"object":…}` with `type` first as kube-apiserver writes
/// it. Clients decode the event as a tagged enum: with the object first (the order a sorted
/// JSON map gives) they must buffer the whole object before they know the event's kind,
/// which makes every watch event here costlier to decode than a real server's.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = Vec::with_capacity(256);
    v.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut v, kind).expect("a string serializes");
    v.extend_from_slice(b",\"object\":");
    serde_json::to_writer(&mut v, object).expect("a JSON value serializes");
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

/// The object as served by `def`'s version.
pub fn as_version(def: &ResourceDef, obj: &Value) -> Value {
    let mut o = obj.clone();
    if o.get("apiVersion").and_then(Value::as_str) != Some(def.api_version().as_str()) {
        o["apiVersion"] = json!(def.api_version());
    }
    o
}

/// The watch event a stored event turns into for this filter, if any.
fn render(st: &mut State, e: &Event) -> Option<Bytes> {
    let now = st.req.filter.matches(&e.object);
    let before = e.prev.as_ref().is_some_and(|p| st.req.filter.matches(p));
    let kind = match e.kind {
        EventKind::Added if now => "ADDED",
        EventKind::Modified if now && before => "MODIFIED",
        EventKind::Modified if now => "ADDED",
        EventKind::Modified if before => "DELETED",
        EventKind::Deleted if now || before => "DELETED",
        _ => return None,
    };
    Some(line(kind, &st.present(&e.object)))
}

/// Opens a watch stream. It ends on `timeout`, on `shutdown`, after an ERROR event (e.g. 410
/// Gone when `from` is older than the retained history) or when the client disconnects.
pub fn stream(
    store: Arc<Store>,
    req: WatchRequest,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    store.watch_opened();
    let now = Instant::now();
    let mut st = State {
        rx: store.subscribe(),
        resource: req.def.storage_key(),
        queue: VecDeque::new(),
        last: 0,
        shutdown,
        metrics,
        deadline: now + req.timeout,
        next_bookmark: now + req.bookmark_interval,
        done: false,
        headers_sent: false,
        _guard: Guard(store.clone()),
        store,
        req,
    };
    st.rx.borrow_and_update();
    match st.req.from {
        Some(rv) if !st.req.send_initial_events => st.last = rv,
        _ => {
            let (items, rv) = st.store.list(&st.req.def, &st.req.filter);
            for o in items {
                st.queue
                    .push_back(line("ADDED", &as_version(&st.req.def, &o)));
            }
            st.last = rv;
            if st.req.send_initial_events && st.req.bookmarks {
                st.queue.push_back(bookmark(&st.req.def, rv, true));
            }
        }
    }
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.queue.pop_front() {
                st.metrics.watch_events.inc();
                return Some((Ok(b), st));
            }
            if st.done || *st.shutdown.borrow() {
                return None;
            }
            st.rx.borrow_and_update();
            match st.store.events_since(&st.resource, st.last) {
                Err(e) => {
                    st.metrics.watch_gone.inc();
                    st.queue.push_back(line("ERROR", &e.status()));
                    st.done = true;
                    continue;
                }
                Ok((events, upto)) => {
                    for e in &events {
                        if let Some(b) = render(&mut st, e) {
                            st.queue.push_back(b);
                        }
                    }
                    st.last = upto;
                    if !st.queue.is_empty() {
                        continue;
                    }
                }
            }
            let bookmarks = st.req.bookmarks;
            tokio::select! {
                r = st.rx.changed() => {
                    if r.is_err() {
                        st.done = true;
                    }
                }
                _ = tokio::time::sleep_until(st.deadline) => st.done = true,
                _ = tokio::time::sleep_until(st.next_bookmark), if bookmarks => {
                    st.queue.push_back(bookmark(&st.req.def, st.last, false));
                    st.next_bookmark = Instant::now() + st.req.bookmark_interval;
                }
                r = st.shutdown.changed() => {
                    if r.is_err() || *st.shutdown.borrow() {
                        st.done = true;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_names_its_type_before_its_object() {
        let obj = json!({"metadata": {"name": "a"}, "apiVersion": "v1", "kind": "Service"});
        let l = line("MODIFIED", &obj);
        let text = std::str::from_utf8(&l).unwrap();
        assert!(
            text.starts_with(r#"{"type":"MODIFIED","object":{"#),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        let back: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, json!({"type": "MODIFIED", "object": obj}));
    }
}
