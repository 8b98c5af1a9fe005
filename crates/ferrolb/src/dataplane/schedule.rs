//! Announcement schedule (pure): when to send gratuitous ARP / unsolicited NA bursts.
//!
//! Each key (an `(ip, interface)` pair in the dataplane) gets a burst immediately when it
//! is started, then one at each offset of the backoff schedule (default +0.1, +0.5, +1.1,
//! +2.2, +4.4 s, covering the ≥5 s window Linux neighbour caches need), and, if a refresh
//! period is configured, forever every `refresh` after the last backoff step.
//! Time is passed in, so the schedule is exhaustively testable without sleeping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The default backoff offsets (relative to the announcement).
pub const DEFAULT_BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_millis(1100),
    Duration::from_millis(2200),
    Duration::from_millis(4400),
];

#[derive(Debug, Clone)]
struct Entry {
    start: Instant,
    /// Index of the next backoff step; `== offsets.len()` once in refresh mode.
    step: usize,
    next: Option<Instant>,
}

/// Burst schedule for a set of keys.
#[derive(Debug, Clone)]
pub struct Schedule<K: Ord + Clone> {
    offsets: Vec<Duration>,
    refresh: Option<Duration>,
    entries: BTreeMap<K, Entry>,
}

impl<K: Ord + Clone> Schedule<K> {
    /// A schedule with the given backoff offsets (sorted ascending by the constructor)
    /// and optional periodic refresh.
    pub fn new(mut offsets: Vec<Duration>, refresh: Option<Duration>) -> Self {
        offsets.sort();
        Self {
            offsets,
            refresh: refresh.filter(|r| !r.is_zero()),
            entries: BTreeMap::new(),
        }
    }

    /// (Re)starts the schedule for `key` at `now`. The caller sends the immediate burst;
    /// the next one is due at `now + offsets[0]`.
    pub fn start(&mut self, key: K, now: Instant) {
        let mut e = Entry {
            start: now,
            step: 0,
            next: None,
        };
        e.next = self.next_after(&e);
        self.entries.insert(key, e);
    }

    /// Stops bursting for `key`.
    pub fn stop(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Stops every key matching `pred`.
    pub fn stop_where(&mut self, mut pred: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| !pred(k));
    }

    fn next_after(&self, e: &Entry) -> Option<Instant> {
        if let Some(off) = self.offsets.get(e.step) {
            return Some(e.start + *off);
        }
        let last = self.offsets.last().copied().unwrap_or_default();
        let r = self.refresh?;
        let k = (e.step - self.offsets.len()) as u32 + 1;
        Some(e.start + last + r * k)
    }

    /// Keys whose burst is due at `now`; advances them (a burst missed by oversleeping
    /// is sent once, not several times). Finished keys are forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        let keys: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, e)| e.next.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let mut e = self.entries[&k].clone();
            while e.next.is_some_and(|t| t <= now) {
                e.step += 1;
                e.next = self.next_after(&e);
            }
            if e.next.is_none() {
                done.push(k.clone());
            }
            self.entries.insert(k.clone(), e);
            out.push(k);
        }
        for k in done {
            self.entries.remove(&k);
        }
        out
    }

    /// When the next burst is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.next).min()
    }

    /// Number of keys still scheduled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives the schedule with a 1 ms clock and records at which offsets `key` fired.
    fn fire_times(s: &mut Schedule<u32>, t0: Instant, until_ms: u64) -> Vec<u64> {
        let mut out = vec![];
        for t in 0..=until_ms {
            if s.due(t0 + ms(t)).contains(&1) {
                out.push(t);
            }
        }
        out
    }

    #[test]
    fn default_backoff_fires_at_each_offset_then_stops() {
        let t0 = Instant::now();
        let mut s = Schedule::new(DEFAULT_BACKOFF.to_vec(), None);
        s.start(1, t0);
        assert_eq!(s.next_deadline(), Some(t0 + ms(100)));
        assert_eq!(
            fire_times(&mut s, t0, 10_000),
            vec![100, 500, 1100, 2200, 4400]
        );
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn refresh_continues_periodically_after_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![ms(10), ms(20)], Some(ms(100)));
        s.start(1, t0);
        assert_eq!(fire_times(&mut s, t0, 350), vec![10, 20, 120, 220, 320]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn restart_resets_and_stop_cancels() {
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![ms(10), ms(20)], None);
        s.start(1, t0);
        s.start(2, t0);
        assert_eq!(s.due(t0 + ms(10)), vec![1, 2]);
        s.start(1, t0 + ms(15));
        s.stop(&2);
        assert_eq!(s.due(t0 + ms(20)), Vec::<u32>::new());
        assert_eq!(s.due(t0 + ms(25)), vec![1]);
        assert_eq!(s.due(t0 + ms(35)), vec![1]);
        assert!(s.is_empty());
        s.start(3, t0);
        s.start(4, t0);
        s.stop_where(|k| *k == 3);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn oversleeping_fires_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(DEFAULT_BACKOFF.to_vec(), None);
        s.start(1, t0);
        assert_eq!(s.due(t0 + ms(3000)), vec![1]);
        assert_eq!(s.next_deadline(), Some(t0 + ms(4400)));
    }

    #[test]
    fn empty_offsets_without_refresh_never_fire() {
        let t0 = Instant::now();
        let mut s = Schedule::<u32>::new(vec![], None);
        s.start(1, t0);
        assert_eq!(s.next_deadline(), None);
        assert!(s.due(t0 + ms(100_000)).is_empty());
    }

    proptest! {
        #[test]
        fn fires_exactly_once_per_offset(mut offs in proptest::collection::btree_set(1u64..2000, 0..8)) {
            let offs: Vec<u64> = std::mem::take(&mut offs).into_iter().collect();
            let t0 = Instant::now();
            let mut s = Schedule::new(offs.iter().map(|&o| ms(o)).collect(), None);
            s.start(1, t0);
            prop_assert_eq!(fire_times(&mut s, t0, 2500), offs);
        }
    }
}
