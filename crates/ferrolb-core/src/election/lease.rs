//! Fencing, liveness and owner-record claims as pure decisions (rules in the module doc
//! of [`crate::election`]). The speaker shell measures times on its monotonic clock,
//! performs the API calls, and asks these functions what to do.

use std::time::{Duration, Instant};

/// The smallest allowed gap between `renew_deadline` and `lease_duration`: time for the
/// dataplane to stop answering plus clock-rate and scheduling slack.
pub const MIN_FENCE_MARGIN: Duration = Duration::from_millis(250);

/// Lease timings of the per-node speaker Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseClock {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// The longest accepted lease duration (keeps every deadline computation in range).
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(3600);

/// Invalid [`LeaseClock`] timings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseClockError {
    /// `lease_duration` exceeds [`MAX_LEASE_DURATION`].
    #[error("lease duration {0:?} exceeds {MAX_LEASE_DURATION:?}")]
    LeaseTooLong(Duration),
    /// `renew_deadline + MIN_FENCE_MARGIN > lease_duration`.
    #[error("renew deadline {renew_deadline:?} must be at least {MIN_FENCE_MARGIN:?} shorter than the lease duration {lease_duration:?}")]
    DeadlineTooLong {
        /// Given lease duration.
        lease_duration: Duration,
        /// Given renew deadline.
        renew_deadline: Duration,
    },
    /// `retry_period` is zero or does not fit twice into `renew_deadline`
    /// (a single failed renewal must not fence the node).
    #[error("retry period {retry_period:?} must be non-zero and at most half the renew deadline {renew_deadline:?}")]
    RetryTooLong {
        /// Given retry period.
        retry_period: Duration,
        /// Given renew deadline.
        renew_deadline: Duration,
    },
}

/// Default lease duration (`--lease-duration`): crash failover on the Lease rules alone is
/// this plus a fresh read, one claim write and the first gratuitous packet, under 3 s.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_millis(2000);
/// Default renew deadline (`--renew-deadline`): leaves an 800 ms fencing margin below the
/// lease duration for API latency, scheduling and clock-rate differences.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_millis(1200);
/// Default renewal interval (`--retry-period`): four attempts fit in the renew deadline, so
/// one slow request never fences the node; costs 3.3 Lease writes per second per node.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_millis(300);

impl Default for LeaseClock {
    /// [`DEFAULT_LEASE_DURATION`], [`DEFAULT_RENEW_DEADLINE`], [`DEFAULT_RETRY_PERIOD`]: the
    /// timings `ferrolb speaker` runs with unless its flags say otherwise.
    fn default() -> Self {
        LeaseClock {
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }
}

impl LeaseClock {
    /// Validated timings.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, LeaseClockError> {
        if lease_duration > MAX_LEASE_DURATION {
            return Err(LeaseClockError::LeaseTooLong(lease_duration));
        }
        if renew_deadline.saturating_add(MIN_FENCE_MARGIN) > lease_duration {
            return Err(LeaseClockError::DeadlineTooLong {
                lease_duration,
                renew_deadline,
            });
        }
        if retry_period.is_zero() || retry_period.saturating_mul(2) > renew_deadline {
            return Err(LeaseClockError::RetryTooLong {
                retry_period,
                renew_deadline,
            });
        }
        Ok(LeaseClock {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// How long a Lease is valid in everyone else's eyes after they observed a renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How long after the *start* of its last successful renewal a holder may keep
    /// announcing; at least [`MIN_FENCE_MARGIN`] less than the lease duration.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// Interval between renewals.
    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// The renewal interval while this node hears every member of a cluster of three or
    /// more ([`super::membership::Liveness::renews_quietly`]): the renew deadline less one
    /// retry period (900 ms by default). While renewals succeed its Lease stays fresh
    /// throughout, as at the retry period; the rules need the fresh Lease only once a member
    /// falls silent, and the renewals go back to the retry period then. A third of the Lease
    /// writes, and of the watch events every peer decodes.
    pub fn quiet_period(&self) -> Duration {
        self.renew_deadline
            .saturating_sub(self.retry_period)
            .max(self.retry_period)
    }

    /// When the next renewal attempt is due, the last one having been sent at
    /// `last_attempt` and having `succeeded` or not: a quiet period later after a success
    /// while `quiet` ([`LeaseClock::quiet_period`]), a retry period later otherwise (a
    /// failed attempt is always retried a retry period later).
    pub fn next_renewal(&self, last_attempt: Instant, succeeded: bool, quiet: bool) -> Instant {
        last_attempt
            + if quiet && succeeded {
                self.quiet_period()
            } else {
                self.retry_period
            }
    }

    /// May this node announce anything? `last_renew_started` is the instant the last
    /// **successful** renewal request was *sent* (not answered), on this node's monotonic
    /// clock; `None` before the first success.
    pub fn may_announce(&self, last_renew_started: Option<Instant>, now: Instant) -> bool {
        last_renew_started.is_some_and(|t| now.saturating_duration_since(t) < self.renew_deadline)
    }

    /// When this node must have withdrawn everything unless it renews again.
    pub fn fence_at(&self, last_renew_started: Instant) -> Instant {
        last_renew_started + self.renew_deadline
    }

    /// Is a peer alive? `observed_change_at` is when *this* node last saw the peer's Lease
    /// change (resourceVersion or renewTime), on this node's monotonic clock — never the
    /// timestamp written in the Lease (clocks of different nodes are not comparable).
    pub fn peer_alive(&self, observed_change_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(observed_change_at) < self.lease_duration
    }

    /// When a silent peer's Lease expires in this node's eyes.
    pub fn peer_expires_at(&self, observed_change_at: Instant) -> Instant {
        observed_change_at + self.lease_duration
    }

    /// A live holder that this node considers no longer entitled to an IP has this long to
    /// hand it over before this node claims it anyway.
    pub fn handover_timeout(&self) -> Duration {
        self.lease_duration
    }
}

/// The owner record of one IP as stored in the API (written only when ownership changes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerRecord {
    /// The node entitled to announce the IP.
    pub holder: String,
    /// Incremented by every change of holder; never decreases.
    pub epoch: u64,
}

/// What this node knows about the holder of an IP's owner record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// Its Lease is fresh ([`LeaseClock::peer_alive`]).
    Alive,
    /// Alive, but it has not handed the IP over within [`LeaseClock::handover_timeout`]
    /// of this node first deciding it should.
    Unresponsive,
    /// Its Lease expired in this node's eyes, was released, or does not exist.
    Gone,
}

/// What a speaker does about one IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimAction {
    /// Announce the IP (this node holds the record and is the desired owner).
    Announce,
    /// Do not announce; nothing to write.
    Idle,
    /// Write `record` with optimistic concurrency (create-if-absent, or replace with the
    /// resourceVersion that was read). Do not announce until a later evaluation returns
    /// [`ClaimAction::Announce`]; on conflict re-read and re-evaluate.
    Claim {
        /// The record to write.
        record: OwnerRecord,
    },
    /// Stop announcing first, then write `record` (hand over to the successor) or delete
    /// the record when `None` (nobody should announce). Conflicts are ignored: somebody
    /// else already changed the record.
    Release {
        /// The successor's record, or `None` to delete.
        record: Option<OwnerRecord>,
    },
    /// Another node holds the record and is alive: wait for it to hand over.
    WaitForHolder,
}

/// Decides what node `me` does about one IP.
///
/// * `desired`: the owner from [`super::elect_all`] (computed with `current` = the
///   record holders), `None` when nobody should announce.
/// * `record`: the IP's owner record as last read, if any; `holder`: the state of its holder.
/// * `may_announce`: [`LeaseClock::may_announce`] for this node.
pub fn decide_claim(
    me: &str,
    desired: Option<&str>,
    record: Option<&OwnerRecord>,
    holder: HolderState,
    may_announce: bool,
) -> ClaimAction {
    let epoch = record.map_or(0, |r| r.epoch);
    let i_hold = record.is_some_and(|r| r.holder == me);
    let i_am_desired = desired == Some(me);
    if !may_announce {
        // Fenced: never announce, never write (we could be partitioned from the API).
        return ClaimAction::Idle;
    }
    match (i_hold, i_am_desired) {
        (true, true) => ClaimAction::Announce,
        (true, false) => ClaimAction::Release {
            record: desired.map(|d| OwnerRecord {
                holder: d.to_string(),
                epoch: epoch + 1,
            }),
        },
        (false, false) => ClaimAction::Idle,
        (false, true) => match (record, holder) {
            (None, _) | (Some(_), HolderState::Gone | HolderState::Unresponsive) => {
                ClaimAction::Claim {
                    record: OwnerRecord {
                        holder: me.to_string(),
                        epoch: epoch + 1,
                    },
                }
            }
            (Some(_), HolderState::Alive) => ClaimAction::WaitForHolder,
        },
    }
}

/// The "may I announce?" gate of one speaker: its own Lease renewals, the verdict of its
/// liveness rule, and whether it has re-read the owner records since that verdict last
/// became positive. A speaker starting up, or regaining permission after losing it, may
/// hold a stale view saying it owns IPs that were taken over meanwhile; it must not
/// announce from that view until it has re-read (confirmed) the records.
///
/// The Lease task feeds [`Fence::renewed`]; each pass records the liveness rule's verdict
/// ([`Fence::permission`]: the Lease rule is [`Fence::lease_fresh`], the heartbeat rules
/// are [`super::membership::MeshRules::evaluate`]) and, once it has confirmed the records,
/// [`Fence::records_read`]. The speaker's planner runs this type, and the claim-protocol
/// model check (`tests/core/election_lease.rs`) drives the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    clock: LeaseClock,
    /// Send time of the last successful renewal of this node's own Lease.
    last_renew_started: Option<Instant>,
    /// Start of the current permission period (None: not permitted).
    permitted_since: Option<Instant>,
    /// The records were read after `permitted_since`.
    synced: bool,
}

impl Fence {
    /// A speaker that has not renewed yet (may not announce).
    pub fn new(clock: LeaseClock) -> Self {
        Fence {
            clock,
            last_renew_started: None,
            permitted_since: None,
            synced: false,
        }
    }

    /// The timings.
    pub fn clock(&self) -> &LeaseClock {
        &self.clock
    }

    /// Records a successful renewal of this node's Lease whose request was sent at
    /// `started` (a renewal completing late never moves the deadline backwards).
    pub fn renewed(&mut self, started: Instant) {
        if self.last_renew_started.is_none_or(|t| started > t) {
            self.last_renew_started = Some(started);
        }
    }

    /// Send time of the last successful renewal (None: never, or released).
    pub fn last_renewed(&self) -> Option<Instant> {
        self.last_renew_started
    }

    /// The Lease rule ([`LeaseClock::may_announce`]): the last successful renewal was sent
    /// less than the renew deadline before `now`.
    pub fn lease_fresh(&self, now: Instant) -> bool {
        self.clock.may_announce(self.last_renew_started, now)
    }

    /// The instant at which the Lease rule stops allowing announcements unless renewed
    /// (`None`: never renewed).
    pub fn deadline(&self) -> Option<Instant> {
        self.last_renew_started.map(|t| self.clock.fence_at(t))
    }

    /// Records the liveness rule's verdict at `now`. Losing permission means the records
    /// must be re-read; regaining it starts a new period whose records are not read yet.
    pub fn permission(&mut self, may: bool, now: Instant) {
        match (may, self.permitted_since) {
            (false, _) => {
                self.permitted_since = None;
                self.synced = false;
            }
            (true, None) => {
                self.permitted_since = Some(now);
                self.synced = false;
            }
            (true, Some(_)) => {}
        }
    }

    /// Records a complete read (or confirmation) of the owner records that started at
    /// `started`. It counts only if it started within the current permission period.
    pub fn records_read(&mut self, started: Instant) {
        if self.permitted_since.is_some_and(|a| started >= a) {
            self.synced = true;
        }
    }

    /// Permitted, but the records were not re-read since: confirm before announcing.
    pub fn needs_read(&self) -> bool {
        self.permitted_since.is_some() && !self.synced
    }

    /// Permitted, and the records were re-read since: announce from the view.
    pub fn may_announce(&self) -> bool {
        self.permitted_since.is_some() && self.synced
    }

    /// Releases the Lease (graceful shutdown): nothing may be announced any more.
    pub fn release(&mut self) {
        *self = Fence::new(self.clock);
    }
}
