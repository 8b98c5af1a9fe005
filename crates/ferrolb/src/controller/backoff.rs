//! Retry timing of failed writes, per object (pure): exponential from
//! [`FIRST_RETRY`], doubling on each failure in a row, capped at [`MAX_RETRY`]; a success
//! forgets the object. Service status writes (through the kube-runtime error policy) and
//! pool status writes use the same rule, so one failing object never makes the controller
//! hammer the API server, and never delays the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Delay before the first retry.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// The delay after `failures` failures in a row (1 = the first failure).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY)
}

/// Failures in a row and the earliest next attempt, per object.
#[derive(Clone, Debug)]
pub struct Retries<K> {
    by_key: BTreeMap<K, (u32, Instant)>,
}

impl<K> Default for Retries<K> {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Retries<K> {
    /// Whether `key` may be attempted at `now` (it never failed, or its delay is over).
    pub fn due(&self, key: &K, now: Instant) -> bool {
        self.by_key.get(key).is_none_or(|(_, at)| now >= *at)
    }

    /// Records a failure at `now`; returns the delay before the next attempt.
    pub fn failed(&mut self, key: &K, now: Instant) -> Duration {
        let n = self.by_key.get(key).map_or(1, |(n, _)| n.saturating_add(1));
        let d = delay(n);
        self.by_key.insert(key.clone(), (n, now + d));
        d
    }

    /// Records a success: `key` starts afresh.
    pub fn succeeded(&mut self, key: &K) {
        self.by_key.remove(key);
    }

    /// Failures in a row of `key`.
    pub fn failures(&self, key: &K) -> u32 {
        self.by_key.get(key).map_or(0, |(n, _)| *n)
    }

    /// The earliest pending retry, if any object failed.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_key.values().map(|(_, at)| *at).min()
    }

    /// Forgets the objects `keep` rejects (deleted ones).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.by_key.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        let ms = |n| delay(n).as_millis();
        assert_eq!(
            (ms(1), ms(2), ms(3), ms(9), ms(10), ms(11), ms(u32::MAX)),
            (100, 200, 400, 25_600, 30_000, 30_000, 30_000)
        );
        assert_eq!(delay(0), FIRST_RETRY);
    }

    #[test]
    fn per_object_retries() {
        let t0 = Instant::now();
        let mut r: Retries<&str> = Retries::default();
        assert!(r.due(&"a", t0));
        assert_eq!(r.next_due(), None);
        // "a" keeps failing: its delay grows; "b" is not held back by it.
        let mut t = t0;
        let mut seen = Vec::new();
        for _ in 0..12 {
            assert!(r.due(&"a", t));
            let d = r.failed(&"a", t);
            assert!(!r.due(&"a", t));
            assert!(r.due(&"b", t));
            seen.push(d.as_millis());
            t += d;
        }
        assert_eq!(
            seen,
            [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000, 30_000]
        );
        assert_eq!(r.failures(&"a"), 12);
        assert_eq!(r.next_due(), Some(t));
        // Twelve failures took about 2 minutes, not 12 × 1.3 s.
        assert!(t - t0 > Duration::from_secs(110));
        r.failed(&"b", t0);
        assert_eq!(r.next_due(), Some(t0 + FIRST_RETRY));
        // A success forgets the object; so does its deletion.
        r.succeeded(&"a");
        assert_eq!(r.failures(&"a"), 0);
        assert!(r.due(&"a", t0));
        r.retain(|k| *k != "b");
        assert_eq!(r.next_due(), None);
    }
}
