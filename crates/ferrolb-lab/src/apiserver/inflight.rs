//! Bounded requests in flight, as kube-apiserver's `--max-requests-inflight` (400) and
//! `--max-mutating-requests-inflight` (200): a request beyond its bound is refused at once with
//! 429 and `Retry-After: 1`, not queued. Long-running requests (watches, and the `proxy`,
//! `exec`, `attach`, `log`, `portforward` subresources) are not counted, and neither are
//! requests from `system:masters`, which kube-apiserver always serves (with API Priority and
//! Fairness they belong to the `exempt` priority level).
//!
//! The seat is taken once the request is authenticated and held until its answer is ready, so
//! a latency fault ([`super::faults::Effect::Delay`]) holds it as a slow kube-apiserver would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::authz::RequestAttributes;

/// kube-apiserver's default `--max-requests-inflight`.
pub const DEFAULT_READ_ONLY: usize = 400;
/// kube-apiserver's default `--max-mutating-requests-inflight`.
pub const DEFAULT_MUTATING: usize = 200;
/// `Retry-After` seconds of a refusal (kube-apiserver's).
pub const RETRY_AFTER_SECONDS: u32 = 1;
/// The body kube-apiserver's in-flight filters answer with (plain text, not a `Status`).
pub const REFUSAL_BODY: &str = "Too many requests, please try again later.\n";

/// The bounds, per kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// get, list (and any other non-mutating verb): `--max-requests-inflight`.
    pub read_only: usize,
    /// create, update, patch, delete, deletecollection: `--max-mutating-requests-inflight`.
    pub mutating: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_only: DEFAULT_READ_ONLY,
            mutating: DEFAULT_MUTATING,
        }
    }
}

/// Which bound a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `get`, `list`.
    ReadOnly,
    /// Every other verb.
    Mutating,
}

impl Kind {
    /// The `request_kind` label kube-apiserver uses: `readOnly` or `mutating`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::ReadOnly => "readOnly",
            Kind::Mutating => "mutating",
        }
    }
}

/// Long-running verbs and subresources (kube-apiserver's `BasicLongRunningRequestCheck`).
const LONG_RUNNING_VERBS: &[&str] = &["watch", "proxy"];
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];
/// Verbs kube-apiserver counts against `--max-requests-inflight`.
const NON_MUTATING_VERBS: &[&str] = &["get", "list", "watch"];

/// The bound a request counts against; `None` for requests never refused (long-running ones,
/// and those of a `system:masters` member).
pub fn classify(a: &RequestAttributes, privileged: bool) -> Option<Kind> {
    let long_running = LONG_RUNNING_VERBS.contains(&a.verb.as_str())
        || (a.resource_request && LONG_RUNNING_SUBRESOURCES.contains(&a.subresource.as_str()));
    if long_running || privileged {
        return None;
    }
    Some(if NON_MUTATING_VERBS.contains(&a.verb.as_str()) {
        Kind::ReadOnly
    } else {
        Kind::Mutating
    })
}

/// The requests in flight, counted against [`Limits`].
#[derive(Debug, Default)]
pub struct InFlight {
    limits: Limits,
    read_only: AtomicUsize,
    mutating: AtomicUsize,
    read_only_peak: AtomicUsize,
    mutating_peak: AtomicUsize,
}

/// A taken seat; dropping it frees the seat.
#[derive(Debug)]
pub struct Seat {
    owner: Arc<InFlight>,
    kind: Kind,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.owner.counter(self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Nothing in flight, bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        InFlight {
            limits,
            ..Default::default()
        }
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::ReadOnly => &self.read_only,
            Kind::Mutating => &self.mutating,
        }
    }

    fn limit(&self, kind: Kind) -> usize {
        match kind {
            Kind::ReadOnly => self.limits.read_only,
            Kind::Mutating => self.limits.mutating,
        }
    }

    /// The most requests of `kind` that were in flight at once.
    pub fn peak(&self, kind: Kind) -> usize {
        match kind {
            Kind::ReadOnly => &self.read_only_peak,
            Kind::Mutating => &self.mutating_peak,
        }
        .load(Ordering::Acquire)
    }

    /// Requests of `kind` in flight now.
    pub fn current(&self, kind: Kind) -> usize {
        self.counter(kind).load(Ordering::Acquire)
    }

    /// A seat of `kind`, or `None` when every one is taken (the request is refused).
    pub fn try_acquire(self: &Arc<Self>, kind: Kind) -> Option<Seat> {
        let limit = self.limit(kind);
        self.counter(kind)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|n| {
                match kind {
                    Kind::ReadOnly => &self.read_only_peak,
                    Kind::Mutating => &self.mutating_peak,
                }
                .fetch_max(n + 1, Ordering::AcqRel);
            })
            .map(|()| Seat {
                owner: self.clone(),
                kind,
            })
    }
}

/// kube-apiserver's refusal: 429, `Retry-After: 1`, a plain-text body.
pub fn refusal() -> Response {
    let mut resp = Response::new(Body::from(REFUSAL_BODY));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, subresource: &str) -> RequestAttributes {
        let resource = if subresource.is_empty() {
            "pods".to_string()
        } else {
            format!("pods/{subresource}")
        };
        RequestAttributes::resource(verb, "", &resource, "default", "p")
    }

    #[test]
    fn verbs_count_against_their_bound_and_long_running_requests_against_none() {
        for v in ["get", "list"] {
            assert_eq!(classify(&attrs(v, ""), false), Some(Kind::ReadOnly), "{v}");
        }
        for v in [
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
            "post",
        ] {
            assert_eq!(classify(&attrs(v, ""), false), Some(Kind::Mutating), "{v}");
        }
        assert_eq!(classify(&attrs("watch", ""), false), None);
        assert_eq!(classify(&attrs("get", "log"), false), None);
        assert_eq!(classify(&attrs("create", "exec"), false), None);
        assert_eq!(
            classify(&attrs("patch", "status"), false),
            Some(Kind::Mutating)
        );
        // system:masters is never refused
        assert_eq!(classify(&attrs("create", ""), true), None);
        assert_eq!(classify(&attrs("list", ""), true), None);
    }

    #[test]
    fn seats_beyond_the_bound_are_refused_and_freed_ones_taken_again() {
        let f = Arc::new(InFlight::new(Limits {
            read_only: 3,
            mutating: 2,
        }));
        let m1 = f.try_acquire(Kind::Mutating).unwrap();
        let m2 = f.try_acquire(Kind::Mutating).unwrap();
        assert!(f.try_acquire(Kind::Mutating).is_none(), "third mutating");
        // the other bound is separate
        let reads: Vec<Seat> = (0..3)
            .map(|_| f.try_acquire(Kind::ReadOnly).unwrap())
            .collect();
        assert!(f.try_acquire(Kind::ReadOnly).is_none());
        assert_eq!(
            (f.current(Kind::Mutating), f.current(Kind::ReadOnly)),
            (2, 3)
        );
        drop(m1);
        let m3 = f.try_acquire(Kind::Mutating).expect("a freed seat");
        assert!(f.try_acquire(Kind::Mutating).is_none());
        drop((m2, m3, reads));
        assert_eq!(
            (f.current(Kind::Mutating), f.current(Kind::ReadOnly)),
            (0, 0)
        );
        assert_eq!((f.peak(Kind::Mutating), f.peak(Kind::ReadOnly)), (2, 3));
    }

    #[test]
    fn concurrent_takers_never_exceed_the_bound() {
        let f = Arc::new(InFlight::new(Limits {
            read_only: 1,
            mutating: 5,
        }));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (f, most) = (f.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(s) = f.try_acquire(Kind::Mutating) {
                            most.fetch_max(f.current(Kind::Mutating), Ordering::SeqCst);
                            drop(s);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 5);
        assert!(f.peak(Kind::Mutating) <= 5);
        assert_eq!(f.current(Kind::Mutating), 0);
    }

    #[test]
    fn defaults_are_kube_apiservers_and_the_refusal_is_its_answer() {
        assert_eq!(
            Limits::default(),
            Limits {
                read_only: 400,
                mutating: 200
            }
        );
        let r = refusal();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
